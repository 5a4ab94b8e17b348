"""The GEMM engine: the systolic array with its buffers, controller and requantize unit.

It computes ``requantize(gemm(a, w, bias), mult, shift)`` of ``model.intops`` for any
M x K x N that fits its buffers: int8 a (M, K), int8 w (N, K), int32 bias (N,), and a
multiplier in [0, 2**31) and a shift in [1, 62] per output channel, giving int8 (M, N).

Host protocol (written once, host side, in ``sim/packing.py``; cocotb now, a DMA later):

1. while the engine is idle, write the ``a`` and ``p`` buffers through their load streams,
   one word per beat, in address order from 0 (the address counters restart at every
   ``start``; the layouts are below);
2. set the descriptor ``m``, ``k``, ``n`` and pulse ``start``; the engine latches them;
3. while it runs, stream the weights into ``w_in``: word ``u * R + r`` = w[j*C : j*C+C, i*R+r],
   C int8, for tile u = (i, j) in the schedule's tile order (n outer, k inner). Weights are
   never stored: each word goes straight into the PEs' idle weight bank, so ``w_in`` is
   ready only when the controller wants the next row (the first tile's R rows at once, the
   next tile's in the last R cycles of each period); a late word delays the next tile
   (``hw.cost.schedule`` predicts those stalls exactly for a deterministic source);
4. wait for ``done`` (``cycles`` then holds the edges from ``start`` to ``done``);
5. read M * ceil(N/C) words from the ``out`` stream (it honours back-pressure).

Buffers (Amaranth ``Memory``; word layouts, element 0 in the low bits):

* ``a``: word ``m * KT + i`` = a[m, i*R : i*R+R], R int8 (row-major A, K padded to KT*R);
* ``p``: word ``j`` = C lanes of (bias int32, mult uint31, shift uint6), 69 bits per lane;
* ``acc``: word ``m`` = C int32 partial sums of the current n tile (internal);
* ``out``: word ``m * NT + j`` = out[m, j*C : j*C+C], C int8 (row-major, N padded to NT*C).
* ``raw``: word ``m * NT + j`` = C int32 outputs, when ``raw`` was high at ``start``: the
  accumulators ``sat32(acc + bias)``, not requantized (attention scores), read from ``raw_out``;
* ``tbias``: word ``m * NT + j`` = C int32 biases of outputs (m, j*C .. j*C+C), used instead of
  ``p``'s per-channel bias when ``token_bias`` was high at ``start`` (the patch embedding,
  whose bias holds the position embedding, one per token), loaded through ``tb_in``.

Built for the layer engine (``hw.rtl.layer``), ``GemmConfig.a_external`` removes the ``a`` buffer:
the engine then reads word ``a_base + m * a_stride + i`` of an outside memory (``a_addr`` →
``a_data`` one cycle later), and ``raw_banks=2`` gives ``raw`` two banks (``raw_bank`` picks the
one a GEMM writes) and a second read port (``raw_rd_bank``, ``raw_rd_addr`` → ``raw_rd_data``),
so one bank is read while the next GEMM writes the other.

Overflow: partial sums are exact in int32 (K <= ``timing.MAX_K``); ``acc + bias`` is
formed in 33 bits and saturated to int32, then requantized with one rounding rule (round half
up) and saturated to int8, exactly as ``model.intops.gemm`` and ``requantize`` do.
"""

from dataclasses import dataclass

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.errors import QexitError
from hw.rtl import emit
from hw.rtl import timing
from hw.rtl.pe import PSUM
from hw.rtl.systolic import SystolicArray, delay

PARAM = data.StructLayout({"bias": signed(32), "mult": unsigned(31), "shift": unsigned(6)})
PARAM_BITS = PARAM.size     # 69


