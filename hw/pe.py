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

**Precision-scalable** (``ScalablePE``, issue I; the layer engine does not use it yet): with
``pack_in`` high the weight byte holds two signed 4-bit weights ``w_lo`` (low nibble) and
``w_hi`` (high nibble) for two output columns, the activation is a 4-bit value, and the PE's
one multiplier computes ``a * (w_hi * 2**PACK_SHIFT + w_lo)``: two 4 x 4 MACs a cycle in one
product, whose 32-bit partial sum then carries two lanes (the low lane signed, PACK_SHIFT bits;
the high lane above it; one adder adds both, the low lane's sign borrowing from the high one,
which ``hw.systolic.split_lanes`` undoes). The multiplier's second operand is 17 bits (|w_hi
2**12 + w_lo| <= 2**15 + 8), so on an ECP5 it is still one MULT18X18D. The lanes are exact while
the low lane's column sum stays within PACK_SHIFT signed bits: R |a w_lo| < 2**11 with
|a w_lo| <= 64, i.e. up to ``MAX_PACKED_ROWS`` = 31 array rows. ``pack`` travels with the
activation, like ``sel``. A first design with two 8 x 4 multipliers (``a * w = (a * w_hi << 4)
+ a * w_lo``) took twice the DSP blocks, 4.7x the LUTs and 62 against 86 MHz on a 4 x 4 array
(``benchmarks/bench_scalable_pe.py`` at the time); this one shares the multiplier.
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


PACK_SHIFT = 12     # the high lane's position in a packed partial sum
MAX_PACKED_ROWS = (1 << (PACK_SHIFT - 1)) // 64 - 1   # 31: the low lane's column sum stays in range


class ScalablePE(wiring.Component):
    """``PE`` with a packed 4-bit mode (the module docstring): one 8 x 8 MAC or two 4 x 4 MACs
    a cycle, in the same multiplier."""
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
        operand = Signal(signed(PACK_SHIFT + 5))     # w, or w_hi * 2**PACK_SHIFT + w_lo
        m.d.comb += operand.eq(Mux(self.pack_in, (weight[4:8].as_signed() << PACK_SHIFT) + weight[0:4].as_signed(),
                                   weight))
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.pack_out.eq(self.pack_in),
            self.psum_out.eq(self.psum_in + self.a_in * operand),
        ]
        return m
