"""The R x C weight-stationary systolic array (see ``hw.cost.schedule`` for the dataflow and timing).

Interface, all unskewed (the array skews and deskews internally):

* ``a``, ``sel``: one activation row (R int8 values, element r for array row r) and the weight
  bank it uses, entering together. Row r is delayed r cycles, so the row meets the PEs as a
  diagonal wavefront; activations move one column right per cycle.
* ``load``, ``load_bank``, ``load_row``, ``load_weights``: one weight row (C int8 values)
  for array row ``load_row``. Column c sees it c cycles later, following the wavefront, so a
  bank is free again as soon as the last token of the tile that used it has passed.
* ``psum``: the C int32 column sums of one activation row, ``LATENCY = R + C - 1`` cycles after
  it entered. Column c's sum leaves the bottom PE at cycle R + c and is delayed C - 1 - c
  cycles, so all C sums of a row leave together.

Nothing inside has a valid bit: rows that carry no data compute garbage that the GEMM
controller ignores (its tokens travel beside the data).

``scalable=True`` builds the array from ``hw.rtl.pe.ScalablePE`` (the precision-scalable
PE): a ``pack`` bit enters with each activation row, and a packed row (4-bit activations, two
signed 4-bit weights a weight byte) gives two column sums per column: the low nibbles' on
``psum`` and the high nibbles' on ``psum_hi`` (``split_lanes`` separates the packed partial
sum at the bottom; an unpacked row gives its sum on ``psum`` and 0 on ``psum_hi``). So an
R x C array computes 2C outputs a row, with one multiplier a PE, as the INT8 array has. The
GEMM engine's controller, accumulator and output path do not use it yet: ``hw.cost`` prices
packed GEMMs as a model.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hw.rtl.pe import ACT, MAX_PACKED_ROWS, PACK_SHIFT, PSUM, WEIGHT, PE, ScalablePE
from hw.rtl.timing import array_latency, check_array
from model.errors import QexitError


def delay(m: Module, value, cycles: int, name: str):
    """``value`` delayed by ``cycles`` register stages (``value`` itself when 0)."""
    for n in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{n + 1}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def split_lanes(value: int) -> tuple[int, int]:
    """A packed partial sum (an int) as its (low, high) lanes: what the scalable array's output does."""
    lo = ((value + (1 << (PACK_SHIFT - 1))) % (1 << PACK_SHIFT)) - (1 << (PACK_SHIFT - 1))
    return lo, (value - lo) >> PACK_SHIFT


class SystolicArray(wiring.Component):
    def __init__(self, rows: int, cols: int, scalable: bool = False):
        check_array(rows, cols)
        if scalable and rows > MAX_PACKED_ROWS:
            raise QexitError(f"a precision-scalable array has at most {MAX_PACKED_ROWS} rows (its packed low lane "
                             f"would overflow); got {rows}")
        self.rows, self.cols, self.scalable = rows, cols, scalable
        self.latency = array_latency(rows, cols)
        ports = {
            "a": In(data.ArrayLayout(ACT, rows)),
            "sel": In(1),
            "load": In(1),
            "load_bank": In(1),
            "load_row": In(unsigned(max(1, ceil_log2(rows)))),
            "load_weights": In(data.ArrayLayout(WEIGHT, cols)),
            "psum": Out(data.ArrayLayout(PSUM, cols)),
        }
        if scalable:
            ports.update({"pack": In(1), "psum_hi": Out(data.ArrayLayout(PSUM, cols))})
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        pe = [[(ScalablePE if self.scalable else PE)() for _ in range(cols)] for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{r}_{c}"] = pe[r][c]

        # Activations: skew row r by r cycles, then pass them right along the row.
        for r in range(rows):
            m.d.comb += [pe[r][0].a_in.eq(delay(m, self.a[r], r, f"a{r}")),
                         pe[r][0].sel_in.eq(delay(m, self.sel, r, f"sel{r}"))]
            for c in range(1, cols):
                m.d.comb += [pe[r][c].a_in.eq(pe[r][c - 1].a_out),
                             pe[r][c].sel_in.eq(pe[r][c - 1].sel_out)]
            if self.scalable:
                m.d.comb += pe[r][0].pack_in.eq(delay(m, self.pack, r, f"pack{r}"))
                for c in range(1, cols):
                    m.d.comb += pe[r][c].pack_in.eq(pe[r][c - 1].pack_out)

        # Weight loads: column c sees the bus c cycles late; the row address picks the PE.
        for c in range(cols):
            load = delay(m, self.load, c, f"load{c}")
            bank = delay(m, self.load_bank, c, f"bank{c}")
            row = delay(m, self.load_row, c, f"row{c}")
            weight = delay(m, self.load_weights[c], c, f"w{c}")
            for r in range(rows):
                m.d.comb += [pe[r][c].load.eq(load & (row == r)),
                             pe[r][c].load_bank.eq(bank),
                             pe[r][c].load_weight.eq(weight)]

        # Partial sums flow down each column; deskew the bottom row's outputs.
        for c in range(cols):
            m.d.comb += pe[0][c].psum_in.eq(0)
            for r in range(1, rows):
                m.d.comb += pe[r][c].psum_in.eq(pe[r - 1][c].psum_out)
            out = delay(m, pe[rows - 1][c].psum_out, cols - 1 - c, f"out{c}")
            if not self.scalable:
                m.d.comb += self.psum[c].eq(out)
                continue
            packed = delay(m, pe[rows - 1][c].pack_out, cols - 1 - c, f"packed{c}")
            lo = out[:PACK_SHIFT].as_signed()
            m.d.comb += [self.psum[c].eq(Mux(packed, lo, out)),
                         self.psum_hi[c].eq(Mux(packed, (out - lo) >> PACK_SHIFT, 0))]
        return m
