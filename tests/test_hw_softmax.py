"""hw/rtl/softmax.py: the streaming softmax unit against model.intops.softmax, in Amaranth's
simulator (small rows, with and without back-pressure, and its cycle count) and under cocotb
on Verilator through sim/units.py (random constants and rows, int32 corners)."""
import gc
import random
import warnings

import pytest
import torch
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from hw.rtl import softmax
from model import intops
from model.errors import QexitError
from model.exits.fixed import GATE_PROB_BITS, Z_BITS
from sim import units

needs_simulator = pytest.mark.simulator()
CONSTANTS = ("pre", "x0", "qb", "qc")


def simulate(rows: list[list[int]], prm: dict, max_row: int = 8, stall_seed: int | None = None, lanes: int = 1,
             prob_bits: int = intops.PROB_BITS):
    """Stream ``rows`` (one length) through a SoftmaxUnit of ``lanes`` lanes in Amaranth's
    simulator: (outputs, the cycle at which each output beat was taken). The unused lanes of a
    row's last beat carry INT32_MAX (which must be ignored) and must come out zero.
    ``stall_seed`` adds random input gaps and output ready drops."""
    dut = softmax.SoftmaxUnit(max_row, lanes, prob_bits)
    rng = random.Random(stall_seed) if stall_seed is not None else None
    got, stamps = [], []
    t = len(rows[0])
    w = -(-t // lanes)
    beats = [(row + [intops.INT32_MAX] * (w * lanes - t))[i * lanes:(i + 1) * lanes] for row in rows for i in range(w)]

    async def feed(ctx):
        ctx.set(dut.length, len(rows[0]))
        for k in CONSTANTS:
            ctx.set(getattr(dut, k), prm[k])
        for s in beats:
            while rng is not None and rng.random() < 0.3:
                ctx.set(dut.inp.valid, 0)
                await ctx.tick()
            ctx.set(dut.inp.payload, s)
            ctx.set(dut.inp.valid, 1)
            await ctx.tick().until(dut.inp.ready)
        ctx.set(dut.inp.valid, 0)

    async def drain(ctx):
        cycle = 0
        while len(got) < len(rows) * w * lanes:
            ready = 1 if rng is None or rng.random() < 0.6 else 0
            ctx.set(dut.out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            cycle += 1
            assert cycle < 10000, "the softmax unit stalled"
            if ready and valid:
                got.extend(payload[c] for c in range(lanes))
                stamps.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    padded = [got[r * w * lanes:(r + 1) * w * lanes] for r in range(len(rows))]
    assert all(v == 0 for row in padded for v in row[t:]), "padding lanes must be zero"
    return [v for row in padded for v in row[:t]], stamps


def reference(rows: list[list[int]], prm: dict, prob_bits: int = intops.PROB_BITS) -> list[int]:
    return intops.softmax(torch.tensor(rows), *(torch.tensor(prm[k]) for k in CONSTANTS),
                          prob_bits=prob_bits).flatten().tolist()


@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("s_in", [1e-3, 0.05])
@pytest.mark.parametrize("length", [5, 1])
def test_softmax_unit_matches_intops_in_amaranth_sim(s_in, length, lanes):
    prm = {k: int(v) for k, v in intops.softmax_params(s_in).items()}
    g = torch.Generator().manual_seed(length)
    rows = torch.randint(-3000, 3001, (3, length), generator=g)
    rows[1] = intops.INT32_MIN                      # int32 extremes: d = -(2**32 - 1)
    rows[1, 0] = intops.INT32_MAX
    rows, expected = rows.tolist(), reference(rows.tolist(), prm)
    got, stamps = simulate(rows, prm, lanes=lanes)
    assert got == expected
    # no gaps, no stalls: one row every row_cycles(T), back to back
    w = -(-length // lanes)
    ends = stamps[w - 1::w]
    assert [b - a for a, b in zip(ends, ends[1:])] == [softmax.row_cycles(length, lanes)] * 2
    got, _ = simulate(rows, prm, stall_seed=length)
    assert got == expected


@pytest.mark.parametrize("lanes", [1, 3])
def test_softmax_unit_random_constants_in_amaranth_sim(lanes):
    """Constants anywhere in the checked ranges (pre from -31 to 31), full-range scores, a full buffer."""
    rng = random.Random(7)
    for pre in (-31, -3, 0, 4, 31):
        x0 = rng.randint(*intops.SOFTMAX_X0)
        prm = {"pre": pre, "x0": x0, "qb": rng.randint(max(intops.SOFTMAX_QB[0], x0 + 1), intops.SOFTMAX_QB[1]),
               "qc": rng.randint(*intops.SOFTMAX_QC)}
        spread = 2 ** max(4, min(31, 12 + pre))
        rows = [[rng.randint(-spread, spread) for _ in range(8)],
                [rng.randint(intops.INT32_MIN, intops.INT32_MAX) for _ in range(8)]]
        got, _ = simulate(rows, prm, lanes=lanes)
        assert got == reference(rows, prm), prm


def test_softmax_unit_with_15_bit_probabilities():
    """The exit gate's softmax: the same i-exp with 15-bit outputs (``prob_bits``)."""
    prm = {k: int(v) for k, v in intops.softmax_params(2.0 ** -Z_BITS).items()}
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(-2 ** 20, 2 ** 20, (4, 10), generator=g)
    rows[1] = torch.arange(10) * 5000                    # a confident row: p near 2**15 - 1
    rows[2] = 7                                          # all equal
    rows = rows.tolist()
    got, _ = simulate(rows, prm, max_row=10, lanes=4, prob_bits=GATE_PROB_BITS)
    assert got == reference(rows, prm, GATE_PROB_BITS)
    assert max(got) > 2 ** 14


@pytest.mark.parametrize("max_row", [0, intops.SOFTMAX_MAX_ROW + 1, 2.5])
def test_softmax_unit_rejects_bad_max_row(max_row):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the refused, never elaborated object
        with pytest.raises(QexitError, match="max_row"):
            softmax.SoftmaxUnit(max_row)
        gc.collect()


def test_softmax_cases_cover_lengths_and_corners():
    cases = units.softmax_cases(230, seed=1)
    assert sum(c["rows"] for c in cases) == 230
    lengths = [c["ports"]["length"] for c in cases]
    assert lengths[:4] == [units.SM_MAX_ROW, 1, 2, 3] and max(lengths) <= units.SM_MAX_ROW
    for c in cases:
        t = c["ports"]["length"]
        intops.check_softmax_params(*(c["ports"][k] for k in CONSTANTS))
        w = -(-t // units.LANES)
        assert c["inputs"].shape == c["expected"].shape == (c["rows"] * w, units.LANES)
        assert c["expected"].min() >= 0 and c["expected"].max() <= intops.INT8_MAX
        assert (c["inputs"].reshape(-1, w * units.LANES)[2, :t] == intops.INT32_MIN).all()


@needs_simulator
def test_softmax_unit_bit_exact_on_verilator():
    res = units.verify_unit("softmax", 300, seed=11)
    assert res.passed, res.summary()
    assert res.matched == res.total > 0 and res.rows == 300


@needs_simulator
def test_runner_catches_a_broken_softmax(monkeypatch):
    """The check can fail: a unit whose final saturation is missing (p = 128 wraps to -128 in
    int8, as for every row of one score) is caught (model.intops is computed independently)."""
    monkeypatch.setattr(softmax, "clamp", lambda value, lo, hi: value)
    res = units.verify_unit("softmax", 120, seed=3)
    assert not res.passed and res.matched < res.total
    assert any(m["got"] == -128 and m["expected"] == 127 for m in res.first_mismatches)
