"""One processing element of the weight-stationary systolic array.

An int8 x int8 multiply-accumulate with an int32 partial sum, and two int8 weight registers
(the double buffer of the stationary operand). Every cycle the PE

* passes the activation and its bank bit one column to the right (``a_out``, ``sel_out``);
* adds ``a_in * w[sel_in]`` to the partial sum from the PE above and passes it down
  (``psum_out``), one cycle later;
* if ``load`` is high, writes ``load_weight`` into bank ``load_bank``. Writing the bank in
  use takes effect from the next cycle; the schedule only writes the idle bank.

The partial sum cannot overflow: the array has at most 2**17 - 1 rows in total over all K
tiles (see ``hw.schedule.MAX_K``), and |a * w| <= 2**14.

**Precision-scalable** (``ScalablePE``, issue I; the layer engine does not use it yet): the
8 x 8 multiply is built from two 8 x 4 partial products, ``a * w = (a * w_hi << 4) + a * w_lo``
with ``w_hi`` the signed high nibble and ``w_lo`` the unsigned low one. With ``pack_in`` high
the same two multipliers do two 4-bit MACs for two output columns: the weight byte holds two
signed 4-bit weights (``w_lo`` now signed) and the PE adds ``(a * w_hi << 16) + a * w_lo`` to
the partial sum, whose 32 bits then carry two lanes (low lane signed 16-bit, high lane
above it: one 32-bit adder adds both, the low lane's sign borrowing from the high one, which
``hw.systolic.split_lanes`` undoes). ``pack`` travels with the activation, like ``sel``. The
lanes are exact while the low lane's column sum stays within int16: R |a w_lo| < 2**15, i.e.
up to 511 array rows with 4-bit activations (|a w_lo| <= 64).
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

ACT = signed(8)
WEIGHT = signed(8)
PSUM = signed(32)


class PE(wiring.Component):
    a_in: In(ACT)
    sel_in: In(1)
    psum_in: In(PSUM)
    load: In(1)
    load_bank: In(1)
    load_weight: In(WEIGHT)
    a_out: Out(ACT)
    sel_out: Out(1)
    psum_out: Out(PSUM)

    def elaborate(self, platform):
        m = Module()
        w0 = Signal(WEIGHT)
        w1 = Signal(WEIGHT)
        with m.If(self.load & ~self.load_bank):
            m.d.sync += w0.eq(self.load_weight)
        with m.If(self.load & self.load_bank):
            m.d.sync += w1.eq(self.load_weight)
        weight = Mux(self.sel_in, w1, w0)
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.psum_out.eq(self.psum_in + self.a_in * weight),
        ]
        return m


PACK_SHIFT = 16     # the high lane's position in a packed partial sum


class ScalablePE(wiring.Component):
    """``PE`` with a packed 4-bit mode (the module docstring): one 8 x 8 MAC or two 4 x 4 MACs
    a cycle, from the same two 8 x 4 multipliers."""
    a_in: In(ACT)
    sel_in: In(1)
    pack_in: In(1)
    psum_in: In(PSUM)
    load: In(1)
    load_bank: In(1)
    load_weight: In(WEIGHT)
    a_out: Out(ACT)
    sel_out: Out(1)
    pack_out: Out(1)
    psum_out: Out(PSUM)

    def elaborate(self, platform):
        m = Module()
        w0 = Signal(WEIGHT)
        w1 = Signal(WEIGHT)
        with m.If(self.load & ~self.load_bank):
            m.d.sync += w0.eq(self.load_weight)
        with m.If(self.load & self.load_bank):
            m.d.sync += w1.eq(self.load_weight)
        weight = Mux(self.sel_in, w1, w0)
        hi = weight[4:8].as_signed()
        lo = Signal(signed(5))          # the low nibble: unsigned for an 8-bit weight, signed when packed
        m.d.comb += lo.eq(Mux(self.pack_in, weight[0:4].as_signed(), weight[0:4]))
        p_hi = self.a_in * hi
        p_lo = self.a_in * lo
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.pack_out.eq(self.pack_in),
            self.psum_out.eq(self.psum_in + Mux(self.pack_in, p_hi << PACK_SHIFT, p_hi << 4) + p_lo),
        ]
        return m
