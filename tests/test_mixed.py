"""qexit mixed: utilization-aware costs, the precision-scalable engine, the bench's
restart from cached 8-bit tokens, the allocators and the command end to end on the tiny ViT."""
import json

import numpy as np
import pytest
import torch

from hw import cost, program
from hw.cost import schedule, tables
from model import flops
from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.exits.thresholds import route
from model.golden import Golden
from model.quantize import calibrate, from_scales
from qexit.cli import main
from studies import mixed


def test_expected_bops_by_hand():
    """TINY: 50 tokens, width 16, hidden 32, 16 patches of 16 pixels, 384-d embedding, 10 classes."""
    from tests.conftest import TINY as cfg
    t, d, h = 50, 16, 32
    lin = t * d * 3 * d + t * d * d + t * d * h + t * h * d
    att = t * t * d
    assert flops.block_bops(cfg, 4, 6) == lin * 24 + att * 36 + att * 48
    assert flops.block_bops(cfg) == (lin + 2 * att) * 64
    head = (d * 128 + 128 * 384 + 384 * 10) * 64
    embed, final = 49 * 16 * d * 64, (d * 384 + 384 * 10) * 64
    # half the images exit after block 1 (its head on), half run block 2 at 4/4 and the final head
    got = mixed.expected_bops(cfg, ((8, 8), (4, 4)), [1.0, 0.5], [1], 128, 0.5)
    assert got == embed + flops.block_bops(cfg, 8, 8) + 0.5 * flops.block_bops(cfg, 4, 4) + head + 0.5 * final


@pytest.fixture(scope="module")
def shipped_scales():
    model, _ = load_checkpoint()
    return model, calibrate(model, load_fashion_mnist("gate").subset(64).images)


