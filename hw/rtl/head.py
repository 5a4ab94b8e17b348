"""The exit head as RTL: one candidate layer's fixed-point head and gate, from
the engine's int8 tokens to the comparator's input stream.

``ExitHead`` computes ``model.exits.fixed.FixedHead.layer`` for one layer, with that layer's
constants built in. Its three dense layers (``fc1``, ``fc2`` and the class scores) are built
one of two ways:

* ``MacDense(macs)`` (``hw.rtl.dense``): ``macs`` int8 multipliers and an adder tree, the
  weights in a ROM, one word of ``macs`` weights a cycle (N ceil(K / macs) cycles a layer, plus
  a short pipeline). Small, and what the early-exit run, the cost model and synthesis use by
  default;
* da4ml constant-matrix adder graphs (``hw.rtl.dense.dense_rtl``), which Amaranth
  instantiates: a few cycles a layer, but a large design per candidate at full size.

Everything else is Amaranth, and the LayerNorm and the softmax are the layer engine's own
units (``hw.rtl.layernorm``, ``hw.rtl.softmax`` with 15-bit probabilities). One image at a time, in
phases (cycles with no stalls; W = D / lanes):

| phase | cycles | what |
|---|---|---|
| BOOT | W, once after reset | the LayerNorm's g, b from a ROM into the unit |
| SUMS | T W (the input) | S_i += x, Q_i += x**2 over the patch tokens ([CLS] clears them) |
| FEED | W + ``FEED_STAGES`` | a = sat8(round_shift(S m_a, sh_a)) into the LayerNorm; V += P Q_i - S_i**2, both pipelined |
| LN | the unit's OUT phase | y (D int8) into a register vector |
| FC1, FC2, SCORES (MAC) | N ceil(K / macs) + 12, + 12, + 3 | row by row from the ROM: W1 y + b1 and W2 h + b2 through one ``hw.rtl.gemm.Requantizer`` (h = max(sat8(...), 0), e = sat8(...), n += e**2), d = sat32(T e) |
| FC1, FC2, SCORES (da4ml) | the da4ml latency + 1 each | the adder graph on the held input vector: W1 y + b1, W2 h + b2, T e |
| RQ1, RQ2 (da4ml) | H / lanes + 3, E / lanes + 3 | lanes channels a cycle through ``hw.rtl.gemm.Requantizer`` (per-channel M, shift from a ROM): h = max(sat8(...), 0), e = sat8(...) |
| (SCORES, da4ml) | | d = sat32(T e); n = sum e**2 |
| SQRT | 28 | r = isqrt(n << 16), one root bit a cycle (``hw.rtl.layernorm.DigitRoot``, no multiplier) |
| DIV | 41 | inv = floor(2**40 / max(r, 1)), one quotient bit a cycle |
| Z | C + ``Z_STAGES`` | z_c = sat32(round_shift(round_shift(d_c inv, 24) m_z, sh_z)), one class a cycle into a pipeline (one multiplier set, not C) |
| SOFTMAX | the unit's row (one lane) | p = softmax(z) at 2**-15; the top two kept as p streams out |
| GATE, GATE_SUM | 2 | margin, sav = min(V >> sav_shift, 2**16 - 1), the three products; then G = sat32(w . f + bias) |
| OUT | C | one beat per class: {score d_c, gate G, layer, last}, the comparator's ``INP`` |

Widths (P patch tokens, D, H, E, C the sizes; the shipped model's in brackets: P 49, D 64, H 128,
E 384, C 10): S_i signed, |S| <= 128 P (14 bits); Q_i unsigned, <= 2**14 P (20 bits); V signed,
<= D P**2 2**14 (34 bits); a, y, h, e int8; each dense output as wide as da4ml's interval
arithmetic makes it (W x + b exact), then saturated to int32; n = sum e**2 < E 2**14 (23 bits);
r 28 bits; inv <= 2**40 (41 bits); d inv < 2**73 before the round-shift; z int32; p 15 bits
unsigned; sav 16 bits; G int32. The requantizers are ``hw.rtl.gemm.Requantizer`` (sat32 input, 63-bit
product, sat8 output).

``head_cycles`` gives the cycles from the first token beat to the last output beat; the cocotb
check (``sim.head.verify_head``) measures them. Every width follows from the constants and
the sizes: the products with constants are exact (Amaranth widens them), and the saturations
are the reference's (int32 after each dense, int8 after each requantizer).
"""
from __future__ import annotations

import time

import torch
from amaranth import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import comparator, emit, layernorm, softmax
from hw.rtl.systolic import delay
from hw.rtl.dense import (MAC_PIPE, ROW_CONST, DenseRTL, MacDense, StreamDense, dense_cycles, dense_verilog,
                           head_dense_plan)
from hw.rtl.gemm import ROUND_SHIFT_STAGES, Requantizer, clamp, pipelined_product, product_stages, round_shift_saturate
from model import intops
from model.errors import QexitError
from model.exits.fixed import GATE_PROB_BITS, INV_BITS, NORM_FRAC, SAV_BITS, Z1_SHIFT, FixedHead

ROOT_BITS = intops.ISQRT_BITS // 2  # 28
PIECE = 17                          # the pipelined products' pieces (hw.rtl.gemm.pipelined_product)
S_BITS = 17                         # a channel's token sum S in the FEED pipeline: |S| <= 128 P, P < 512 patches
# FEED: S registered, S m_a, round + shift + shift + saturate; the LayerNorm takes a FEED_STAGES after its word
FEED_STAGES = 1 + product_stages(S_BITS, intops.MULT_BITS, PIECE) + ROUND_SHIFT_STAGES
Z1_BITS = 32 + INV_BITS + 2 - Z1_SHIFT                           # round_shift(d inv, 24)
# Z: d inv, its round shift, z1 m_z, round + shift + shift + saturate to int32
Z_STAGES = product_stages(32, INV_BITS + 1, PIECE) + 1 + product_stages(Z1_BITS, intops.MULT_BITS, PIECE) \
    + ROUND_SHIFT_STAGES
