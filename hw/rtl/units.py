"""Element-wise streaming units beside the array: requantizer, residual add, the activation
table and i-GELU.

Each is a ``wiring.Component`` with an ``inp`` and an ``out`` stream (``amaranth.lib.stream``)
carrying ``lanes`` values per beat (lane 0 in the low bits), and its constants as input
ports that the host (or the layer controller) holds steady while the unit runs. Each computes
exactly the integers of its ``model.intops`` kernel, with the widths stated there:

* ``RequantUnit``: int32 → int8, ``requantize(acc, m, shift)`` (scalar m, shift);
* ``AddUnit``: two int8 → int8, ``add(a, b, m_a, m_b, shift)``;
* ``TableUnit``: int8 → int8 through a 256-entry table loaded per layer (``table_lookup``): the
  MLP activation of every program ``hw.program`` makes (i-GELU's 256 outputs, or quick_gelu);
* ``GeluUnit``: int8 → int8, ``gelu(x, qb, qc, m, shift)``, computed (not tabulated):
  ``t = min(|x|, -qb)``, ``(t + qb)**2``, ``x * (erf + qc)`` in int32, then the requantizer;
  the engine builds it only for a program that uses ``Unit.GELU``.

Flow control is one rule for every pipeline here (``Pipeline``): all stages advance together
when the output register is empty or being read (``advance = ~out.valid | out.ready``), and
``inp.ready = advance``. A unit therefore takes one beat per cycle when nothing stalls, holds
its state under back-pressure, and never drops or duplicates a beat.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.gemm import Requantizer, clamp, round_shift_saturate
from model import intops
from model.errors import QexitError


def check_lanes(lanes: int) -> None:
    if not isinstance(lanes, int) or lanes < 1:
        raise QexitError(f"lanes = {lanes} must be an integer >= 1")


class Pipeline:
    """The stall rule shared by the units: stage registers update only on ``advance``."""

    def __init__(self, m: Module, inp, out, latency: int):
        self.m = m
        self.advance = Signal()
        valid = [Signal(name=f"valid_{i}") for i in range(latency)]
        m.d.comb += [self.advance.eq(~out.valid | out.ready), inp.ready.eq(self.advance),
                     out.valid.eq(valid[-1])]
        with m.If(self.advance):
            m.d.sync += valid[0].eq(inp.valid)
            for a, b in zip(valid, valid[1:]):
                m.d.sync += b.eq(a)

    def stage(self, value, shape=None, name: str = "stage"):
        """``value`` registered once, on ``advance``."""
        reg = Signal(shape if shape is not None else value.shape(), name=name)
        with self.m.If(self.advance):
            self.m.d.sync += reg.eq(value)
        return reg

    def requantizer(self, acc, mult, shift, name: str):
        """``sat8(round_shift(acc * mult, shift))`` in Requantizer.LATENCY stages."""
        rq = Requantizer()
        self.m.submodules[name] = rq
        self.m.d.comb += [rq.acc.eq(acc), rq.bias.eq(0), rq.mult.eq(mult), rq.shift.eq(shift),
                          rq.en.eq(self.advance)]
        return rq.y


class ElementwiseUnit(wiring.Component):
    """``lanes`` values of ``inp_shape`` in, ``lanes`` int8 out, plus the unit's constant ports."""

    def __init__(self, lanes: int, inp_shape, constants: dict):
        check_lanes(lanes)
        self.lanes = lanes
        super().__init__({"inp": In(stream.Signature(data.ArrayLayout(inp_shape, lanes))),
                          "out": Out(stream.Signature(data.ArrayLayout(signed(8), lanes))),
                          **{name: In(shape) for name, shape in constants.items()}})


class RequantUnit(ElementwiseUnit):
    """int32 lanes → int8 lanes: ``intops.requantize`` with one (mult, shift) for all lanes."""
    LATENCY = Requantizer.LATENCY

    def __init__(self, lanes: int = 1):
        super().__init__(lanes, signed(32), {"mult": unsigned(intops.MULT_BITS), "shift": unsigned(6)})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.inp, self.out, self.LATENCY)
        for i in range(self.lanes):
            m.d.comb += self.out.payload[i].eq(
                pipe.requantizer(self.inp.payload[i], self.mult, self.shift, f"rq{i}"))
        return m