@dataclass(frozen=True)
class GemmConfig:
    """Array size and buffer capacities (largest M, K, N) of one generated engine."""
    rows: int
    cols: int
    max_m: int = 256
    max_k: int = 3072
    max_n: int = 3072
    max_raw_n: int = 256      # largest N of an int32-output GEMM (attention scores: N = tokens)
    max_bias_n: int = 768     # largest N of a GEMM with a per-token bias (the patch embedding: width)
    max_raw_words: int = 0    # > 0: the int32 buffer's words a bank (largest M x N tiles of an int32-output
                              # GEMM), when that is less than max_m x max_raw_n's tiles (a model whose
                              # class-score GEMM has one row and many columns)
    raw_banks: int = 1        # 2: the int32 buffer has two banks (``raw_bank`` picks the one a GEMM
                              # writes) and a second read port (``raw_rd_addr`` → ``raw_rd_data``,
                              # one cycle later), so one bank is read while the next GEMM writes the other
    a_external: int = 0       # > 0: no a buffer; the engine reads a from a memory of this many words
                              # outside it (``a_addr`` → ``a_data``, one cycle later), at
                              # a_base + m * a_stride + i (the layer engine's scratchpad)

    def __post_init__(self):
        timing.check_array(self.rows, self.cols)
        if self.raw_banks not in (1, 2):
            raise QexitError(f"raw_banks = {self.raw_banks} must be 1 or 2")
        if not isinstance(self.a_external, int) or self.a_external < 0:
            raise QexitError(f"a_external = {self.a_external} must be a word count >= 0")
        if not isinstance(self.max_raw_words, int) or self.max_raw_words < 0:
            raise QexitError(f"max_raw_words = {self.max_raw_words} must be a word count >= 0")
        for name in ("max_m", "max_k", "max_n", "max_raw_n", "max_bias_n"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise QexitError(f"buffer capacity {name} = {v} must be an integer >= 1")
        if self.max_k > timing.MAX_K:
            raise QexitError(f"max_k = {self.max_k} exceeds {timing.MAX_K}, where int32 partial "
                             f"sums could overflow; use a smaller --max-k")

    @property
    def name(self) -> str:
        return f"qexit_gemm_{self.rows}x{self.cols}"

    @property
    def kt_max(self) -> int:
        return timing.tile_counts(self.max_k, self.max_n, self.rows, self.cols)[0]

    @property
    def nt_max(self) -> int:
        return timing.tile_counts(self.max_k, self.max_n, self.rows, self.cols)[1]

    @property
    def a_words(self) -> int:
        return self.max_m * self.kt_max

    @property
    def raw_words(self) -> int:
        full = self.max_m * timing.tile_counts(1, self.max_raw_n, 1, self.cols)[1]
        return min(full, self.max_raw_words) if self.max_raw_words else full

    @property
    def bias_words(self) -> int:
        return self.max_m * timing.tile_counts(1, self.max_bias_n, 1, self.cols)[1]

    @property
    def out_words(self) -> int:
        return self.max_m * self.nt_max

    @property
    def buffers(self) -> dict[str, tuple[int, int]]:
        """Each on-chip buffer as (words, bits per word)."""
        own = {} if self.a_external else {"a": (self.a_words, 8 * self.rows)}
        return {**own, "p": (self.nt_max, PARAM_BITS * self.cols), "acc": (self.max_m, 32 * self.cols),
                "out": (self.out_words, 8 * self.cols), "raw": (self.raw_banks * self.raw_words, 32 * self.cols),
                "tbias": (self.bias_words, 32 * self.cols)}

    @property
    def a_addr_words(self) -> int:
        return self.a_external or self.a_words

    def check_shape(self, m: int, k: int, n: int, raw: bool = False, token_bias: bool = False) -> None:
        """Raise (before any simulation) if the shape is invalid or exceeds the buffers."""
        timing.check_shape(m, k, n)
        if m > self.max_m or k > self.max_k or n > self.max_n:
            raise QexitError(f"GEMM shape {m}x{k}x{n} exceeds the {self.rows}x{self.cols} engine's "
                             f"buffers (at most {self.max_m}x{self.max_k}x{self.max_n}); "
                             f"rebuild with larger --max-m/--max-k/--max-n")
        if raw and n > self.max_raw_n:
            raise QexitError(f"int32-output GEMM {m}x{k}x{n}: N = {n} exceeds the int32 output buffer "
                             f"(at most {self.max_raw_n}); rebuild with a larger --max-raw-n")
        words = m * timing.tile_counts(1, n, 1, self.cols)[1]
        if raw and words > self.raw_words:
            raise QexitError(f"int32-output GEMM {m}x{k}x{n} needs {words} words of the int32 output buffer, "
                             f"which holds {self.raw_words}; rebuild with a larger max_raw_words")
        if token_bias and n > self.max_bias_n:
            raise QexitError(f"per-token-bias GEMM {m}x{k}x{n}: N = {n} exceeds the bias buffer "
                             f"(at most {self.max_bias_n}); rebuild with a larger --max-bias-n")


def clamp(value, lo: int, hi: int):
    return Mux(value > hi, hi, Mux(value < lo, lo, value))


def round_shift_saturate(stage, value, shift, bits: int = 64, out_bits: int = 8):
    """``sat8(round_shift(value, shift))`` (``intops.round_shift``, then saturation to ``out_bits``)
    in four pipeline stages; ``stage(value, shape, name)`` registers one, ``shift`` is aligned with
    ``value``: the rounding half 2**(shift-1) added (0 for shift 0), the arithmetic shift by the
    shift's multiple of 8, the shift by the rest (0..7), the saturation. ``value`` has at most
    ``bits`` - 2 bits."""
    half = (Const(1, bits - 2) << (shift - 1)[:6])[:bits - 2]
    rounded = stage(value + half, signed(bits), "rounded")
    shift_r = stage(shift, 6, "shift_r")
    coarse = stage(rounded >> Cat(Const(0, 3), shift_r[3:]), signed(bits), "coarse")
    fine = stage(coarse >> stage(shift_r[:3], 3, "shift_f"), signed(bits), "fine")
    return stage(clamp(fine, -2 ** (out_bits - 1), 2 ** (out_bits - 1) - 1), signed(out_bits), "rounded_y")


ROUND_SHIFT_STAGES = 4      # round_shift_saturate's


def pipelined_product(stage, a, b, piece: int, name: str, shape=None):
    """``a * b`` as partial products of pieces at most ``piece`` bits wide (the low pieces unsigned,
    a signed operand's top piece signed), in 1 + ceil(log2(products)) pipeline stages: the
    products, then one stage per level of a pairwise adder tree. ``stage(value, shape, name)``
    registers one; ``shape``: the result's (default: as wide as the sum makes it). With
    ``piece`` <= 17 a product of two full pieces is one MULT18X18D, and each stage is one
    multiply or one carry chain."""
    def pieces(v):
        n = -(-len(v) // piece)
        out = [v.as_unsigned()[i * piece:(i + 1) * piece] for i in range(n)]
        if v.shape().signed:
            out[-1] = out[-1].as_signed()
        return out
    terms = [(stage(x * y, (x * y).shape(), f"{name}_pp{i}{j}"), piece * (i + j))
             for i, x in enumerate(pieces(a)) for j, y in enumerate(pieces(b))]
    level = 0
    while len(terms) > 1:
        nxt = []
        for k in range(0, len(terms), 2):
            pair = sorted(terms[k:k + 2], key=lambda t: t[1])
            low, at = pair[0]
            value = low + (pair[1][0] << (pair[1][1] - at)) if len(pair) == 2 else low
            last = len(terms) <= 2
            nxt.append((stage(value, shape if last and shape is not None else value.shape(), f"{name}_sum{level}_{k // 2}"),
                        at))
        terms, level = nxt, level + 1
    value, at = terms[0]
    return value << at if at else value


def product_stages(a_bits: int, b_bits: int, piece: int) -> int:
    """The stages ``pipelined_product`` takes for operands of these widths."""
    n = -(-a_bits // piece) * -(-b_bits // piece)
    return 1 + (n - 1).bit_length()


class Requantizer(wiring.Component):
    """``sat8((sat32(acc + bias) * mult + 2**(shift-1)) >> shift)`` in eight pipeline stages, each
    short enough for the ECP5's fabric (one 16x16 multiply, or one carry chain, or a few LUT levels):

    1. t = sat32(acc + bias) (33-bit add, saturate);
    2. four 16 x 16 partial products of t = (t_hi, t_lo) and mult = (m_hi, m_lo), one DSP each;
    3. two partial sums, t_lo * mult and t_hi * mult, each one add;
    4. the 63-bit product t * mult, one add;
    5. the rounding half 2**(shift-1) added (0 for shift 0);
    6. the arithmetic shift by the shift's multiple of 8;
    7. the shift by the rest (0..7);
    8. saturation to int8.

    All inputs are sampled in the same cycle; ``y`` is valid ``LATENCY`` cycles later.
    """
    LATENCY = 8

    acc: In(signed(32))
    bias: In(signed(32))
    mult: In(unsigned(intops.MULT_BITS))
    shift: In(unsigned(6))
    en: In(1, init=1)         # all stages advance when high (a stalled stream holds them)
    y: Out(signed(8))
    total: Out(signed(32))    # stage 1: sat32(acc + bias), one cycle after the inputs

    def elaborate(self, platform):
        m = Module()
        stages = []

        def reg(value, shape, name):
            r = Signal(shape, name=name)
            stages.append(r.eq(value))
            return r

        total = self.total
        stages.append(total.eq(clamp(self.acc + self.bias, intops.INT32_MIN, intops.INT32_MAX)))
        mult, shift1 = reg(self.mult, unsigned(intops.MULT_BITS), "mult1"), reg(self.shift, 6, "shift1")
        product = pipelined_product(reg, total, mult, 16, "tm", signed(64))      # |t * mult| < 2**62
        shift4 = reg(reg(reg(shift1, 6, "shift2"), 6, "shift3"), 6, "shift4")
        m.d.comb += self.y.eq(round_shift_saturate(reg, product, shift4))
        with m.If(self.en):
            m.d.sync += stages
        return m


# The row unit is the registered partial sum, the requantizer and the output-buffer write; the cycle
# model relies on it.
assert 1 + Requantizer.LATENCY + 1 == timing.ROW_UNIT_LATENCY


def _token_layout(cfg: GemmConfig) -> data.StructLayout:
    """What travels beside an activation row: where its results go and what to do with them."""
    return data.StructLayout({
        "valid": 1,
        "m": range(cfg.max_m),             # accumulator word
        "out": range(cfg.out_words),       # output word
        "j": range(cfg.nt_max),            # n tile (parameter word)
        "first": 1,                        # first k tile: start from zero
        "last": 1,                         # last k tile: bias, requantize, write out
        "final": 1,                        # last row of the GEMM
    })


def engine_ports(cfg: GemmConfig) -> dict:
    """The engine's ports (its ``wiring`` signature members)."""
    rows, cols = cfg.rows, cfg.cols
    a_port = {"a_addr": Out(range(cfg.a_external)), "a_data": In(unsigned(8 * rows)),
              "a_base": In(range(cfg.a_external)), "a_stride": In(range(cfg.a_external + 1))} if cfg.a_external \
        else {"a_in": In(stream.Signature(unsigned(8 * rows)))}
    raw_port = {"raw_bank": In(1), "raw_rd_bank": In(1), "raw_rd_addr": In(range(cfg.raw_words)),
                "raw_rd_data": Out(unsigned(32 * cols))} if cfg.raw_banks == 2 else {}
    return {
        **a_port, **raw_port,
        "w_in": In(stream.Signature(unsigned(8 * cols))),
        "p_in": In(stream.Signature(unsigned(PARAM_BITS * cols))),
        "tb_in": In(stream.Signature(unsigned(32 * cols))),
        "out": Out(stream.Signature(unsigned(8 * cols))),
        "raw_out": Out(stream.Signature(unsigned(32 * cols))),
        "m": In(range(cfg.max_m + 1)),
        "k": In(range(cfg.max_k + 1)),
        "n": In(range(cfg.max_n + 1)),
        "raw": In(1),             # int32 output: sat32(acc + bias) on raw_out, no requantization
        "token_bias": In(1),      # the bias of output (m, n) comes from the tbias buffer, not p
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "cycles": Out(32),
    }


class GemmEngine(wiring.Component):
    """Buffers -> controller -> systolic array -> row unit -> output buffer (see the module
    docstring for the host protocol and ``hw.cost.schedule`` for the timeline).

    The controller walks the schedule: FILL loads tile 0's weights as they arrive, STREAM
    issues one activation row per cycle (with a token saying where its sums go) and takes the
    next tile's weight rows from ``w_in`` from the last R cycles of each period on, WAIT holds
    the next tile back while its weights are late, DRAIN waits for the last row's outputs.
    The row unit adds each row of C column sums to the accumulator buffer (first k tile:
    to zero) or, on the last k tile, requantizes it and writes the output buffer.
    """

    def __init__(self, cfg: GemmConfig):
        self.cfg = cfg
        super().__init__(engine_ports(cfg))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, C = cfg.rows, cfg.cols
        m.submodules.array = array = SystolicArray(R, C)

        # ---------------------------------------------------------------- buffers
        m.submodules.p_buf = p_buf = memory.Memory(shape=unsigned(PARAM_BITS * C), depth=cfg.nt_max, init=[])
        m.submodules.acc_buf = acc_buf = memory.Memory(shape=unsigned(32 * C), depth=cfg.max_m, init=[])
        m.submodules.out_buf = out_buf = memory.Memory(shape=unsigned(8 * C), depth=cfg.out_words, init=[])
        p_wr, p_rd = p_buf.write_port(), p_buf.read_port()
        m.submodules.tb_buf = tb_buf = memory.Memory(shape=unsigned(32 * C), depth=cfg.bias_words, init=[])
        tb_wr, tb_rd = tb_buf.write_port(), tb_buf.read_port()
        acc_wr = acc_buf.write_port()
        acc_rd = acc_buf.read_port(transparent_for=(acc_wr,))
        out_wr, out_rd = out_buf.write_port(), out_buf.read_port()
        m.submodules.raw_buf = raw_buf = memory.Memory(shape=unsigned(32 * C), depth=cfg.raw_banks * cfg.raw_words,
                                                       init=[])
        raw_wr, raw_rd = raw_buf.write_port(), raw_buf.read_port()
        raw_base = Signal(range(cfg.raw_banks * cfg.raw_words))       # the bank this GEMM writes
        if cfg.raw_banks == 2:
            raw_rd2 = raw_buf.read_port()
            m.d.comb += [raw_rd2.addr.eq(Mux(self.raw_rd_bank, cfg.raw_words, 0) + self.raw_rd_addr),
                         self.raw_rd_data.eq(raw_rd2.data)]

        # ---------------------------------------------------------------- descriptor
        m_len = Signal(range(cfg.max_m + 1))
        kt = Signal(range(cfg.kt_max + 1))
        nt = Signal(range(cfg.nt_max + 1))
        per = Signal(range(max(cfg.max_m, R) + 1))        # timing.period
        load_off = Signal.like(per)                        # timing.load_offset
        unload_total = Signal(range(cfg.out_words + 1))
        raw = Signal()                                     # this GEMM writes int32 outputs
        token_bias = Signal()                              # ... and takes a per-token bias
        idle = Signal()
        start = Signal()
        m.d.comb += start.eq(self.start & idle)
        final_written = Signal()

        # ---------------------------------------------------------------- load streams
        loads = [(self.p_in, p_wr, cfg.nt_max), (self.tb_in, tb_wr, cfg.bias_words)]
        if not cfg.a_external:
            m.submodules.a_buf = a_buf = memory.Memory(shape=unsigned(8 * R), depth=cfg.a_words, init=[])
            a_wr, a_rd = a_buf.write_port(), a_buf.read_port()
            loads.append((self.a_in, a_wr, cfg.a_words))
        for port, wr, depth in loads:
            ptr = Signal(range(depth + 1), name=f"{wr.data.name}_ptr")
            m.d.comb += [port.ready.eq(idle), wr.en.eq(port.valid & idle),
                         wr.addr.eq(ptr), wr.data.eq(port.payload)]
            with m.If(port.valid & idle):
                m.d.sync += ptr.eq(ptr + 1)
            with m.If(start):
                m.d.sync += ptr.eq(0)

        # ---------------------------------------------------------------- controller
        wrow = Signal(range(R + 1))          # weight rows of the tile being loaded, so far
        p = Signal.like(per)                 # position in the current period
        i = Signal(range(cfg.kt_max))        # k tile
        j = Signal(range(cfg.nt_max))        # n tile
        bank = Signal()                      # weight bank of the current tile (u % 2)
        a_ptr = Signal(range(cfg.a_addr_words))  # a_base + m * a_stride + i
        a_base = Signal(range(cfg.a_addr_words))
        a_stride = Signal(range(cfg.a_addr_words + 1))
        out_ptr = Signal(range(cfg.out_words))   # m * nt + j
        token = Signal(_token_layout(cfg))
        w_want = Signal()                    # the controller takes a weight row this cycle if one is there
        w_issue = Signal()                   # a weight row arrives from w_in this cycle ...
        w_issue_bank = Signal()              # ... for this bank ...
        w_issue_row = Signal.like(array.load_row)   # ... and this array row
        m.d.comb += [self.w_in.ready.eq(w_want), w_issue.eq(w_want & self.w_in.valid),
                     w_issue_row.eq(wrow)]
        with m.If(w_issue):
            m.d.sync += wrow.eq(wrow + 1)
        rows_done = Signal()                 # the tile being loaded has all R rows (this cycle's included)
        m.d.comb += rows_done.eq((wrow == R) | (w_issue & (wrow == R - 1)))
        last_k = Signal()
        last_tile = Signal()
        m.d.comb += [last_k.eq(i == kt - 1), last_tile.eq(last_k & (j == nt - 1))]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    kt_new = (self.k + R - 1) // R
                    nt_new = (self.n + C - 1) // C
                    per_new = Mux(self.m > R, self.m, R)          # timing.period
                    m.d.sync += [m_len.eq(self.m), kt.eq(kt_new), nt.eq(nt_new), per.eq(per_new),
                                 load_off.eq(per_new - R),            # timing.load_offset
                                 unload_total.eq(self.m * nt_new), wrow.eq(0), raw.eq(self.raw),
                                 a_base.eq(self.a_base if cfg.a_external else 0),
                                 raw_base.eq(Mux(self.raw_bank, cfg.raw_words, 0) if cfg.raw_banks == 2 else 0),
                                 a_stride.eq(self.a_stride if cfg.a_external else kt_new),
                                 token_bias.eq(self.token_bias)]
                    with m.If((self.m == 0) | (self.k == 0) | (self.n == 0)):
                        m.d.sync += self.done.eq(1)        # nothing to do
                    with m.Else():
                        m.d.sync += self.done.eq(0)
                        m.next = "FILL"

            def next_tile():                       # k inner, n outer (timing.tile_order)
                m.d.sync += [p.eq(0), bank.eq(~bank), wrow.eq(0)]
                with m.If(last_k):
                    m.d.sync += [i.eq(0), j.eq(j + 1), a_ptr.eq(a_base), out_ptr.eq(j + 1)]
                with m.Else():
                    m.d.sync += [i.eq(i + 1), a_ptr.eq(a_base + i + 1), out_ptr.eq(j)]

            with m.State("FILL"):                  # tile 0's weight rows into bank 0, as they arrive
                m.d.comb += [w_want.eq(1), w_issue_bank.eq(0)]
                with m.If(rows_done):
                    m.d.sync += [p.eq(0), i.eq(0), j.eq(0), bank.eq(0), a_ptr.eq(a_base), out_ptr.eq(0),
                                 wrow.eq(0)]
                    m.next = "STREAM"

            with m.State("STREAM"):
                reading = p < m_len
                m.d.comb += [
                    token.valid.eq(reading), token.m.eq(p), token.out.eq(out_ptr), token.j.eq(j),
                    token.first.eq(i == 0), token.last.eq(last_k),
                    token.final.eq(last_tile & (p == m_len - 1)),
                    w_want.eq((p >= load_off) & ~last_tile & (wrow < R)), w_issue_bank.eq(~bank),
                ]
                m.d.sync += p.eq(p + 1)
                with m.If(reading):
                    m.d.sync += [a_ptr.eq(a_ptr + a_stride), out_ptr.eq(out_ptr + nt)]
                with m.If(last_tile & (p == m_len - 1)):
                    m.next = "DRAIN"
                with m.Elif(p == per - 1):
                    with m.If(rows_done):
                        next_tile()
                    with m.Else():
                        m.next = "WAIT"              # the next tile's weights are late: stall

            with m.State("WAIT"):                  # no activation rows until the weights are in
                m.d.comb += [w_want.eq(wrow < R), w_issue_bank.eq(~bank)]
                with m.If(rows_done):
                    next_tile()
                    m.next = "STREAM"

            with m.State("DRAIN"):
                with m.If(final_written):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"

        # Outside the FSM so that it is a continuous assignment: Icarus never evaluates an
        # `always @*` block whose inputs do not change, and the state stays IDLE through reset.
        m.d.comb += [idle.eq(fsm.ongoing("IDLE")), self.busy.eq(~idle)]
        with m.If(~idle):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(start):
            m.d.sync += self.cycles.eq(0)

        # ---------------------------------------------------------------- buffers -> array
        if cfg.a_external:
            m.d.comb += self.a_addr.eq(a_ptr)
            a_data = self.a_data
        else:
            m.d.comb += a_rd.addr.eq(a_ptr)
            a_data = a_rd.data
        w_data = Signal(8 * C)               # registered like a buffer read (BUFFER_READ_LATENCY)
        m.d.sync += w_data.eq(self.w_in.payload)
        m.d.comb += [
            array.a.eq(a_data),
            array.sel.eq(delay(m, bank, timing.BUFFER_READ_LATENCY, "sel")),
            array.load.eq(delay(m, w_issue, timing.BUFFER_READ_LATENCY, "load")),
            array.load_bank.eq(delay(m, w_issue_bank, timing.BUFFER_READ_LATENCY, "load_bank")),
            array.load_row.eq(delay(m, w_issue_row, timing.BUFFER_READ_LATENCY, "load_row")),
            array.load_weights.eq(w_data),
        ]

        # ---------------------------------------------------------------- row unit
        # The accumulator word is read two cycles before the array's sums reach the row unit and
        # registered (a DP16KD's output is slow unregistered); the word the row one cycle before
        # wrote (the same m: a GEMM of one row) is forwarded instead. The new partial sum is
        # registered before the requantizer, whose parameters are read and registered beside it.
        tok_acc = delay(m, token, timing.BUFFER_READ_LATENCY + array.latency - 2, "tok_acc")
        tok_rd = delay(m, tok_acc, 1, "tok")
        tok0 = delay(m, tok_rd, 1, "tok_sum")          # the array's sums are on psum now
        tok_prev = delay(m, tok0, 1, "tok_prev")
        m.d.comb += [acc_rd.addr.eq(tok_acc.m), p_rd.addr.eq(tok_rd.j), tb_rd.addr.eq(tok_rd.out)]
        acc_old = Signal(data.ArrayLayout(PSUM, C))
        params = Signal(data.ArrayLayout(PARAM, C))
        tbias = Signal(data.ArrayLayout(signed(32), C))
        m.d.sync += [acc_old.eq(acc_rd.data), params.eq(p_rd.data), tbias.eq(tb_rd.data)]
        forward = tok_prev.valid & ~tok_prev.last & (tok_prev.m == tok0.m)
        acc_new = Signal(data.ArrayLayout(PSUM, C))
        acc_sum = Signal(data.ArrayLayout(PSUM, C))     # acc_new, a cycle later: into the requantizer
        m.d.sync += acc_sum.eq(acc_new)
        ys, totals = [], []
        for c in range(C):
            m.d.comb += acc_new[c].eq(Mux(tok0.first, 0, Mux(forward, acc_sum[c], acc_old[c])) + array.psum[c])
            rq = Requantizer()
            m.submodules[f"requant_{c}"] = rq
            m.d.comb += [rq.acc.eq(acc_sum[c]), rq.bias.eq(Mux(token_bias, tbias[c], params[c].bias)),
                         rq.mult.eq(params[c].mult), rq.shift.eq(params[c].shift)]
            ys.append(rq.y)
            totals.append(rq.total)
        m.d.comb += [acc_wr.en.eq(tok0.valid & ~tok0.last), acc_wr.addr.eq(tok0.m),
                     acc_wr.data.eq(acc_new)]
        # int32 mode: the Requantizer's first stage, sat32(acc + bias), goes to the raw buffer a
        # cycle later; ``done`` still follows the int8 path, so both modes take the same cycles.
        tok_raw = delay(m, tok0, 2, "tok_raw")
        m.d.comb += [raw_wr.en.eq(tok_raw.valid & tok_raw.last & raw), raw_wr.addr.eq(raw_base + tok_raw.out),
                     raw_wr.data.eq(Cat(*totals))]
        tok_out = delay(m, tok0, Requantizer.LATENCY + 1, "tok_out")
        m.d.comb += [out_wr.en.eq(tok_out.valid & tok_out.last & ~raw), out_wr.addr.eq(tok_out.out),
                     out_wr.data.eq(Cat(*ys)),
                     final_written.eq(tok_out.valid & tok_out.final)]

        # ---------------------------------------------------------------- unload stream
        # M * NT words from ``out`` (int8) or, after an int32 GEMM, from ``raw_out``.
        unload_ptr = Signal(range(cfg.out_words + 1))
        out_valid = Signal()
        advance = ~out_valid | Mux(raw, self.raw_out.ready, self.out.ready)
        m.d.comb += [out_rd.addr.eq(unload_ptr), out_rd.en.eq(advance),
                     raw_rd.addr.eq(raw_base + unload_ptr), raw_rd.en.eq(advance),
                     self.out.valid.eq(out_valid & ~raw), self.out.payload.eq(out_rd.data),
                     self.raw_out.valid.eq(out_valid & raw), self.raw_out.payload.eq(raw_rd.data)]
        with m.If(advance):
            with m.If(self.done & idle & (unload_ptr < unload_total)):
                m.d.sync += [unload_ptr.eq(unload_ptr + 1), out_valid.eq(1)]
            with m.Else():
                m.d.sync += out_valid.eq(0)
        with m.If(start):
            m.d.sync += [unload_ptr.eq(0), out_valid.eq(0)]
        return m


# --------------------------------------------------------------------------- Verilog

def to_verilog(cfg: GemmConfig) -> str:
    """The engine as one Verilog file, top module ``cfg.name``."""
    return emit.to_verilog(GemmEngine(cfg), cfg.name)
