"""hw/rtl/gemm.py: the requantizer and the whole engine against model.intops, in Amaranth's
simulator (tiny shapes) and under cocotb on Verilator through sim/gemm.py and sim/simulator.py
(the default run: 4x4 and one 8x8 smoke shape; ``-m slow``: the full sweep over 4x4, 8x8 and
16x16 with the ViT-B/32 shapes)."""
import json
import random

import pytest
import torch
from amaranth.sim import Simulator

from hw.cost import Machine, schedule
from hw.rtl import gemm
from model import intops
from model.errors import QexitError
from qexit.cli import main as cli_main
from sim import gemm as verify, harness, packing as host, simulator as runner
from sim.result import Result

needs_simulator = pytest.mark.simulator()


def ideal(size: int) -> Machine:
    """A size x size array whose weights come from a source that always has the next word."""
    return Machine(size, None, 0)


# --------------------------------------------------------------------------- requantizer

def test_requantizer_matches_intops():
    rng = random.Random(3)
    acc = [intops.INT32_MIN, intops.INT32_MAX, 0, -1, 1] + [rng.randint(-2 ** 31, 2 ** 31 - 1) for _ in range(150)]
    bias = [intops.INT32_MAX, intops.INT32_MIN, 0, 0, 0] + [rng.randint(-2 ** 31, 2 ** 31 - 1) for _ in range(150)]
    mult = [2 ** 31 - 1, 2 ** 31 - 1, 0, 2 ** 30, 2 ** 30] + [rng.randint(0, 2 ** 31 - 1) for _ in range(150)]
    shift = [1, 62, 1, 31, 31] + [rng.randint(1, 62) for _ in range(150)]
    for i in range(50):                   # realistic: results inside int8, exact halves included
        shift[5 + i] = 30 + rng.randint(0, 8)
        mult[5 + i] = 2 ** 30
        bias[5 + i] = 0
        acc[5 + i] = rng.randint(-2 ** 15, 2 ** 15)
    total = intops.saturate(torch.tensor(acc) + torch.tensor(bias), intops.INT32_MIN, intops.INT32_MAX)
    expected = intops.requantize(total, torch.tensor(mult), torch.tensor(shift)).tolist()

    dut = gemm.Requantizer()
    got = []

    async def bench(ctx):
        for t in range(len(acc) + dut.LATENCY):
            if t < len(acc):
                ctx.set(dut.acc, acc[t])
                ctx.set(dut.bias, bias[t])
                ctx.set(dut.mult, mult[t])
                ctx.set(dut.shift, shift[t])
            await ctx.tick()
            if t >= dut.LATENCY - 1:
                got.append(ctx.get(dut.y))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got[:len(acc)] == expected


# --------------------------------------------------------------------------- engine in Amaranth's simulator

def simulate_engine(cfg: gemm.GemmConfig, case: dict,
                    source: schedule.WeightSource = schedule.IDEAL) -> tuple[torch.Tensor, int, int]:
    """``sim.packing.drive`` on the harness (engine + memory model) in Amaranth's simulator:
    (outputs, cycles from start to done, RTL counter)."""
    dut = harness.GemmHarness(cfg)
    got = {}

    async def bench(ctx):
        got.update(await host.drive(host.AmaranthDriver(ctx, dut), host.gemm_job(case, cfg.rows, cfg.cols), source))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got["out"], got["cycles"], got["counter"]


@pytest.mark.parametrize("rows,cols,shape", [
    (2, 2, (3, 5, 3)), (3, 2, (5, 7, 5)), (1, 1, (1, 1, 1)), (1, 1, (2, 3, 2)), (1, 1, (1, 3, 2)),
    (2, 3, (1, 5, 4)), (4, 4, (2, 9, 7)), (3, 3, (4, 3, 3)), (2, 4, (6, 2, 9)),
])
def test_engine_bit_exact_and_cycle_exact_in_amaranth_sim(rows, cols, shape):
    cfg = gemm.GemmConfig(rows, cols, max_m=8, max_k=16, max_n=16)
    case = verify.make_case(*shape, seed=sum(shape))
    out, cycles, counter = simulate_engine(cfg, case)
    expected = host.reference(case["a"], case["w"], case["bias"], case["mult"], case["shift"])
    assert torch.equal(out, expected)
    assert cycles == counter == schedule.predict_cycles(rows, cols, *shape)