def test_precision_scalable_engine(shipped_scales):
    """Widths change nothing on the INT8 engine, nor 6-bit blocks on the scalable one; a 4/4
    block's weight GEMMs run as the 8-bit GEMM with ceil(n / 2L) L columns (schedule.predict_cycles,
    computed here on its own), with fewer DRAM bytes and the same MACs."""
    model, scales = shipped_scales
    table = tables.load(None)
    L = 8
    int8, scal = cost.Machine(L, 8.0, 20, 100.0), cost.Machine(L, 8.0, 20, 100.0, scalable=True)
    im8 = from_scales(model, scales)
    ref = cost.build(im8, int8, table, {})
    for widths, machine in ((None, scal), ([(4, 4)] * 12, int8), ([(6, 6)] * 12, scal)):
        c = cost.build(from_scales(model, scales, widths=widths), machine, table, {})
        assert c.cycles(c.route_full()) == ref.cycles(ref.route_full())
        assert c.energy_pj(c.route_full()) == ref.energy_pj(ref.route_full())
    mixed_im = from_scales(model, scales, widths=[(8, 8)] * 11 + [(4, 4)])
    c = cost.build(mixed_im, scal, table, {})
    assert all(c.plain[i].cycles == ref.plain[i].cycles for i in range(1, 12))
    last, last8 = c.plain[12], ref.plain[12]
    assert last.macs == last8.macs and last.cycles < last8.cycles
    assert last.counts["dram_bytes"] < last8.counts["dram_bytes"]
    src = int8.source
    saved = 0
    for d in program.layer_segment(program.make_plan(model.cfg, L), im8, 11, tap=False):
        if d.kind == "gemm" and not d["w_scratch"]:
            n2 = -(-d["n"] // (2 * L)) * L
            saved += (schedule.predict_cycles(L, L, d["m"], d["k"], d["n"], src)
                      - schedule.predict_cycles(L, L, d["m"], d["k"], n2, src))
    assert saved > 0 and last8.cycles - last.cycles == saved


@pytest.fixture(scope="module")
def tiny_bench(tiny_trained, fmnist_train, fmnist_gate, fmnist_test):
    model, _ = tiny_trained
    machines = {"int8": cost.Machine(4, 8.0, 20, 100.0), "scalable": cost.Machine(4, 8.0, 20, 100.0, True)}
    return mixed.prepare(model, fmnist_gate.images[:64], fmnist_train.subset(400), fmnist_gate.subset(200),
                         fmnist_test.subset(160), machines, tables.load(None), head_epochs=2)


@pytest.mark.parametrize("widths", [[(8, 8), (4, 3)], [(6, 4), (8, 8)]])
def test_restart_from_cached_tokens_is_the_golden_model(tiny_bench, fmnist_test, widths):
    """The bench restarts the golden model at the first block that is not 8-bit, from the 8-bit
    run's tokens: its full-depth predictions equal a fresh golden run of that IntModel."""
    m = tiny_bench.measure(widths)
    im = from_scales(tiny_bench.model, tiny_bench.scales, widths=widths)
    fresh = Golden(im).forward(fmnist_test.images[:160]).predictions.numpy()
    assert np.array_equal(m.out["test"]["full_pred"], fresh)
    base = Golden(from_scales(tiny_bench.model, tiny_bench.scales)).forward(fmnist_test.images[:160]).predictions
    assert np.array_equal(tiny_bench.base.out["test"]["full_pred"], base.numpy())


def test_operate_prices_the_routing(tiny_bench):
    b = tiny_bench
    full = b.base_ops[1.0]
    assert full["exit_layers"] == [2] and full["exit_fraction"] == [1.0] and full["reach"] == [1.0, 1.0]
    assert full["cycles_int8"] == full["cycles_scalable"]           # 8-bit: the two engines agree
    m = b.measure([(4, 4), (4, 4)])
    p = b.operate(m, 1.0)
    assert p["cycles_scalable"] < p["cycles_int8"] == full["cycles_int8"]
    assert p["bops"] < full["bops"] and p["flips_test"] >= 0
    ex = b.operate(b.base, 0.6)
    assert abs(sum(ex["exit_fraction"]) - 1) < 1e-9 and ex["reach"][1] == pytest.approx(ex["exit_fraction"][-1])
    assert ex["flips_gate"] == ex["flips_test"] == 0.0


def test_flips_are_quantizations_under_the_same_thresholds(tiny_bench):
    """The risk control's flip rate: the assignment against uniform 8-bit, both routed with the
    thresholds the assignment runs with (so moving thresholds alone flips nothing)."""
    b = tiny_bench
    m = b.measure([(8, 8), (4, 3)])
    thr = b.thresholds(m, 0.6)
    p = b.operate(m, 0.6, thr)
    for split in ("gate", "test"):
        o, o8 = m.out[split], b.base.out[split]
        idx, idx8 = route(o["scores"], thr), route(o8["scores"], thr)
        k = len(b.candidates)
        rows = np.arange(len(idx))
        pred = np.where(idx < k, o["head_pred"][rows, np.minimum(idx, k - 1)], o["full_pred"])
        pred8 = np.where(idx8 < k, o8["head_pred"][rows, np.minimum(idx8, k - 1)], o8["full_pred"])
        assert p[f"flips_{split}"] == pytest.approx(float(((idx != idx8) | (pred != pred8)).mean()))


def test_frontier_is_non_dominated():
    pts = [{"e": e, "top1_test": t} for e, t in ((3, 0.9), (1, 0.8), (2, 0.85), (2.5, 0.84), (4, 0.9), (0.5, 0.7))]
    fr = mixed.frontier(pts, "e")
    assert [(p["e"], p["top1_test"]) for p in fr] == [(0.5, 0.7), (1, 0.8), (2, 0.85), (3, 0.9)]


@pytest.mark.slow                  # the whole search: sensitivities, 3 points, the rescue sweep
def test_mixed_command(tiny_trained, tmp_path, capsys):
    _, ckpt = tiny_trained
    args = ["mixed", "--checkpoint", str(ckpt), "--train-images", "300", "--gate-images", "150", "--test-images", "150",
            "--calib-images", "64", "--probe", "60", "--points", "3", "--rows", "4", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    s = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    for key in ("top1_uniform8", "top1_mixed", "bops_saving", "energy_saving", "assignment", "rescue_sweep",
                "frontier_energy", "seconds_allocators"):
        assert key in s
    assert {p["allocator"] for p in s["points"]} >= {"uniform 8-bit", "uniform 4-bit", "PMQ", "MAQEE"}
    assert len(s["sensitivity"]) == 2 * 2 * 2                   # 2 blocks x (w, a) x (6, 4)
    assert [(r["activation_bits"], r["last_blocks"]) for r in s["rescue_sweep"]] == [(8, 0), (6, 2), (4, 2), (3, 2), (2, 2)]
    r = s["rescue_sweep"][0]["quadrants"]
    assert r["rescue"] + r["loss"] + r["both_correct"] + r["both_wrong"] == pytest.approx(1)
    if s["top1_mixed"] is not None:
        assert s["top1_uniform8_gate"] - s["chosen"]["top1_gate"] <= 0.01 + 1e-9
        ok = [p for p in s["points"] if s["top1_uniform8_gate"] - p["top1_gate"] <= 0.01 + 1e-9 and p["flips_gate"] <= 0.05]
        assert s["chosen_bops"]["bops"] == min(p["bops"] for p in ok)
        assert s["chosen_bops"]["savings"]["bops_saving"] >= s["bops_saving"]
        assert len(s["assignment"]) == 2 and (tmp_path / "mixed" / "intmodel.pt").is_file()
    for f in ("README.md", "frontier.png", "rescue.png"):
        assert (tmp_path / "mixed" / f).is_file()
    assert s["energy_table"] == "horowitz_45nm" and s["energy_table_kind"] == "45 nm ASIC"
    assert "ISSCC 2014" in s["energy_table_source"]
    assert "energy scalable (µJ, Horowitz 45 nm ASIC)" in (tmp_path / "mixed" / "README.md").read_text()
    if s["top1_mixed"] is not None:
        c = json.loads((tmp_path / "mixed" / "chosen_cost.json").read_text())
        assert c["energy_table"]["label"] == "Horowitz 45 nm ASIC" and c["energy_table_fpga"]["name"] == "fpga_ecp5_scaled"
        assert 0 < c["dram_share_full"] <= 1 and c["energy_full_pj_fpga"] > c["energy_full_pj"]
    assert "mixed: " in capsys.readouterr().out


@pytest.mark.parametrize("extra,text", [
    (["--assignment", "8:8"], "has 1 layers but the model has 2"),
    (["--assignment", "8:8,9:8"], "weight bit-width 9 is outside {2..8}"),
    (["--assignment", "8-8,8:8"], "must be W:A pairs"),
    (["--risk", "2"], "must be fractions in [0, 1]"),
])
def test_mixed_bad_input(tiny_trained, tmp_path, capsys, extra, text):
    _, ckpt = tiny_trained
    assert main(["mixed", "--checkpoint", str(ckpt), "--out", str(tmp_path), "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and text in err[0]
    assert not (tmp_path / "mixed").exists()


def test_given_assignment(tiny_trained, tmp_path):
    _, ckpt = tiny_trained
    assert main(["mixed", "--checkpoint", str(ckpt), "--train-images", "200", "--gate-images", "100",
                 "--test-images", "100", "--calib-images", "64", "--rows", "4", "--assignment", "8:8,4:4",
                 "--out", str(tmp_path), "--quiet"]) == 0
    s = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    assert s["assignment"] == [[8, 8], [4, 4]] and len(s["nsr"]) == 2 and len(s["points"]) == len(mixed.BUDGETS)
    assert torch.tensor(s["nsr"]).isfinite().all()
