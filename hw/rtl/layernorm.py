"""The LayerNorm unit: ``model.intops.layernorm`` over a token row, ``lanes`` int8 values per beat.

Per row of D values (D = the ``d`` port, at most ``max_d``, a multiple of ``lanes``; W = D/lanes
beats):

1. **LOAD** (W cycles): each beat goes into the row buffer while S = sum(x) (20 bits signed)
   and Q = sum(x**2) (27 bits) accumulate: the one-pass form of ``intops.layernorm``;
2. **VAR** (``VAR_CYCLES`` = 5): the statistics' pipeline drains and n = ((D*Q - S**2) <<
   2*LN_SQRT_BITS) + eps forms, var_num < 2**38, n < 2**55. The statistics run a stage a
   register: the beat's lanes (zero when no beat is taken), the lanes' sum and sum of squares,
   S and Q, D*Q and S**2, their difference;
3. **SQRT** (28 cycles): den = isqrt(n) (``intops.isqrt``: the exact floor) by the remainder
   form of the binary digit recurrence, one root bit a cycle from bit 27 down, with no
   multiplier: with d = 4**bit, if rem >= root + d then rem -= root + d and root = root/2 + d,
   else root = root/2 (root and d share no bit, so root + d is root | d);
4. **DIV** (41 cycles): r = floor(2**40 / max(den, 1)) by restoring division, one quotient
   bit a cycle;
5. **OUT** (W cycles plus ``LATENCY`` when nothing stalls): for each stored x_i (``lanes`` at a
   time), with the channel's g_i, b_i from the parameter buffer: c = D*x_i - S (21 bits), y =
   round_shift(c*r, 20) (|y| < 2**20), out = sat8(round_shift(g*y + b, shift)) (g*y + b < 2**49),
   streamed out under the shared stall rule (``hw.rtl.units.Pipeline``), a stage each: the
   buffer read, c, c*r, y, g*y, g*y + b, then ``hw.rtl.gemm.round_shift_saturate`` (4 stages).

Then the next row is accepted. The parameters (g int17, b int48 per channel, ``intops``'
``check_layernorm_params`` ranges) are written through ``p_in``, ``lanes`` channels per beat in
channel order; its pointer wraps after W beats, so load exactly W words per set.
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.gemm import ROUND_SHIFT_STAGES, pipelined_product, product_stages, round_shift_saturate
from hw.rtl.units import Pipeline, check_lanes
from model import intops
from model.errors import QexitError

LN_PARAM = data.StructLayout({"g": signed(intops.GAMMA_BITS + 2), "b": signed(intops.LN_B_BITS + 1)})
ROOT_BITS = intops.ISQRT_BITS // 2                     # 28
RECIP_BITS = intops.LN_RECIP_BITS                      # 40
Y_SHIFT = intops.LN_RECIP_BITS - intops.LN_SQRT_BITS - intops.LN_FRAC_BITS    # 20


VAR_CYCLES = 5                                         # LOAD's last beat to the square root


class DigitRoot:
    """floor(sqrt(n)) of n < 2**ISQRT_BITS, one root bit a cycle from bit ROOT_BITS - 1 down, by the
    remainder form of the binary digit recurrence, with no multiplier: with d = 4**bit, if
    rem >= root + d then rem -= root + d and root = root/2 + d, else root = root/2 (root and d
    share no bit, so root + d is root | d). ``step(m, n, first)`` gives one cycle's statements,
    starting from ``n`` where ``first`` holds; after ROOT_BITS steps ``root`` is the floor. The
    LayerNorm unit and the exit head both run it."""

    TOP = 1 << (2 * (ROOT_BITS - 1))

    def __init__(self, name: str):
        w = intops.ISQRT_BITS
        self.rem, self.c, self.d = (Signal(unsigned(w), name=f"{name}_{k}") for k in ("rem", "c", "d"))
        self.diff = Signal(signed(w + 1), name=f"{name}_diff")
        self.root = self.c[:ROOT_BITS]

    def step(self, m, n, first) -> list:
        rem, c, d = Mux(first, n, self.rem), Mux(first, 0, self.c), Mux(first, self.TOP, self.d)
        m.d.comb += self.diff.eq(rem - (c | d))
        ge = self.diff >= 0
        return [self.rem.eq(Mux(ge, self.diff, rem)), self.c.eq((c >> 1) | Mux(ge, d, 0)), self.d.eq(d >> 2)]


def row_cycles(d: int, lanes: int = 1) -> int:
    """Cycles from a row's first input beat to its last output beat when nothing stalls."""
    w = -(-d // lanes)
    return w + VAR_CYCLES + ROOT_BITS + (RECIP_BITS + 1) + w + LayerNormUnit.LATENCY


PIECE = 17                                              # c*r and g*y: 17-bit pieces, one MULT18X18D a full pair
CR_STAGES = product_stages(21, RECIP_BITS + 1, PIECE)   # c (21 bits) times r (41): 6 products, 4 stages
GY_STAGES = product_stages(intops.GAMMA_BITS + 2, 21, PIECE)   # g (17 bits) times y (21): 2 products, 2 stages


class LayerNormUnit(wiring.Component):
    # OUT: buffer read, c, c*r, y, g*y, g*y + b, round + shift + shift + saturate
    LATENCY = 2 + CR_STAGES + 1 + GY_STAGES + 1 + ROUND_SHIFT_STAGES

    def __init__(self, max_d: int = 1024, lanes: int = 1):
        if not isinstance(max_d, int) or not 1 <= max_d <= intops.LN_MAX_D:
            raise QexitError(f"LayerNorm max_d = {max_d} must be in [1, {intops.LN_MAX_D}]")
        check_lanes(lanes)
        self.max_d, self.lanes = max_d, lanes
        super().__init__({
            "inp": In(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "out": Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "p_in": In(stream.Signature(data.ArrayLayout(LN_PARAM, lanes))),
            "d": In(range(max_d + 1)),                 # a multiple of lanes
            "shift": In(unsigned(6)),                  # intops.LN_SHIFT: [1, 52]
            "eps": In(unsigned(intops.LN_EPS_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        max_d, L = self.max_d, self.lanes
        words = -(-max_d // L)
        m.submodules.rows = rows = memory.Memory(shape=data.ArrayLayout(signed(8), L), depth=words, init=[])
        m.submodules.params = params = memory.Memory(shape=data.ArrayLayout(LN_PARAM, L), depth=words, init=[])
        row_wr, row_rd = rows.write_port(), rows.read_port()
        par_wr, par_rd = params.write_port(), params.read_port()

        # ------------------------------------------------------------ parameters
        p_ptr = Signal(range(words))
        p_elem = Signal(range(max_d + L + 1))
        m.d.comb += [self.p_in.ready.eq(1), par_wr.en.eq(self.p_in.valid), par_wr.addr.eq(p_ptr),
                     par_wr.data.eq(self.p_in.payload)]
        with m.If(self.p_in.valid):
            with m.If(p_elem + L >= self.d):
                m.d.sync += [p_ptr.eq(0), p_elem.eq(0)]
            with m.Else():
                m.d.sync += [p_ptr.eq(p_ptr + 1), p_elem.eq(p_elem + L)]

        # ------------------------------------------------------------ row statistics
        cnt = Signal(range(words + 1))                 # words loaded
        cnt_e = Signal(range(max_d + L + 1))           # values loaded
        s = Signal(signed(20))
        q = Signal(unsigned(27))
        bit = Signal(range(ROOT_BITS))
        sq_n = Signal(unsigned(intops.ISQRT_BITS))         # the square root's input
        sq = DigitRoot("sq")
        root = sq.root
        rem = Signal(unsigned(ROOT_BITS + 1))
        quot = Signal(unsigned(RECIP_BITS + 1))
        k = Signal(range(RECIP_BITS + 1))
        den = Signal(unsigned(ROOT_BITS))
        sent = Signal(range(max_d + L + 1))            # values sent
        issue = SimpleNamespace(valid=Signal(name="issue_valid"), ready=Signal(name="issue_ready"))
        i = Signal(range(words + 1))                   # words issued
        i_e = Signal(range(max_d + L + 1))             # values issued

        rem2 = Signal(unsigned(ROOT_BITS + 1))
        m.d.comb += rem2.eq((rem << 1) | (k == RECIP_BITS))

        # the row statistics, a stage a register (VAR drains them)
        taking = Signal()
        xr = [Signal(signed(8), name=f"x{c}") for c in range(L)]
        m.d.sync += [xr[c].eq(Mux(taking, self.inp.payload[c], 0)) for c in range(L)]
        lane_sum, lane_sq = Signal(signed(8 + L.bit_length())), Signal(unsigned(15 + L.bit_length()))
        m.d.sync += [lane_sum.eq(sum(xr)), lane_sq.eq(sum(x * x for x in xr)),
                     s.eq(s + lane_sum), q.eq(q + lane_sq)]
        dq, ss = Signal(unsigned(38)), Signal(unsigned(40))
        var_num = Signal(unsigned(38))
        m.d.sync += [dq.eq(self.d * q), ss.eq(s * s), var_num.eq(dq - ss)]
        var_step = Signal(range(VAR_CYCLES))

        with m.FSM():
            with m.State("LOAD"):
                x = self.inp.payload
                m.d.comb += [self.inp.ready.eq(1), row_wr.en.eq(self.inp.valid), row_wr.addr.eq(cnt),
                             row_wr.data.eq(x), taking.eq(self.inp.valid)]
                with m.If(self.inp.valid):
                    m.d.sync += [cnt.eq(cnt + 1), cnt_e.eq(cnt_e + L)]
                    with m.If(cnt_e + L >= self.d):
                        m.d.sync += var_step.eq(0)
                        m.next = "VAR"
            with m.State("VAR"):
                m.d.sync += var_step.eq(var_step + 1)
                with m.If(var_step == VAR_CYCLES - 1):
                    m.d.sync += [sq_n.eq((var_num << (2 * intops.LN_SQRT_BITS)) + self.eps), bit.eq(ROOT_BITS - 1)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                m.d.sync += sq.step(m, sq_n, bit == ROOT_BITS - 1) + [bit.eq(bit - 1)]
                with m.If(bit == 0):
                    m.d.sync += [rem.eq(0), quot.eq(0), k.eq(RECIP_BITS)]
                    m.next = "DIV"
            with m.State("DIV"):
                m.d.comb += den.eq(Mux(root == 0, 1, root))
                ge = rem2 >= den
                m.d.sync += [rem.eq(Mux(ge, rem2 - den, rem2)), quot.eq((quot << 1) | ge), k.eq(k - 1)]
                with m.If(k == 0):
                    m.d.sync += [i.eq(0), i_e.eq(0), sent.eq(0)]
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += issue.valid.eq(i_e < self.d)
                with m.If(issue.valid & issue.ready):
                    m.d.sync += [i.eq(i + 1), i_e.eq(i_e + L)]
                with m.If(self.out.valid & self.out.ready):
                    m.d.sync += sent.eq(sent + L)
                    with m.If(sent + L >= self.d):
                        m.d.sync += [cnt.eq(0), cnt_e.eq(0), s.eq(0), q.eq(0)]
                        m.next = "LOAD"

        # ------------------------------------------------------------ OUT pipeline
        pipe = Pipeline(m, issue, self.out, self.LATENCY)
        m.d.comb += [row_rd.addr.eq(i), row_rd.en.eq(pipe.advance),
                     par_rd.addr.eq(i), par_rd.en.eq(pipe.advance)]
        for lane in range(L):
            c = pipe.stage(self.d * row_rd.data[lane] - s, signed(21), f"c{lane}")
            g, b = par_rd.data[lane].g, par_rd.data[lane].b
            for j in range(CR_STAGES + 2):      # beside c, c*r and y
                g = pipe.stage(g, signed(intops.GAMMA_BITS + 2), f"g{j}_{lane}")
            for j in range(CR_STAGES + GY_STAGES + 2):
                b = pipe.stage(b, signed(intops.LN_B_BITS + 1), f"b{j}_{lane}")
            stage = lambda v, shape, name: pipe.stage(v, shape, f"{name}{lane}")      # noqa: E731
            prod = pipelined_product(stage, c, quot, PIECE, "cr", signed(62))
            y = pipe.stage((prod + (1 << (Y_SHIFT - 1))) >> Y_SHIFT, signed(21), f"y{lane}")
            gy = pipelined_product(stage, g, y, PIECE, "gy", signed(38))
            total = pipe.stage(gy + b, signed(50), f"total{lane}")       # |g*y| < 2**37, |b| < 2**47
            out = round_shift_saturate(lambda v, shape, name: pipe.stage(v, shape, f"{name}{lane}"), total, self.shift)
            m.d.comb += self.out.payload[lane].eq(out)
        return m
