"""hw/pe.py: one MAC with a double-buffered weight, against a cycle-by-cycle Python model."""
import random

from amaranth.sim import Simulator

from hw.pe import PE


def run_pe(steps):
    """Drive a PE with ``steps`` (dicts of inputs, one per cycle); return its outputs per cycle."""
    dut = PE()
    outs = []

    async def bench(ctx):
        for s in steps:
            for name, value in s.items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            outs.append((ctx.get(dut.a_out), ctx.get(dut.sel_out), ctx.get(dut.psum_out)))

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