class AddUnit(ElementwiseUnit):
    """Two int8 lanes → int8 lanes: ``intops.add``: ``sat8((a*m_a + b*m_b + half) >> shift)``.

    Widths: a*m_a and b*m_b are 8 x 31 bits (39-bit products), their sum 40 bits. Stage 1 forms
    each product's two partial products (8 x 16 bits, one multiplier each), stage 2 each product,
    stage 3 the sum, then ``round_shift_saturate`` (4 stages).
    """
    LATENCY = 7

    def __init__(self, lanes: int = 1):
        super().__init__(lanes, data.StructLayout({"a": signed(8), "b": signed(8)}),
                         {"m_a": unsigned(intops.MULT_BITS), "m_b": unsigned(intops.MULT_BITS),
                          "shift": unsigned(6)})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.inp, self.out, self.LATENCY)
        for i in range(self.lanes):
            lane = self.inp.payload[i]

            def product(x, mult, name):
                lo = pipe.stage(x * mult[:16], signed(25), f"{name}_lo{i}")
                hi = pipe.stage(x * mult[16:], signed(24), f"{name}_hi{i}")
                return pipe.stage(lo + (hi << 16), signed(40), f"{name}{i}")

            total = pipe.stage(product(lane.a, self.m_a, "pa") + product(lane.b, self.m_b, "pb"), signed(41), f"sum{i}")
            y = round_shift_saturate(lambda v, shape, name: pipe.stage(v, shape, f"{name}{i}"), total, self.shift)
            m.d.comb += self.out.payload[i].eq(y)
        return m


class TableUnit(wiring.Component):
    """int8 lanes → int8 lanes through a 256-entry table (``intops.table_lookup``: the MLP
    activation, i-GELU's 256 outputs or CLIP's quick_gelu), looked up per lane in one stage.

    The table arrives on ``t_in``, ``lanes`` entries a beat in index order (256 / lanes beats a
    layer). Each lane keeps its own copy in a memory of 256 / lanes words of ``lanes`` entries
    (a beat is one word, written to every copy); a lookup reads word (x + 128) // lanes, the
    stage's register, and picks entry (x + 128) % lanes of it.
    """
    LATENCY = 1
    ENTRIES = intops.TABLE_SIZE

    def __init__(self, lanes: int = 1):
        check_lanes(lanes)
        if self.ENTRIES % lanes:
            raise QexitError(f"the activation table's {self.ENTRIES} entries do not split into {lanes} lanes")
        self.lanes = lanes
        lanes_of = stream.Signature(data.ArrayLayout(signed(8), lanes))
        super().__init__({"inp": In(lanes_of), "out": Out(lanes_of), "t_in": In(lanes_of)})

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        words = self.ENTRIES // L
        sel_bits = (L - 1).bit_length()
        load = Signal(range(words))
        m.d.comb += self.t_in.ready.eq(1)
        with m.If(self.t_in.valid):
            m.d.sync += load.eq(Mux(load == words - 1, 0, load + 1))
        pipe = Pipeline(m, self.inp, self.out, self.LATENCY)
        for i in range(L):
            copy = memory.Memory(shape=unsigned(8 * L), depth=words, init=[])
            m.submodules[f"copy{i}"] = copy
            wr, rd = copy.write_port(), copy.read_port()
            index = (self.inp.payload[i] + 128)[:8]              # x + 128 in [0, 255]
            m.d.comb += [wr.en.eq(self.t_in.valid), wr.addr.eq(load), wr.data.eq(self.t_in.payload.as_value()),
                         rd.en.eq(pipe.advance), rd.addr.eq(index[sel_bits:])]
            sel = pipe.stage(index[:sel_bits], unsigned(max(sel_bits, 1)), f"sel{i}") if sel_bits else 0
            m.d.comb += self.out.payload[i].eq(rd.data.word_select(sel, 8) if sel_bits else rd.data)
        return m


class GeluUnit(ElementwiseUnit):
    """int8 lanes → int8 lanes: ``intops.gelu`` (I-BERT i-GELU), computed per lane.

    Stage 1: t = min(|x|, -qb) in [0, 128], u = t + qb in [-4096, 0] (13 bits signed);
    stage 2: u**2 < 2**24; stage 3: erf + qc = (2 qc - u**2, u**2 or qc for x >, < or = 0),
    x * (erf + qc) in (-2**31, 2**31); then the requantizer (``Requantizer.LATENCY`` stages).
    """
    LATENCY = 3 + Requantizer.LATENCY

    def __init__(self, lanes: int = 1):
        super().__init__(lanes, signed(8), {
            "qb": signed(13),                          # intops.GELU_QB: [-2**12, -1]
            "qc": unsigned(23),                        # intops.GELU_QC: [0, 2**23)
            "mult": unsigned(intops.MULT_BITS), "shift": unsigned(6)})

    def elaborate(self, platform):
        m = Module()
        pipe = Pipeline(m, self.inp, self.out, self.LATENCY)
        for i in range(self.lanes):
            x = self.inp.payload[i]
            mag = Mux(x < 0, -x, x)
            t = Mux(mag < -self.qb, mag, -self.qb)
            x1 = pipe.stage(x, signed(8), f"x1_{i}")
            u = pipe.stage(t + self.qb, signed(14), f"u{i}")
            x2 = pipe.stage(x1, signed(8), f"x2_{i}")
            sq = pipe.stage(u * u, unsigned(25), f"sq{i}")
            erf_qc = Mux(x2 > 0, 2 * self.qc - sq, Mux(x2 < 0, sq, self.qc))
            prod = pipe.stage(x2 * erf_qc, signed(32), f"prod{i}")
            m.d.comb += self.out.payload[i].eq(pipe.requantizer(prod, self.mult, self.shift, f"rq{i}"))
        return m