@pytest.mark.parametrize("rows,cols,shape,bandwidth,latency", [
    (2, 2, (3, 5, 3), 0.5, 0), (3, 2, (5, 7, 5), 1, 7), (4, 4, (2, 9, 7), 3, 2),
    (2, 3, (1, 5, 4), 100, 30), (3, 3, (9, 8, 7), 2.5, 1),
])
def test_streamed_weights_stall_exactly_as_predicted_in_amaranth_sim(rows, cols, shape, bandwidth, latency):
    """A slow or late weight source: outputs still exact, and the stalls exactly as hw/cost/schedule.py says."""
    cfg = gemm.GemmConfig(rows, cols, max_m=16, max_k=16, max_n=16)
    case = verify.make_case(*shape, seed=sum(shape))
    source = schedule.WeightSource(bandwidth, latency)
    out, cycles, counter = simulate_engine(cfg, case, source)
    assert torch.equal(out, host.reference(case["a"], case["w"], case["bias"], case["mult"], case["shift"]))
    assert cycles == counter == schedule.predict_cycles(rows, cols, *shape, source)
    assert cycles > schedule.ideal_cycles(rows, cols, *shape)


@pytest.mark.parametrize("rows,cols,shape,kind", [
    (2, 2, (3, 5, 3), "random"), (3, 2, (5, 7, 5), "random"), (2, 3, (4, 5, 7), "max"),
    (2, 2, (2, 2048, 4), "saturate"),
])
def test_int32_output_path_in_amaranth_sim(rows, cols, shape, kind):
    """raw mode: sat32(a @ w.T + bias) on raw_out, the same cycles as the int8 path."""
    cfg = gemm.GemmConfig(rows, cols, max_m=8, max_k=2048, max_n=16, max_raw_n=8)
    case = dict(verify.make_case(*shape, seed=sum(shape), kind=kind), raw=True)
    out, cycles, counter = simulate_engine(cfg, case)
    expected = host.reference(case["a"], case["w"], case["bias"], case["mult"], case["shift"], raw=True)
    assert torch.equal(out, expected) and torch.equal(expected, intops.gemm(case["a"], case["w"], case["bias"]))
    assert cycles == counter == schedule.predict_cycles(rows, cols, *shape)
    if kind == "saturate":
        assert set(out.unique().tolist()) <= {intops.INT32_MIN, intops.INT32_MAX}


@pytest.mark.parametrize("raw", [False, True])
def test_per_token_bias_in_amaranth_sim(raw):
    """token_bias: output (m, n) adds bias[m, n] from the tbias buffer (the patch embedding)."""
    cfg = gemm.GemmConfig(3, 2, max_m=8, max_k=16, max_n=16, max_raw_n=16, max_bias_n=8)
    case = verify.make_case(6, 7, 5, seed=3)
    case["bias"], case["raw"] = verify.per_token_bias(6, 5, 7, seed=3), raw
    out, cycles, counter = simulate_engine(cfg, case)
    assert torch.equal(out, host.reference(case["a"], case["w"], case["bias"], case["mult"], case["shift"], raw))
    assert cycles == counter == schedule.predict_cycles(3, 2, 6, 7, 5)
    with pytest.raises(QexitError, match="max-bias-n"):
        cfg.check_shape(6, 7, 9, token_bias=True)


def test_int32_output_needs_the_raw_buffer():
    cfg = gemm.GemmConfig(4, 4, max_m=8, max_k=16, max_n=64, max_raw_n=8)
    cfg.check_shape(4, 16, 64)
    with pytest.raises(QexitError, match="max-raw-n"):
        cfg.check_shape(4, 16, 9, raw=True)
    words = gemm.GemmConfig(4, 4, max_m=8, max_k=16, max_n=64, max_raw_n=8, max_raw_words=4)
    assert words.raw_words == 4 and words.buffers["raw"] == (4, 128)
    words.check_shape(2, 16, 8, raw=True)                  # 2 rows x 2 tiles
    with pytest.raises(QexitError, match="holds 4"):
        words.check_shape(3, 16, 8, raw=True)


def test_engine_runs_back_to_back_gemms_in_amaranth_sim():
    cfg = gemm.GemmConfig(2, 2, max_m=8, max_k=8, max_n=8)
    for kind in ("min", "alternating", "random"):
        case = verify.make_case(3, 5, 3, seed=1, kind=kind)
        out, cycles, _ = simulate_engine(cfg, case)
        assert torch.equal(out, host.reference(case["a"], case["w"], case["bias"], case["mult"], case["shift"]))


# --------------------------------------------------------------------------- layouts and input checks