SOFTMAX_LANES = 1                   # C scores once per image: one lane is enough


def head_design(ep, ks: list[int], lanes: int, macs: int | None = None):
    """(ExitHead, Verilog of it and its da4ml layers, top name, seconds in da4ml) for the
    candidates ``ks`` of an exit path (``model.exits.exit_path.ExitPath``): one head with
    ``macs`` multipliers (``MacDense``) for all of them, or with ``macs`` None one candidate's
    da4ml head."""


    t = time.time()
    dense = head_dense_plan(ep, ks[0], macs)
    seconds = time.time() - t
    dut = ExitHead(ep.head, ks, ep.tokens, dense, lanes)
    top = "qexit_head_l" + "_".join(f"{ep.layers[k]:02d}" for k in dut.ks) + ("" if macs is None else f"_m{macs}")
    return dut, emit.to_verilog(dut, top) + "\n" + dense_verilog([dense]), top, seconds


# --------------------------------------------------------------------------- the head

def _round_shift(x, s: int):
    """round_shift by a constant shift s >= 1 (a shift signal goes through ``round_shift_saturate``)."""
    return (x + (1 << (s - 1))) >> s


def _shape_of(values: list[int]):
    """The narrowest shape that holds every value."""
    bits = max(max(abs(v), 1).bit_length() for v in values) + 1
    return signed(bits) if min(values) < 0 else unsigned(bits - 1)


def _sat(x, bits: int):
    return clamp(x, -2 ** (bits - 1), 2 ** (bits - 1) - 1)


def _tree_sum(items: list):
    """A balanced adder tree (a chain of hundreds of terms is too deep for Amaranth)."""
    while len(items) > 1:
        items = [items[i] + items[i + 1] if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]


