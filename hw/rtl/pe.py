"""One processing element of the weight-stationary systolic array.

An int8 x int8 multiply-accumulate with an int32 partial sum, and two int8 weight registers
(the double buffer of the stationary operand). Every cycle the PE

* passes the activation and its bank bit one column to the right (``a_out``, ``sel_out``);
* adds ``a_in * w[sel_in]`` to the partial sum from the PE above and passes it down
  (``psum_out``), one cycle later;
* if ``load`` is high, writes ``load_weight`` into bank ``load_bank``. Writing the bank in
  use takes effect from the next cycle; the schedule only writes the idle bank.

The partial sum cannot overflow: the array has at most 2**17 - 1 rows in total over all K
tiles (see ``hw.rtl.timing.MAX_K``), and |a * w| <= 2**14.

**Precision-scalable** (``ScalablePE``; the layer engine does not use it yet): with
``pack_in`` high the weight byte holds two signed 4-bit weights ``w_lo`` (low nibble) and
``w_hi`` (high nibble) for two output columns, the activation is a 4-bit value, and the PE's
one multiplier computes ``a * (w_hi * 2**PACK_SHIFT + w_lo)``: two 4 x 4 MACs a cycle in one
product, whose 32-bit partial sum then carries two lanes (the low lane signed, PACK_SHIFT bits;
the high lane above it; one adder adds both, the low lane's sign borrowing from the high one,
which ``hw.rtl.systolic.split_lanes`` undoes). The multiplier's second operand is 17 bits (|w_hi
2**12 + w_lo| <= 2**15 + 8), so on an ECP5 it is still one MULT18X18D. The lanes are exact while
the low lane's column sum stays within PACK_SHIFT signed bits: R |a w_lo| < 2**11 with
|a w_lo| <= 64, i.e. up to ``MAX_PACKED_ROWS`` = 31 array rows. ``pack`` travels with the
activation, like ``sel``. Each bank's packed operand is formed from its register alone, so
the sel/pack path to the multiplier is one 4:1 choice. On the ECP5 (yosys + nextpnr, the
array with registered ports, ``benchmarks/bench_scalable_pe.py`` →
``benchmarks/results/bench_scalable_pe.json``): 4 x 4 1,331 LUT4 and 16 MULT18X18D at 76.97 MHz
against the INT8 array's 434 LUT4, 16 and 86.44 MHz; 8 x 8 5,267 LUT4, 64, 64.70 MHz against
2,354, 64, 66.30 MHz. Two earlier designs, measured the same way on 4 x 4: two 8 x 4
multipliers (``a * w = (a * w_hi << 4) + a * w_lo``) 2,027 LUT4, 32 MULT18X18D, 62.01 MHz; the
packed operand formed after the bank choice 1,091 LUT4, 68.48 MHz (8 x 8: 4,307, 57.48 MHz).
"""

from amaranth import Cat, Module, Mux, Signal, signed
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
        m.d.sync += [
            self.a_out.eq(self.a_in),
            self.sel_out.eq(self.sel_in),
            self.psum_out.eq(self.psum_in + self.a_in * self.operand(m, w0, w1)),
        ]
        return m

    def operand(self, m: Module, w0, w1):
        """The multiplier's weight operand this cycle: the bank ``sel_in`` picks."""
        return Mux(self.sel_in, w1, w0)


PACK_SHIFT = 12     # the high lane's position in a packed partial sum
MAX_PACKED_ROWS = (1 << (PACK_SHIFT - 1)) // 64 - 1   # 31: the low lane's column sum stays in range


class ScalablePE(PE):
    """``PE`` with a packed 4-bit mode (the module docstring): one 8 x 8 MAC or two 4 x 4 MACs
    a cycle, in the same multiplier."""
    pack_in: In(1)
    pack_out: Out(1)

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.sync += self.pack_out.eq(self.pack_in)
        return m

    def operand(self, m: Module, w0, w1):
        # Each bank's packed operand comes from its register alone (off the sel/pack path):
        # w_hi 2**12 + w_lo = (w_hi - [w_lo < 0]) 2**12 + (w_lo mod 2**12), a 4-bit decrement.
        operands = []
        for n, w in enumerate((w0, w1)):
            packed = Signal(signed(PACK_SHIFT + 5), name=f"packed{n}")
            m.d.comb += packed.eq(Cat(w[0:4], w[3].replicate(PACK_SHIFT - 4), w[4:8].as_signed() - w[3]))
            operands.append((w, packed))
        operand = Signal(signed(PACK_SHIFT + 5))     # w, or w_hi * 2**PACK_SHIFT + w_lo
        with m.Switch(Cat(self.sel_in, self.pack_in)):
            for sel in (0, 1):
                for pack in (0, 1):
                    with m.Case(sel | pack << 1):
                        m.d.comb += operand.eq(operands[sel][pack])
        return operand
