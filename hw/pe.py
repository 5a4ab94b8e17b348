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