def _ln_words(g: torch.Tensor, b: torch.Tensor, lanes: int) -> list[int]:
    """The LayerNorm's parameter words, ``lanes`` channels each (``layernorm.LN_PARAM``)."""
    gb, bb = (data.StructLayout.cast(layernorm.LN_PARAM).members[k].width for k in ("g", "b"))
    lane = gb + bb
    words = []
    for w in range(len(g) // lanes):
        word = 0
        for c in range(lanes):
            ch = w * lanes + c
            word |= ((int(g[ch]) & (2 ** gb - 1)) | ((int(b[ch]) & (2 ** bb - 1)) << gb)) << (c * lane)
        words.append(word)
    return words


# --------------------------------------------------------------------------- the streamed head's memory block

FIELD_BITS = 64                  # a header field
GATE_WEIGHT_BITS = 16            # the gate's weights w_c, w_m, w_s: int16 (|W| < 64 before the 2**9 scale)
HEADER = {                       # the candidate's scalars, in block order, with the widths the hardware holds
    "m_a": unsigned(intops.MULT_BITS), "sh_a": unsigned(6), "ln_shift": unsigned(6),
    "ln_eps": unsigned(intops.LN_EPS_BITS), "m_z": unsigned(intops.MULT_BITS), "sh_z": unsigned(6),
    "w_c": signed(GATE_WEIGHT_BITS), "w_m": signed(GATE_WEIGHT_BITS), "w_s": signed(GATE_WEIGHT_BITS),
    "bias": signed(32), "sav_shift": unsigned(6)}


def row_const(b, mult, shift) -> int:
    """A dense row's constants as one word: bias | mult << 33 | shift << 33 + MULT_BITS."""
    p_b, p_m, _ = ROW_CONST
    return (int(b) & (2 ** p_b - 1)) | (int(mult) << p_b) | (int(shift) << (p_b + p_m))


def weight_rows(w: torch.Tensor, macs: int) -> list[int]:
    """A weight matrix (N, K) as words of ``macs`` bytes: row by row, ceil(K / macs) words a row."""
    n_out, k_in = w.shape
    wb = w.to(torch.int64).numpy() & 0xFF
    return [sum(int(wb[j, c * macs + i]) << (8 * i) for i in range(macs) if c * macs + i < k_in)
            for j in range(n_out) for c in range(-(-k_in // macs))]


def beats(bits: int, macs: int) -> int:
    """Memory beats (8 macs bits each) that ``bits`` take."""
    return -(-bits // (8 * macs))


def row_const_beats(macs: int) -> int:
    return beats(sum(ROW_CONST), macs)


def _fits(name: str, value: int, shape) -> None:
    lo, hi = (-(2 ** (shape.width - 1)), 2 ** (shape.width - 1) - 1) if shape.signed else (0, 2 ** shape.width - 1)
    if not lo <= value <= hi:
        raise QexitError(f"the exit head's {name} = {value} does not fit its {shape.width}-bit "
                         f"{'signed' if shape.signed else 'unsigned'} field; rerun `qexit exits`")


def stream_block(head: FixedHead, k: int, lanes: int, macs: int) -> list[int]:
    """Candidate ``k``'s block as memory beats of ``8 macs`` bits, in the order the streamed
    head (``StreamDense``) takes them: the header (``HEADER``, one ``FIELD_BITS`` field each),
    the LayerNorm's D / lanes parameter words, fc1's and fc2's rows (each its ``row_const``,
    then its weight words) and the class scores' rows (weight words). Every constant must fit
    its stated width; the hardware holds no wider."""
    p, bits = head.layers[k].params, 8 * macs

    def split(value: int, n: int) -> list[int]:
        return [(value >> (bits * i)) & (2 ** bits - 1) for i in range(n)]

    header = 0
    for i, (name, shape) in enumerate(HEADER.items()):
        v = int(p[name])
        _fits(name, v, shape)
        header |= (v & (2 ** FIELD_BITS - 1)) << (FIELD_BITS * i)
    out = split(header, beats(FIELD_BITS * len(HEADER), macs))
    ln_bits = lanes * sum(data.StructLayout.cast(layernorm.LN_PARAM).members[f].width for f in ("g", "b"))
    for word in _ln_words(p["ln_g"], p["ln_b"], lanes):
        out += split(word, beats(ln_bits, macs))
    cb = row_const_beats(macs)
    for w, b, mult, shift in ((p["w1"], p["b1"], p["m1"], p["sh1"]), (p["w2"], p["b2"], p["m2"], p["sh2"])):
        per = -(-w.shape[1] // macs)
        rows = weight_rows(w, macs)
        for j in range(w.shape[0]):
            _fits("dense bias", int(b[j]), signed(ROW_CONST[0]))
            out += split(row_const(b[j], mult[j], shift[j]), cb) + rows[j * per:(j + 1) * per]
    return out + weight_rows(head.class_t, macs)


def block_phases(head: FixedHead, lanes: int, macs: int) -> dict[str, int]:
    """The beats of each part of a candidate's block (``stream_block``'s order)."""
    ln_bits = lanes * sum(data.StructLayout.cast(layernorm.LN_PARAM).members[f].width for f in ("g", "b"))
    cb = row_const_beats(macs)
    (d, hid), (_, e), (_, c) = MacDense.shapes(head)
    return {"header": beats(FIELD_BITS * len(HEADER), macs), "ln": (head.width // lanes) * beats(ln_bits, macs),
            "fc1": hid * (cb + -(-d // macs)), "fc2": e * (cb + -(-hid // macs)), "scores": c * -(-e // macs)}


def head_cycles(head: FixedHead, tokens: int, lanes: int, dense) -> int:
    """Cycles from an image's first token beat to its last output beat, with tokens arriving
    every cycle and the output never stalled (the phases of the module docstring); ``dense``
    as ``dense_cycles`` takes it."""
    w = head.width // lanes
    ln_out = layernorm.row_cycles(head.width, lanes) - w         # the LayerNorm after its LOAD
    sm = softmax.row_cycles(head.classes, SOFTMAX_LANES)
    return tokens * w + w + FEED_STAGES + ln_out + dense_cycles(head, lanes, dense) + ROOT_BITS + (INV_BITS + 1) \
        + (head.classes + Z_STAGES) + sm + 2 + head.classes


class _Banked:
    """A vector of ``n`` int8 values in ``banks`` memories, value j in bank j % banks at address
    j // banks. ``data``: values c banks .. c banks + banks - 1 (0 past the end) the cycle
    ``chunk`` holds c, as a register vector's word select gives them; ``push`` writes the next
    value in order, ``rewind`` starts again at value 0."""

    def __init__(self, m: Module, name: str, n: int, banks: int, chunk: Signal):
        self.depth = -(-n // banks)
        last, tail = self.depth - 1, n - (self.depth - 1) * banks      # banks holding the last chunk
        self.ports, data_ = [], []
        for i in range(banks):
            m.submodules[f"{name}_bank{i}"] = mem = memory.Memory(shape=signed(8), depth=self.depth, init=[])
            rd, wr = mem.read_port(domain="comb"), mem.write_port()
            m.d.comb += rd.addr.eq(chunk)
            data_.append(rd.data if i < tail else Mux(chunk == last, Const(0, signed(8)), rd.data))
            self.ports.append(wr)
        self.data = Cat(*data_)
        self.bank = Signal(range(banks), name=f"{name}_bank")
        self.addr = Signal(range(self.depth), name=f"{name}_addr")

    def push(self, m: Module, value) -> None:
        for i, wr in enumerate(self.ports):
            m.d.comb += [wr.en.eq(self.bank == i), wr.addr.eq(self.addr), wr.data.eq(value)]
        with m.If(self.bank == len(self.ports) - 1):
            m.d.sync += [self.bank.eq(0), self.addr.eq(self.addr + 1)]
        with m.Else():
            m.d.sync += self.bank.eq(self.bank + 1)

    def rewind(self, m: Module) -> None:
        m.d.sync += [self.bank.eq(0), self.addr.eq(0)]


class ExitHead(wiring.Component):
    """The head of the candidates ``ks`` (indices into ``head.layers``), one image at a time:
    ``index`` names the candidate whose tokens come next (sampled with the first token beat),
    ``inp`` takes the int8 tokens (``lanes`` per beat, [CLS] first, T x D/lanes beats per image)
    and ``out`` gives the comparator's ``INP`` beats (the C class scores, the gate on each,
    ``last`` on the final one, ``layer`` = the candidate index). Each candidate's constants are
    built in: with ``MacDense`` one head serves every candidate of ``ks`` (its weights and row
    constants in ROMs, its scalars in small tables); da4ml layers are one candidate's, so a
    da4ml head has one candidate."""

    def __init__(self, head: FixedHead, ks: list[int], tokens: int, dense: dict[str, DenseRTL] | MacDense,
                 lanes: int = 8):
        if head.width % lanes:
            raise QexitError(f"the head's width {head.width} must be a multiple of lanes = {lanes}")
        if (128 * (tokens - 1)).bit_length() + 1 > S_BITS:
            raise QexitError(f"the exit head takes at most {2 ** (S_BITS - 8) - 1} patch tokens (its token sums are "
                             f"{S_BITS}-bit); got {tokens - 1}")
        ks = sorted(set(ks))
        if not ks or not all(0 <= k < len(head.layers) for k in ks):
            raise QexitError(f"candidates {ks} must be indices of the head's {len(head.layers)} layers")
        if not isinstance(dense, (MacDense, StreamDense)):
            if len(ks) != 1:
                raise QexitError(f"da4ml layers are one candidate's; build one head per candidate, not {ks}")
            for key, (n_in, n_out) in zip(("fc1", "fc2", "scores"), MacDense.shapes(head)):
                if key not in dense or (dense[key].n_in, dense[key].n_out) != (n_in, n_out):
                    raise QexitError(f"the head needs a {n_in} -> {n_out} da4ml layer {key!r}")
        self.head, self.ks, self.tokens, self.dense, self.lanes = head, ks, tokens, dense, lanes
        ports = {"inp": In(stream.Signature(data.ArrayLayout(signed(8), lanes))),
                 "out": Out(stream.Signature(comparator.INP)), "index": In(range(len(head.layers)))}
        if isinstance(dense, StreamDense):               # the candidate's block (``stream_block``), beat by beat
            ports["m_in"] = In(stream.Signature(8 * dense.macs))
        super().__init__(ports)

    @property
    def cycles(self) -> int:
        return head_cycles(self.head, self.tokens, self.lanes, self.dense)

    def _scalar(self, name: str, cand):
        """A per-candidate constant: an int for a single candidate, else a table read at ``cand``."""
        values = [int(self.head.layers[k].params[name]) if k in self.ks else 0 for k in range(len(self.head.layers))]
        if len(self.ks) == 1:
            return values[self.ks[0]]
        return Array(Const(v, _shape_of(values)) for v in values)[cand]

    def elaborate(self, platform):
        m = Module()
        h, L = self.head, self.lanes
        D, H, E, C, T = h.width, h.hidden, h.embed_dim, h.classes, self.tokens
        W, P = D // L, T - 1
        first = Signal()                 # the image's first token beat: the candidate is sampled
        if len(self.ks) == 1:
            cand = Const(self.ks[0], range(len(h.layers)))
        else:
            cand = Signal(range(len(h.layers)), init=self.ks[0])
            with m.If(first):
                m.d.sync += cand.eq(self.index)
        streamed = isinstance(self.dense, StreamDense)
        regs = {name: Signal(shape, name=f"hdr_{name}") for name, shape in HEADER.items()}
        c_ = (lambda name: regs[name]) if streamed else (lambda name: self._scalar(name, cand))

        # ---- the units of the layer engine
        m.submodules.ln = ln = layernorm.LayerNormUnit(D, L)
        m.submodules.sm = sm = softmax.SoftmaxUnit(C, SOFTMAX_LANES, GATE_PROB_BITS)
        Ls, Ws = SOFTMAX_LANES, -(-C // SOFTMAX_LANES)
        m.d.comb += [ln.d.eq(D), ln.shift.eq(c_("ln_shift")), ln.eps.eq(c_("ln_eps")), sm.length.eq(C)]
        m.d.comb += [getattr(sm, key).eq(int(v)) for key, v in h.softmax.items()]

        # ---- registers
        s_bits, q_bits = (128 * P).bit_length() + 1, (128 * 128 * P).bit_length()
        # the per-channel sums of x and x**2 over the patch tokens, a word of L channels at
        # ``word``: read the cycle it is addressed (as registers would be), written back
        m.submodules.s_mem = s_mem = memory.Memory(shape=data.ArrayLayout(signed(s_bits), L), depth=W, init=[])
        m.submodules.q_mem = q_mem = memory.Memory(shape=data.ArrayLayout(unsigned(q_bits), L), depth=W, init=[])
        (s_rd, s_wr), (q_rd, q_wr) = ((mem.read_port(domain="comb"), mem.write_port()) for mem in (s_mem, q_mem))
        V = Signal(signed((D * P * 128 * 128 * P).bit_length() + 2))
        Y = [Signal(signed(8), name=f"y{i}") for i in range(D)]
        mac = isinstance(self.dense, (MacDense, StreamDense))
        # MAC heads keep the hidden and embedding vectors in memories (``_mac_states``); the
        # da4ml adder graphs take each whole vector at once, from registers
        Hr = None if mac else [Signal(signed(8), name=f"h{i}") for i in range(H)]
        Er = None if mac else [Signal(signed(8), name=f"e{i}") for i in range(E)]
        Dr = [Signal(signed(32), name=f"d{i}") for i in range(C)]
        Zr = [Signal(signed(32), name=f"z{i}") for i in range(C)]
        top1, top2 = Signal(unsigned(GATE_PROB_BITS)), Signal(unsigned(GATE_PROB_BITS))
        g_w = (GATE_WEIGHT_BITS - 1 if streamed else
               max(abs(int(h.layers[k].params[n])) for k in self.ks for n in ("w_c", "w_m", "w_s")).bit_length())
        g_c, g_m, g_s = (Signal(signed(g_w + max(GATE_PROB_BITS, SAV_BITS) + 2), name=f"gate_{n}") for n in "cms")
        n = Signal(unsigned((E * 128 * 128).bit_length()))
        sq = layernorm.DigitRoot("sq")
        root = sq.root
        inv = Signal(unsigned(INV_BITS + 1))
        rem = Signal(unsigned(ROOT_BITS + 1))
        gate = Signal(signed(32))
        longest = 0 if mac else max(d.latency for d in self.dense.values())
        step = Signal(range(max(ROOT_BITS, INV_BITS + 1, -(-E // L) + Requantizer.LATENCY, longest) + 1))
        tok = Signal(range(T))
        word = Signal(range(max(W + FEED_STAGES, Ws, C + Z_STAGES) + 1))
        m.d.comb += [port.addr.eq(word) for port in (s_rd, s_wr, q_rd, q_wr)]

        # ---- the LayerNorm's parameters: the candidate's W words, written with the [CLS] beats
        # (streamed: after the tokens, from the candidate's block)
        p_bits = len(ln.p_in.payload.as_value())
        if not streamed:
            zero_words = [0] * W
            ln_rom = Array(Array(Const(w_, p_bits) for w_ in (
                _ln_words(h.layers[k].params["ln_g"], h.layers[k].params["ln_b"], L) if k in self.ks else zero_words))
                for k in range(len(h.layers)))

        def next_word(count: int, state: str, also=()):
            """Advance ``word``; after the ``count``-th, clear it and go to ``state``."""
            m.d.sync += word.eq(word + 1)
            with m.If(word == count - 1):
                m.d.sync += [word.eq(0), *also]
                m.next = state

        def write_word(vec: list, lanes: int, values) -> None:
            """``values`` (``lanes`` of them) into ``vec`` at the word ``word``."""
            for w_ in range(-(-len(vec) // lanes)):
                with m.If(word == w_):
                    m.d.sync += [vec[w_ * lanes + c].eq(values[c]) for c in range(lanes) if w_ * lanes + c < len(vec)]

        # ---- the FEED and Z pipelines: they run every cycle; a valid chain says when their output is taken
        def stage(value, shape, name):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r
        feed_issue, z_issue = Signal(), Signal()
        s_r = [stage(s_rd.data[c], signed(S_BITS), f"s_r{c}") for c in range(L)]
        q_r = [stage(q_rd.data[c], unsigned(q_bits), f"q_r{c}") for c in range(L)]
        m.d.comb += ln.inp.valid.eq(delay(m, feed_issue, FEED_STAGES, "feed_valid"))
        for c in range(L):
            a = round_shift_saturate(stage, pipelined_product(stage, s_r[c], Value.cast(c_("m_a")), PIECE, f"sa{c}"),
                                     Value.cast(c_("sh_a")))
            m.d.comb += ln.inp.payload[c].eq(a)
        v_terms = [stage(P * q_r[c] - s_r[c] * s_r[c], signed(len(V)), f"v_term{c}") for c in range(L)]
        v_sum = stage(_tree_sum(v_terms), signed(len(V)), "v_sum")
        with m.If(delay(m, feed_issue, 3, "v_valid")):
            m.d.sync += V.eq(V + v_sum)
        z1 = stage(_round_shift(pipelined_product(stage, Dr[0], inv, PIECE, "dinv"), Z1_SHIFT), signed(Z1_BITS), "z1")
        z = round_shift_saturate(stage, pipelined_product(stage, z1, Value.cast(c_("m_z")), PIECE, "zm"),
                                 Value.cast(c_("sh_z")), bits=Z1_BITS + intops.MULT_BITS + 3, out_bits=32)
        shifted_v = V >> c_("sav_shift")    # V is final long before GATE: sav is a register
        sav = stage(Mux(shifted_v > 2 ** SAV_BITS - 1, 2 ** SAV_BITS - 1, shifted_v)[:SAV_BITS], unsigned(SAV_BITS), "sav")
        with m.If(delay(m, z_issue, Z_STAGES, "z_valid")):
            m.d.sync += [Zr[j].eq(Zr[j + 1]) for j in range(C - 1)] + [Zr[C - 1].eq(z)]

        with m.FSM():
            with m.State("SUMS"):
                m.d.comb += self.inp.ready.eq(1)
                m.d.comb += first.eq(self.inp.valid & (tok == 0) & (word == 0))
                if not streamed:
                    m.d.comb += [ln.p_in.valid.eq(self.inp.valid & (tok == 0)),
                                 ln.p_in.payload.as_value().eq(ln_rom[Mux(first, self.index, cand)][word])]
                with m.If(self.inp.valid):     # the [CLS] token (tok 0) clears the word's sums
                    m.d.comb += [s_wr.en.eq(1), q_wr.en.eq(1)]
                    for c in range(L):
                        x = self.inp.payload[c]
                        m.d.comb += [s_wr.data[c].eq(Mux(tok == 0, 0, s_rd.data[c] + x)),
                                     q_wr.data[c].eq(Mux(tok == 0, 0, q_rd.data[c] + x * x))]
                    m.d.sync += word.eq(word + 1)
                    with m.If(word == W - 1):
                        m.d.sync += [word.eq(0), tok.eq(tok + 1)]
                        with m.If(tok == T - 1):
                            m.d.sync += [tok.eq(0), V.eq(0)]
                            m.next = "HEADER" if streamed else "FEED"
            if streamed:
                M = self.dense.macs
                hb = beats(FIELD_BITS * len(HEADER), M)
                lb = beats(p_bits, M)
                hdr = Signal(hb * 8 * M)
                lnw = Signal(lb * 8 * M)
                beat = Signal(range(max(hb, lb) + 1))
                with m.State("HEADER"):     # the candidate's scalars, beat by beat
                    m.d.comb += self.m_in.ready.eq(1)
                    with m.If(self.m_in.valid):
                        m.d.sync += [hdr.eq(Cat(hdr[8 * M:], self.m_in.payload)), beat.eq(beat + 1)]
                        with m.If(beat == hb - 1):
                            m.d.sync += [beat.eq(0), word.eq(0)]
                            m.next = "LN_PARAMS"
                with m.State("LN_PARAMS"):  # the LayerNorm's W parameter words, each its beats
                    last = beat == lb - 1
                    m.d.comb += [self.m_in.ready.eq(~last | ln.p_in.ready),
                                 ln.p_in.valid.eq(self.m_in.valid & last),
                                 ln.p_in.payload.as_value().eq(Cat(lnw, self.m_in.payload)[8 * M:][:p_bits])]
                    with m.If(self.m_in.valid & self.m_in.ready):
                        m.d.sync += [lnw.eq(Cat(lnw[8 * M:], self.m_in.payload)), beat.eq(beat + 1)]
                        with m.If(last):
                            m.d.sync += beat.eq(0)
                            next_word(W, "FEED")
                # the scalars: the header register's fields, held until the next candidate's header
                for i, (name, shape) in enumerate(HEADER.items()):
                    m.d.comb += regs[name].eq(hdr.word_select(i, FIELD_BITS)[:shape.width])
            with m.State("FEED"):     # W words into the pipelines; the LayerNorm (in its LOAD: always ready)
                m.d.comb += feed_issue.eq(word < W)     # takes each FEED_STAGES later
                next_word(W + FEED_STAGES, "LN")
            with m.State("LN"):
                m.d.comb += ln.out.ready.eq(1)
                with m.If(ln.out.valid):
                    write_word(Y, L, ln.out.payload)
                    next_word(W, "FC1", [step.eq(0)])
            if mac:
                self._mac_states(m, Y, Dr, n, step, cand)
            else:
                self._da4ml_states(m, Y, Hr, Er, Dr, n, step)
            with m.State("SQRT"):           # root = isqrt(n << 2 NORM_FRAC), from bit 27 down
                m.d.sync += sq.step(m, n << (2 * NORM_FRAC), step == 0) + [step.eq(step + 1)]
                with m.If(step == ROOT_BITS - 1):
                    m.d.sync += [step.eq(0), rem.eq(0), inv.eq(0)]
                    m.next = "DIV"
            with m.State("DIV"):            # inv = floor(2**40 / max(root, 1)), one quotient bit a cycle
                den = Mux(root == 0, 1, root)
                shifted = Cat(step == 0, rem)          # the dividend 2**40 has one bit, the first
                ge = shifted >= den
                m.d.sync += [rem.eq(Mux(ge, shifted - den, shifted)), inv.eq(Cat(ge, inv)), step.eq(step + 1)]
                with m.If(step == INV_BITS):
                    m.d.sync += step.eq(0)
                    m.next = "Z"
            with m.State("Z"):     # one class a cycle into the pipeline (Dr rotates once round); z shifts into Zr
                m.d.comb += z_issue.eq(word < C)       # Z_STAGES later
                with m.If(word < C):
                    m.d.sync += [Dr[j].eq(Dr[(j + 1) % C]) for j in range(C)]
                next_word(C + Z_STAGES, "SOFTMAX_IN")
            with m.State("SOFTMAX_IN"):
                m.d.comb += sm.inp.valid.eq(1)
                m.d.sync += [top1.eq(0), top2.eq(0)]
                for w_ in range(Ws):
                    with m.If(word == w_):
                        m.d.comb += [sm.inp.payload[c].eq(Zr[w_ * Ls + c] if w_ * Ls + c < C else intops.INT32_MAX)
                                     for c in range(Ls)]
                with m.If(sm.inp.ready):
                    next_word(Ws, "SOFTMAX_OUT")
            with m.State("SOFTMAX_OUT"):   # the two largest probabilities as they stream out, duplicates kept
                m.d.comb += sm.out.ready.eq(1)  # (torch.topk); p >= 0, so both start at 0
                with m.If(sm.out.valid):
                    t1, t2 = top1, top2
                    for c in range(Ls):
                        p_c = sm.out.payload[c]
                        n1, n2 = Mux(p_c > t1, p_c, t1), Mux(p_c > t1, t1, Mux(p_c > t2, p_c, t2))
                        # a padding lane of the last beat (Ls not dividing C) leaves them as they are
                        valid = (word * Ls + c) < C
                        t1, t2 = Mux(valid, n1, t1), Mux(valid, n2, t2)
                    m.d.sync += [top1.eq(t1), top2.eq(t2)]
                    next_word(Ws, "GATE")
            with m.State("GATE"):           # the gate's three products, then their sum
                m.d.sync += [g_c.eq(c_("w_c") * top1), g_m.eq(c_("w_m") * (top1 - top2 if C > 1 else top1)),
                             g_s.eq(c_("w_s") * sav)]
                m.next = "GATE_SUM"
            with m.State("GATE_SUM"):
                m.d.sync += [gate.eq(_sat(g_c + g_m + g_s + c_("bias"), 32)), word.eq(0)]
                m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += [self.out.valid.eq(1), self.out.payload.score.eq(Array(Dr)[word]),
                             self.out.payload.gate.eq(gate), self.out.payload.layer.eq(cand),
                             self.out.payload.last.eq(word == C - 1)]
                with m.If(self.out.ready):
                    next_word(C, "SUMS")
        return m

    def _da4ml_states(self, m, Y, Hr, Er, Dr, n, step):
        """FC1 to SCORES with the da4ml adder graphs: each holds its input vector until its
        output is valid; RQ1 and RQ2 requantize ``lanes`` channels a cycle."""
        p, L, C = self.head.layers[self.ks[0]].params, self.lanes, self.head.classes
        outs = {}
        for key, vec in (("fc1", Y), ("fc2", Hr), ("scores", Er)):
            d = self.dense[key]
            o = Signal(d.n_out * d.out_bits, name=f"{key}_out")
            m.submodules[key] = Instance(d.module, i_clk=ClockSignal(), i_model_inp=Cat(*vec), o_model_out=o)
            outs[key] = [o.word_select(j, d.out_bits).as_signed() << d.lsb for j in range(d.n_out)]
        rq = [Requantizer() for _ in range(L)]            # fc1's and fc2's, L channels a cycle
        for c, r in enumerate(rq):
            m.submodules[f"rq{c}"] = r
        for key, nxt in (("fc1", "RQ1"), ("fc2", "RQ2"), ("scores", "SQRT")):
            with m.State(key.upper()):      # hold the input vector until the adder graph's output is valid
                m.d.sync += step.eq(step + 1)
                with m.If(step == self.dense[key].latency):
                    if key == "scores":
                        m.d.sync += [Dr[j].eq(_sat(outs[key][j], 32)) for j in range(C)]
                        m.d.sync += n.eq(_tree_sum([e * e for e in Er]))
                    m.d.sync += step.eq(0)
                    m.next = nxt
        for state, key, target, mult, shift, relu, nxt in (("RQ1", "fc1", Hr, p["m1"], p["sh1"], True, "FC2"),
                                                           ("RQ2", "fc2", Er, p["m2"], p["sh2"], False, "SCORES")):
            with m.State(state):            # L channels a cycle through the requantizers
                words = -(-len(target) // L)
                pad = words + Requantizer.LATENCY

                def column(values, c, default=0):
                    return Array([values[w_ * L + c] if w_ * L + c < len(target) else Const(default)
                                  for w_ in range(pad)])[step]
                for c in range(L):
                    m.d.comb += [rq[c].acc.eq(_sat(column(outs[key], c), 32)), rq[c].bias.eq(0),
                                 rq[c].mult.eq(column([Const(int(v), intops.MULT_BITS) for v in mult], c)),
                                 rq[c].shift.eq(column([Const(int(v), 6) for v in shift], c, 1))]
                done = step - Requantizer.LATENCY           # the word whose results are on y now
                for w_ in range(words):
                    with m.If((step >= Requantizer.LATENCY) & (done == w_)):
                        m.d.sync += [target[w_ * L + c].eq(clamp(rq[c].y, 0, 127) if relu else rq[c].y)
                                     for c in range(L) if w_ * L + c < len(target)]
                m.d.sync += step.eq(step + 1)
                with m.If(step == words - 1 + Requantizer.LATENCY):
                    m.d.sync += step.eq(0)
                    m.next = nxt

    def _mac_states(self, m, Y, Dr, n, step, cand):
        """FC1, FC2 and SCORES on ``macs`` multipliers (``MacDense`` or ``StreamDense``): each
        phase issues its weight words one a cycle at most (row j, chunk c: W[j, c M:(c + 1) M])
        with the row's constants (bias, requantizer multiplier and shift) and the input vector's
        chunk c; the next cycle multiplies them, the one after adds the products to the row's
        sum, which the row's first chunk starts from its bias; a finished row goes through the
        requantizer (fc1: relu) into its vector, and for fc2 its square into n; a score row is
        saturated to int32. The phase ends ``tail`` cycles after its last issue.

        ``MacDense``: the words come from a ROM (every candidate's fc1 and fc2, at bases read
        from a table at ``cand``, and the class embeddings once), one a cycle, and the row
        constants from a second ROM. ``StreamDense``: they come through ``m_in`` in the block's
        order (a row's constant beats, then its weight beats), and a word issues when it arrives."""
        h, M = self.head, self.dense.macs
        stream_in = isinstance(self.dense, StreamDense)
        m.submodules.rq = rq = Requantizer()
        n_cand = len(h.layers)
        P_B, P_M, P_S = ROW_CONST                         # a row's constants: bias | mult << P_B | shift << P_B + P_M
        if stream_in:
            cb = row_const_beats(M)
            crow = Signal(cb * 8 * M)                     # the row's constant beats, as they came
            w1 = Signal(8 * M)
            c1 = Signal(sum(ROW_CONST))
            c_src = c1
        else:
            words, consts = [], []
            w_base = {key: [0] * n_cand for key in ("fc1", "fc2")}
            p_base = {key: [0] * n_cand for key in ("fc1", "fc2")}
            for k in self.ks:
                prm = h.layers[k].params
                for key, w, b, mult, shift in (("fc1", prm["w1"], prm["b1"], prm["m1"], prm["sh1"]),
                                               ("fc2", prm["w2"], prm["b2"], prm["m2"], prm["sh2"])):
                    w_base[key][k], p_base[key][k] = len(words), len(consts)
                    words += weight_rows(w, M)
                    consts += [row_const(bb, mm, ss) for bb, mm, ss in zip(b, mult, shift)]
            scores_base = len(words)
            words += weight_rows(h.class_t, M)
            m.submodules.rom = rom = memory.Memory(shape=unsigned(8 * M), depth=len(words), init=words)
            m.submodules.row_consts = prom = memory.Memory(shape=unsigned(sum(ROW_CONST)), depth=len(consts), init=consts)
            rd, prd = rom.read_port(), prom.read_port()
            w1, c_src = rd.data, prd.data

            def base(table: list[int]):
                return table[self.ks[0]] if len(self.ks) == 1 else Array(Const(v, range(max(table) + 1)) for v in table)[cand]
        p_bias, p_mult, p_shift = c_src[:P_B].as_signed(), c_src[P_B:P_B + P_M], c_src[P_B + P_M:]

        K_max = max(k for k, _ in MacDense.shapes(h))
        N_max = max(nn for _, nn in MacDense.shapes(h))
        acc = Signal(signed((K_max * 128 * 128 + 2 ** 32).bit_length() + 1))
        chunk = Signal(range(-(-K_max // M)))
        cbeat = Signal(range(4))                          # constant beats taken of the row
        xs1 = Signal(8 * M)                               # the input chunk, beside the weight word
        prod = [Signal(signed(16), name=f"prod{i}") for i in range(M)]
        v2p, first2, last2 = Signal(), Signal(), Signal()
        bias2, mult2, shift2 = Signal(signed(P_B)), Signal(unsigned(P_M)), Signal(unsigned(6))
        row = Signal(range(N_max + 1))
        v1, first1, last1, v2 = Signal(), Signal(), Signal(), Signal()
        q_mult, q_shift = Signal(unsigned(P_M)), Signal(unsigned(6))
        qv = [Signal(name=f"qv{i}") for i in range(Requantizer.LATENCY)]
        m.d.sync += [qv[0].eq(v2)] + [qv[i + 1].eq(qv[i]) for i in range(len(qv) - 1)]
        drain = Signal(range(MAC_PIPE + Requantizer.LATENCY + 3))   # cycles since the phase's last issue

        # fc1's and fc2's outputs, each in ``M`` memories read a chunk a cycle (``_Banked``)
        Hr, Er = _Banked(m, "h", h.hidden, M, chunk), _Banked(m, "e", h.embed_dim, M, chunk)

        def push(target, value) -> None:
            """Rows finish in order: a finished row is its vector's next value. Into registers
            it shifts in at the end (after N rows, target[j] holds row j; no N-way decoder)."""
            if isinstance(target, _Banked):
                target.push(m, value)
            else:
                m.d.sync += [target[j].eq(target[j + 1]) for j in range(len(target) - 1)] + [target[-1].eq(value)]

        layers = [("FC1", "fc1", Y, Hr, True, "FC2"), ("FC2", "fc2", Hr, Er, False, "SCORES"),
                  ("SCORES", None, Er, Dr, False, "SQRT")]
        for (state, key, x_vec, target, relu, nxt), (k_in, n_out) in zip(layers, MacDense.shapes(h)):
            per = -(-k_in // M)
            tail = MAC_PIPE + (Requantizer.LATENCY + 1 if key else 0)
            with m.State(state):
                # issue: a weight word with the row's constants, while rows are left
                left = row < n_out
                if stream_in:
                    m.d.comb += self.m_in.ready.eq(left)
                    take = self.m_in.valid & left
                    const_beat = (cbeat < cb) if key else Const(0)
                    issue = take & ~const_beat
                    with m.If(take & const_beat):
                        m.d.sync += [crow.eq(Cat(crow[8 * M:], self.m_in.payload)), cbeat.eq(cbeat + 1)]
                    m.d.sync += w1.eq(self.m_in.payload)
                    if key:
                        m.d.sync += c1.eq(crow[:sum(ROW_CONST)])
                else:
                    issue = left
                    m.d.comb += rd.addr.eq((base(w_base[key]) if key else scores_base) + row * per + chunk)
                    if key:
                        m.d.comb += prd.addr.eq(base(p_base[key]) + row)
                if isinstance(x_vec, _Banked):
                    xs = x_vec.data
                else:
                    zero = Const(0, signed(8))
                    xs = Array(Cat(*(x_vec[c * M + i] if c * M + i < k_in else zero for i in range(M)))
                               for c in range(per))[chunk]
                m.d.sync += [v1.eq(issue), first1.eq(chunk == 0), last1.eq(chunk == per - 1), xs1.eq(xs)]
                with m.If(issue):
                    m.d.sync += chunk.eq(chunk + 1)
                    with m.If(chunk == per - 1):
                        m.d.sync += [chunk.eq(0), row.eq(row + 1), cbeat.eq(0)]
                        with m.If(row == n_out - 1):
                            m.d.sync += drain.eq(1)
                with m.If(drain != 0):
                    m.d.sync += drain.eq(drain + 1)
                # multiply: the weight word against the input vector's chunk (both registered)
                m.d.sync += [prod[i].eq(w1.word_select(i, 8).as_signed() * xs1.word_select(i, 8).as_signed())
                             for i in range(M)]
                m.d.sync += [v2p.eq(v1), first2.eq(first1), last2.eq(last1)]
                if key:
                    m.d.sync += [bias2.eq(p_bias), mult2.eq(p_mult), shift2.eq(p_shift)]
                # add: the products into the row's sum, which its first chunk starts from the bias
                with m.If(v2p):
                    m.d.sync += acc.eq(Mux(first2, bias2 if key else 0, acc) + _tree_sum(prod))
                    if key:
                        m.d.sync += [q_mult.eq(mult2), q_shift.eq(shift2)]
                m.d.sync += v2.eq(v2p & last2)
                # a finished row
                if key is None:
                    with m.If(v2):
                        push(target, _sat(acc, 32))
                else:
                    m.d.comb += [rq.acc.eq(_sat(acc, 32)), rq.bias.eq(0), rq.mult.eq(q_mult), rq.shift.eq(q_shift)]
                    with m.If(qv[-1]):
                        push(target, clamp(rq.y, 0, 127) if relu else rq.y)
                        if target is Er:
                            m.d.sync += n.eq(n + rq.y * rq.y)
                with m.If(drain == tail):
                    m.d.sync += [step.eq(0), chunk.eq(0), row.eq(0), drain.eq(0), cbeat.eq(0)]
                    if isinstance(target, _Banked):
                        target.rewind(m)
                    if nxt == "FC2":
                        m.d.sync += n.eq(0)
                    m.next = nxt
