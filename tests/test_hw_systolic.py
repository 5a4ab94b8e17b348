"""hw/rtl/systolic.py: the skewed array computes a @ W per row, and switches weight banks per row."""
import gc
import json
import random
import warnings

import pytest
import torch
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from hw.rtl.emit import to_verilog
from hw.rtl.pe import MAX_PACKED_ROWS
from hw.rtl.systolic import SystolicArray
from model.errors import QexitError
from sim import simulator as runner
from sim.packing import lanes_to_words, words_to_lanes


def run_array(rows, cols, loads, stream, scalable=False):
    """``loads``: (cycle, bank, row, weights) tuples; ``stream``: (cycle, activations, bank) or,
    on a scalable array, (cycle, activations, bank, pack).

    Returns the array's ``psum`` row at every cycle (with ``psum_hi``, a pair, when scalable)."""
    dut = SystolicArray(rows, cols, scalable)
    horizon = max([c for c, *_ in loads] + [c for c, *_ in stream]) + dut.latency + cols + 2
    seen = []

    async def bench(ctx):
        for t in range(horizon):
            ctx.set(dut.load, 0)
            for c, bank, row, weights in loads:
                if c == t:
                    ctx.set(dut.load, 1)
                    ctx.set(dut.load_bank, bank)
                    ctx.set(dut.load_row, row)
                    for i, w in enumerate(weights):
                        ctx.set(dut.load_weights[i], w)
            for c, acts, bank, *pack in stream:
                if c == t:
                    for i, a in enumerate(acts):
                        ctx.set(dut.a[i], a)
                    ctx.set(dut.sel, bank)
                    if scalable:
                        ctx.set(dut.pack, pack[0])
            psum = [ctx.get(dut.psum[i]) for i in range(cols)]
            seen.append((psum, [ctx.get(dut.psum_hi[i]) for i in range(cols)]) if scalable else psum)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return dut.latency, seen


def matvec(acts, weights):
    """weights[r][c] sits at PE (r, c): column sums of acts[r] * weights[r][c]."""
    return [sum(a * w[c] for a, w in zip(acts, weights)) for c in range(len(weights[0]))]


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (2, 5), (4, 4)])
def test_array_computes_rows_and_switches_banks(rows, cols):
    rng = random.Random(rows * 10 + cols)
    rnd = lambda n: [rng.choice([-128, 127]) if rng.random() < 0.2 else rng.randint(-128, 127)
                     for _ in range(n)]
    w0 = [rnd(cols) for _ in range(rows)]
    w1 = [rnd(cols) for _ in range(rows)]
    # bank 0 loads first; bank 1 loads while bank-0 rows stream (the double buffer)
    loads = [(r, 0, r, w0[r]) for r in range(rows)]
    start = rows
    loads += [(start + r, 1, r, w1[r]) for r in range(rows)]
    acts = [rnd(rows) for _ in range(8)]
    stream = [(start + t, acts[t], 0) for t in range(4)]
    stream += [(start + rows + 4 + t, acts[4 + t], 1) for t in range(4)]
    latency, seen = run_array(rows, cols, loads, stream)
    assert latency == rows + cols - 1
    for cycle, a, bank in stream:
        assert seen[cycle + latency] == matvec(a, w1 if bank else w0)


def test_back_to_back_rows_with_a_bank_switch_between_them():
    rows, cols = 3, 3
    w0 = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    w1 = [[-1, 0, 1], [-128, 127, 0], [2, 2, 2]]
    loads = [(r, 0, r, w0[r]) for r in range(rows)] + [(3 + r, 1, r, w1[r]) for r in range(rows)]
    # row at cycle 6 still uses bank 0, the next cycle's row bank 1: no gap between tiles
    stream = [(6, [1, 1, 1], 0), (7, [1, 1, 1], 1), (8, [-128, 127, 3], 1)]
    latency, seen = run_array(rows, cols, loads, stream)
    for cycle, a, bank in stream:
        assert seen[cycle + latency] == matvec(a, w1 if bank else w0)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 2), (4, 4), (31, 3)])
