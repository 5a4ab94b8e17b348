"""hw/rtl/pe.py: one MAC with a double-buffered weight, against a cycle-by-cycle Python model."""
import random

from amaranth.sim import Simulator

from hw.rtl.pe import PACK_SHIFT, PE, ScalablePE
from hw.rtl.systolic import split_lanes


def run_pe(steps, dut=None, outputs=("a_out", "sel_out", "psum_out")):
    """Drive a PE with ``steps`` (dicts of inputs, one per cycle); return its outputs per cycle."""
    dut = PE() if dut is None else dut
    outs = []

    async def bench(ctx):
        for s in steps:
            for name, value in s.items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            outs.append(tuple(ctx.get(getattr(dut, name)) for name in outputs))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return outs


def model(steps):
    """psum_out(t+1) = psum_in(t) + a_in(t) * w[sel_in(t)]; a load at t is visible from t+1."""
    w = [0, 0]
    outs = []
    for s in steps:
        product = s["a_in"] * w[s["sel_in"]]
        if s["load"]:
            w[s["load_bank"]] = s["load_weight"]
        outs.append((s["a_in"], s["sel_in"], s["psum_in"] + product))
    return outs


def test_pe_matches_model_with_random_loads_and_bank_switches():
    rng = random.Random(7)
    extremes = [-128, 127, -1, 0, 1]
    steps = []
    for _ in range(300):
        pick = lambda: rng.choice(extremes) if rng.random() < 0.3 else rng.randint(-128, 127)
        steps.append({"a_in": pick(), "sel_in": rng.randint(0, 1),
                      "psum_in": rng.randint(-2 ** 30, 2 ** 30),
                      "load": int(rng.random() < 0.3), "load_bank": rng.randint(0, 1),
                      "load_weight": pick()})
    assert run_pe(steps) == model(steps)


def test_pe_extreme_product():
    steps = [{"a_in": 0, "sel_in": 0, "psum_in": 0, "load": 1, "load_bank": 1, "load_weight": -128},
             {"a_in": -128, "sel_in": 1, "psum_in": 2 ** 31 - 1 - 16384, "load": 0,
              "load_bank": 0, "load_weight": 0}]
    assert run_pe(steps)[1][2] == 2 ** 31 - 1


def nibbles(w: int) -> tuple[int, int]:
    """The weight byte's (low, high) signed 4-bit values."""
    b = w & 0xFF
    lo, hi = b & 15, b >> 4
    return lo - 16 * (lo >= 8), hi - 16 * (hi >= 8)


def test_scalable_pe_does_one_8bit_mac_or_two_4bit_macs():
    """Unpacked: a * w, as PE. Packed (4-bit activations): a * w_lo + (a * w_hi) * 2**PACK_SHIFT,
    w_lo and w_hi the byte's signed nibbles."""
    rng = random.Random(11)
    w = [0, 0]
    steps, expect = [], []
    for _ in range(400):
        pack = int(rng.random() < 0.5)
        a = rng.randint(-8, 7) if pack else rng.choice([-128, 127, rng.randint(-128, 127)])
        s = {"a_in": a, "sel_in": rng.randint(0, 1), "pack_in": pack, "psum_in": rng.randint(-2 ** 24, 2 ** 24),
             "load": int(rng.random() < 0.3), "load_bank": rng.randint(0, 1),
             "load_weight": rng.choice([-128, 127, -1, 0, rng.randint(-128, 127)])}
        weight = w[s["sel_in"]]
        lo, hi = nibbles(weight)
        product = a * lo + (a * hi << PACK_SHIFT) if pack else a * weight
        if s["load"]:
            w[s["load_bank"]] = s["load_weight"]
        steps.append(s)
        expect.append((a, s["sel_in"], pack, s["psum_in"] + product))
    assert run_pe(steps, ScalablePE(), ("a_out", "sel_out", "pack_out", "psum_out")) == expect


def test_split_lanes_undoes_the_packing():
    rng = random.Random(3)
    half = 2 ** (PACK_SHIFT - 1)
    cases = [(-half, -half), (half - 1, half - 1), (-1, 0), (0, -1), (-1, -1)]
    cases += [(rng.randint(-half, half - 1), rng.randint(-2 ** 15, 2 ** 15 - 1)) for _ in range(1000)]
    for lo, hi in cases:
        assert split_lanes(hi * 2 ** PACK_SHIFT + lo) == (lo, hi)