def test_packing_layouts():
    a = torch.arange(2 * 5).reshape(2, 5) - 5
    words = host.pack_activations(a, 4)                  # KT = 2
    assert len(words) == 4
    assert words[0] == int.from_bytes(bytes(v & 0xFF for v in a[0, :4].tolist()), "little")
    assert words[1] == a[0, 4].item() & 0xFF             # zero padding above K
    w = torch.arange(3 * 5).reshape(3, 5) - 7            # N = 3, K = 5 on a 4x2 array: KT 2, NT 2
    words = host.pack_weights(w, 4, 2)
    assert len(words) == 2 * 2 * 4
    assert words[1] == int.from_bytes(bytes(v & 0xFF for v in w[0:2, 1].tolist()), "little")
    assert words[2 * 4 + 0] == w[2, 0].item() & 0xFF     # tile (i=0, j=1): channel 2 only
    out = torch.tensor([[1, -2, 3], [-128, 127, 0]])       # C = 2: NT = 2 words per row
    packed = []
    for r in out.tolist():
        packed += [int.from_bytes(bytes(v & 0xFF for v in r[:2]), "little"),
                   int.from_bytes(bytes(v & 0xFF for v in r[2:] + [0]), "little")]
    assert torch.equal(host.unpack_outputs(packed, 2, 3, 2), out)


def test_config_and_operand_errors():
    with pytest.raises(QexitError, match="rows = 0"):
        gemm.GemmConfig(0, 4)
    cfg = gemm.GemmConfig(4, 4, max_m=8, max_k=16, max_n=16)
    with pytest.raises(QexitError, match="exceeds .* buffers"):
        cfg.check_shape(9, 4, 4)
    with pytest.raises(QexitError, match="K = 0"):
        cfg.check_shape(4, 0, 4)
    case = verify.make_case(2, 3, 4, seed=0)
    bad = dict(case, a=case["a"] + 200)
    with pytest.raises(QexitError, match="outside int8"):
        host.check_operands(bad["a"], bad["w"], bad["bias"], bad["mult"], bad["shift"])
    with pytest.raises(QexitError, match="multiplier"):
        host.check_operands(case["a"], case["w"], case["bias"], case["mult"] + 2 ** 31, case["shift"])
    with pytest.raises(QexitError, match="shift"):
        host.check_operands(case["a"], case["w"], case["bias"], case["mult"], case["shift"] * 0)