def test_scalable_array_packs_two_4bit_columns_a_pe(rows, cols):
    """Each weight byte holds two signed 4-bit weights (low nibble: output column c, high: column
    C + c). A packed row of 4-bit activations gives both column sums; an unpacked row, in the
    same stream and the same bank, the 8-bit product of the whole bytes."""
    rng = random.Random(rows * 100 + cols)
    w4 = lambda: rng.choice([-8, 7, rng.randint(-8, 7)])
    lo = [[w4() for _ in range(cols)] for _ in range(rows)]
    hi = [[w4() for _ in range(cols)] for _ in range(rows)]
    signed8 = [[(h << 4) | (l & 15) for l, h in zip(lr, hr)] for lr, hr in zip(lo, hi)]   # already int8 range
    loads = [(r, 0, r, signed8[r]) for r in range(rows)]
    stream = []
    for t in range(12):
        pack = t % 3 != 2
        acts = [rng.randint(-8, 7) if pack else rng.randint(-128, 127) for _ in range(rows)]
        stream.append((rows + t, acts, 0, int(pack)))
    latency, seen = run_array(rows, cols, loads, stream, scalable=True)
    assert latency == rows + cols - 1
    for cycle, a, _, pack in stream:
        got = seen[cycle + latency]
        if pack:
            assert got == (matvec(a, lo), matvec(a, hi))
        else:
            assert got == (matvec(a, signed8), [0] * cols)


def test_scalable_array_refuses_rows_its_low_lane_cannot_hold():


    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the refused and the never elaborated objects
        SystolicArray(MAX_PACKED_ROWS, 2, scalable=True)
        with pytest.raises(QexitError, match=f"at most {MAX_PACKED_ROWS} rows"):
            SystolicArray(MAX_PACKED_ROWS + 1, 2, scalable=True)
        gc.collect()


@pytest.mark.simulator()
@pytest.mark.parametrize("scalable", [False, True])
def test_array_under_cocotb(scalable, tmp_path):
    """The same kind of schedule through the Verilog of both arrays under cocotb and the default
    simulator (``sim.tb.array``): every sampled column sum against the host's own."""


    rows, cols = 8, 3
    rng = random.Random(5 + scalable)
    w4 = lambda: rng.choice([-8, 7, rng.randint(-8, 7)])
    lo = [[w4() for _ in range(cols)] for _ in range(rows)]
    hi = [[w4() for _ in range(cols)] for _ in range(rows)]
    signed8 = [[(h << 4) | (l & 15) for l, h in zip(lr, hr)] for lr, hr in zip(lo, hi)]   # already int8 range
    w1 = [[rng.randint(-128, 127) for _ in range(cols)] for _ in range(rows)]
    word = lambda values, bits: lanes_to_words(torch.tensor([values]), bits)[0]
    loads = [(r, 0, r, signed8[r]) for r in range(rows)] + [(rows + r, 1, r, w1[r]) for r in range(rows)]
    stream = []
    for t in range(24):
        pack = int(scalable and t % 3 != 2)
        bank = int(t >= 12 and not pack)
        acts = [rng.randint(-8, 7) if pack else rng.choice([-128, 127, rng.randint(-128, 127)]) for _ in range(rows)]
        stream.append((rows + t, acts, bank, pack))
    top = f"tb_array_{'scalable' if scalable else 'int8'}"
    array = SystolicArray(rows, cols, scalable)
    b = runner.build(to_verilog(array, top), top)
    cases, results = tmp_path / "cases.json", tmp_path / "results.json"
    horizon = stream[-1][0] + array.latency + 2
    cases.write_text(json.dumps({"horizon": horizon,
                                 "loads": [(c, bank, row, word(w, 8)) for c, bank, row, w in loads],
                                 "stream": [(c, word(a, 8), bank, pack) for c, a, bank, pack in stream]}))
    res = runner.run(b, "sim.tb.array", folder=tmp_path / "run",
                     settings={"QEXIT_TB_CASES": str(cases), "QEXIT_TB_RESULTS": str(results)})
    assert res.passed, runner.log_tail(res)
    seen = json.loads(results.read_text())
    for cycle, a, bank, pack in stream:
        psum, psum_hi = (words_to_lanes([w], cols, 32)[0].tolist() for w in seen[cycle + array.latency])
        if pack:
            assert (psum, psum_hi) == (matvec(a, lo), matvec(a, hi))
        else:
            assert (psum, psum_hi) == (matvec(a, w1 if bank else signed8), [0] * cols)