def test_bad_operands_stop_before_any_simulation(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("a simulation was started")
    monkeypatch.setattr(runner, "build", no_build)
    cfg = gemm.GemmConfig(4, 4, max_m=8, max_k=16, max_n=16)
    case = verify.make_case(2, 3, 4, seed=0)
    case["w"][0, 0] = -129
    with pytest.raises(QexitError, match="outside int8"):
        verify.run_cases(cfg, [case])
    with pytest.raises(QexitError, match="exceeds"):
        verify.verify_gemm(ideal(4), [(9, 4, 4)], max_m=8)
    with pytest.raises(QexitError, match="precision-scalable"):
        verify.verify_gemm(Machine(4, None, 0, scalable=True), [(2, 4, 4)])


def test_verilog_has_the_streams_and_no_memory_initialisation():
    """(hw/rtl/emit.py's own tests check the patch itself.)"""
    text = gemm.to_verilog(gemm.GemmConfig(2, 3))
    head = text[:text.index(");")]
    for port in ("a_in__payload", "w_in__valid", "p_in__ready", "out__payload", "start", "done",
                 "cycles", "m", "k", "n", "clk", "rst"):
        assert port in head
    assert "mem[0] =" not in text and "a_buf[0]" not in text


# --------------------------------------------------------------------------- cocotb on Verilator (or Icarus)

def _report(res: Result) -> str:
    return f"{res.matched}/{res.total} bit-exact, {res.cycle_errors} cycle errors\n{res.log}"


@needs_simulator
def test_gemm_runner():
    """4x4: non-multiples, corner operands, int32 saturation and random back-pressure."""
    shapes = [(50, 17, 13), (5, 7, 6), (1, 1, 1), (16, 40, 9)]
    res = verify.verify_gemm(ideal(4), shapes, seed=11, corners=True, backpressure=True)
    assert res.passed, _report(res)
    assert len(res.records) == len(shapes) + len(verify.CORNERS) + 1
    assert res.cycles_measured == res.cycles_predicted
    assert all(c["cycles_counter"] == c["cycles_measured"] for c in res.records)


@needs_simulator
@pytest.mark.parametrize("bandwidth,latency", [(2, 10), (16, 0), (0.7, 3)])
def test_streamed_weights_runner(bandwidth, latency):
    """The weights from a memory model of a given bandwidth and first-word latency: every
    output exact, and the stalls as hw/cost/schedule.py predicts them, cycle for cycle."""
    shapes = [(50, 40, 13), (3, 17, 9)]
    res = verify.verify_gemm(Machine(4, bandwidth, latency), shapes, seed=12)
    assert res.passed and res.cycle_errors == 0, _report(res)
    assert all(c["cycles_predicted"] is not None for c in res.records)


@pytest.mark.simulator("verilator")
def test_free_running_harness_counts_the_ideal_cycles():
    out = verify.free_running(gemm.GemmConfig(4, 4, max_m=64, max_k=64, max_n=64), 50, 40, 13)
    assert out["cycles"] == out["counter"] == schedule.ideal_cycles(4, 4, 50, 40, 13)


@needs_simulator
def test_int32_output_runner():
    res = verify.verify_gemm(Machine(4, 3, 5), [(50, 40, 13), (7, 9, 50)], seed=13, corners=True,
                             backpressure=True, raw=True)
    assert res.passed and res.cycle_errors == 0, _report(res)


@needs_simulator
def test_per_token_bias_runner():
    res = verify.verify_gemm(Machine(4, 4, 2), [(49, 17, 64), (5, 9, 6)], seed=14, corners=True,
                             backpressure=True, token_bias=True)
    assert res.passed and res.cycle_errors == 0, _report(res)


@needs_simulator
def test_reset_mid_gemm_runner():
    res = verify.verify_reset(gemm.GemmConfig(4, 4), (50, 40, 13), seed=2)
    assert res.passed, _report(res)


@pytest.mark.simulator("icarus")
def test_icarus_fallback_runner():
    res = verify.verify_gemm(ideal(4), [(9, 20, 11)], seed=6, simulator="icarus")
    assert res.passed and res.simulator == "icarus", _report(res)


@needs_simulator
def test_smoke_8x8_runner():
    res = verify.verify_gemm(ideal(8), [(50, 96, 40)], seed=4)
    assert res.passed, _report(res)


@needs_simulator
def test_runner_catches_a_broken_requantizer(monkeypatch):
    """The checks can fail: an engine whose int8 saturation wraps instead is caught, with the
    case and its seed named (model.intops is computed independently of the RTL)."""
    monkeypatch.setattr(gemm, "clamp", lambda value, lo, hi: value)
    res = verify.verify_gemm(ideal(4), [(6, 9, 7)], seed=5)
    assert not res.passed and res.mismatches > 0
    assert "seed 5" in res.log


# --------------------------------------------------------------------------- the CLI

def test_rtl_gemm_writes_verilog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["rtl", "gemm", "--rows", "2", "--cols", "3", "--out", "x/g.v"]) == 0
    text = (tmp_path / "reports" / "rtl-gemm" / "gemm_2x3.v").read_text()
    assert "module qexit_gemm_2x3" in text and (tmp_path / "x" / "g.v").read_text() == text
    assert (tmp_path / "reports" / "rtl-gemm" / "summary.json").exists()


@needs_simulator
def test_verify_gemm_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["verify", "gemm", "--rows", "4", "--cols", "4", "--shapes", "7x9x5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "bit-exact: " in out and "reset mid-GEMM, then a GEMM: passed" in out
    s = json.loads((tmp_path / "reports" / "verify-gemm" / "summary.json").read_text())
    for key in ("matched", "total", "mismatches", "cycles_measured", "cycles_predicted", "utilization"):
        assert key in s
    assert s["matched"] == s["total"] and s["cycles_measured"] == s["cycles_predicted"]


# --------------------------------------------------------------------------- the sweep (-m slow)

SWEEP = {4: [], 8: [], 16: [(50, 768, 768), (50, 768, 3072)]}


@pytest.mark.slow
@needs_simulator
@pytest.mark.parametrize("size", [4, 8, 16])
def test_sweep_runner(size):
    """>= 20 random shapes (>= 10,000 outputs) per array size, 50x17x13 among them, the corner
    operands, and at 16x16 the ViT-B/32 shapes; every output and every cycle count exact."""
    seed = 100 * size       # = qexit verify gemm --rows S --cols S --random-shapes 21 --seed 100S
    shapes = [(50, 17, 13)] + SWEEP[size] + verify.random_shapes(21, seed)
    res = verify.verify_gemm(ideal(size), shapes, seed=seed, corners=True, backpressure=True)
    assert res.passed, _report(res)
    assert len([c for c in res.records if c["name"].startswith("random")]) >= 20
    assert res.total >= 10_000 and res.mismatches == 0 and res.cycle_errors == 0
