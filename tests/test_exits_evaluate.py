"""model/exits/evaluate.py: quadrants, selectivity, input checks and one seed end to end."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.errors import QexitError
from model.exits.evaluate import ExitConfig, check_budget, check_disjoint, mean_std, quadrants, run_seed, selectivity
from model.exits.features import Features
from model.exits.fixed import token_sums
from model.vit import ViTConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_quadrants_by_hand():
    ee = np.array([1, 1, 0, 0, 1, 1], bool)
    full = np.array([1, 0, 1, 0, 0, 1], bool)
    q = quadrants(ee, full)
    assert (q["both_correct"], q["rescue"], q["loss"], q["both_wrong"]) == (2 / 6, 2 / 6, 1 / 6, 1 / 6)
    assert q["net_rescue"] == pytest.approx(1 / 6) and q["images"] == 6
    fp32 = np.array([1, 1, 1, 1, 0, 0], bool)
    q = quadrants(ee, full, fp32)
    assert q["quantization_errors"] == 2 / 6  # images 1 and 3: full depth wrong, FP32 right
    assert q["rescue_of_quantization_errors"] == 1 / 6  # image 1: and the exit gets it right


def test_selectivity_by_hand():
    s = selectivity(np.array([0, 1, 2, 2]), np.array([True, False, True, True]), k=2)
    assert s["exited_fraction"] == 0.5 and s["top1_exited"] == 0.5 and s["top1_full_depth_group"] == 1.0
    assert math.isnan(selectivity(np.array([2, 2]), np.array([True, False]), k=2)["top1_exited"])


@pytest.mark.parametrize("budget", [0, -0.1, 1.01, 2, float("nan")])
def test_budget_outside_unit_interval(budget):
    with pytest.raises(QexitError) as err:
        check_budget(budget)
    assert "\n" not in str(err.value) and "(0, 1]" in str(err.value)
    with pytest.raises(QexitError):
        ExitConfig(budget=budget)


def test_mean_std_skips_nan():
    assert mean_std([0.5, float("nan"), 0.7]) == (pytest.approx(0.6), pytest.approx(0.1414, abs=1e-4))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert all(math.isnan(x) for x in mean_std([float("nan")]))


def test_config_checks():
    check_budget(1.0)
    assert ExitConfig().resolve_candidates(12) == list(range(1, 12))
    assert ExitConfig(candidates=(8, 4, 8)).resolve_candidates(12) == [4, 8]
    for bad in ((12,), (0, 3), ()):
        with pytest.raises(QexitError):
            ExitConfig(candidates=bad).resolve_candidates(12)
    with pytest.raises(QexitError):
        ExitConfig(seeds=0)


def test_overlapping_splits_are_refused():
    check_disjoint([1, 2, 3], [4, 5])
    with pytest.raises(QexitError) as err:
        check_disjoint(np.arange(10), np.arange(5, 20))
    assert "\n" not in str(err.value) and "overlaps" in str(err.value) and "5 images" in str(err.value)


def synthetic(n, cfg, seed, noise_levels):
    """Features whose SSA gets more informative with depth; full depth errs on 25% of images."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    protos = torch.randn(cfg.num_classes, cfg.width, generator=torch.Generator().manual_seed(99))
    signal = torch.tensor(noise_levels)[None, :, None]
    ssa = signal * protos[labels][:, None] + torch.randn(n, cfg.depth, cfg.width, generator=g)
    cls = 0.3 * signal * protos[labels][:, None] + torch.randn(n, cfg.depth, cfg.width, generator=g)
    wrong = torch.rand(n, generator=g) < 0.25
    pred = torch.where(wrong, (labels + 1) % cfg.num_classes, labels)
    logits = F.one_hot(pred, cfg.num_classes).float()
    return Features(ssa, cls, torch.rand(n, cfg.depth, generator=g), torch.randn(n, cfg.embed_dim, generator=g),
                    logits, labels)


def run_synthetic(make, nsr: list[float], pareto_budgets: tuple[float, ...]):
    """(cfg, run_seed's result) on train/gate/test splits from ``make`` (``synthetic`` or
    ``synthetic_int8``) for a small ViT."""
    cfg = ViTConfig(width=8, depth=4, heads=2, embed_dim=12, num_classes=4)
    levels = [1.0, 2.0, 3.0, 4.0]
    train, gate, test = (make(n, cfg, s, levels) for n, s in ((600, 0), (400, 1), (400, 2)))
    ce = F.normalize(torch.randn(cfg.num_classes, cfg.embed_dim, generator=torch.Generator().manual_seed(5)), dim=-1)
    target = ce[train.labels] + 0.1 * torch.randn(len(train), cfg.embed_dim)
    torch.manual_seed(0)
    xcfg = ExitConfig(budget=0.9, seeds=1, head_epochs=3, head_hidden=16, pareto_budgets=pareto_budgets)
    return cfg, run_seed(cfg, ce, train, gate, test, target, {"nsr": nsr}, xcfg, seed=0)


@pytest.fixture(scope="module")
def one_seed():
    return run_synthetic(synthetic, [0.01, 0.5, 0.02, 0.03], (0.6, 1.0))      # a spike at layer 2


def test_run_seed_accounting(one_seed):
    cfg, r = one_seed
    q = r["quadrants"]
    assert q["both_correct"] + q["rescue"] + q["loss"] + q["both_wrong"] == pytest.approx(1.0)
    assert r["top1_lraee"] == pytest.approx(q["both_correct"] + q["rescue"])
    assert r["top1_full"] == pytest.approx(q["both_correct"] + q["loss"]) == pytest.approx(0.75, abs=0.06)
    d = r["exit_distribution"]
    assert sum(d["fraction"]) == pytest.approx(1.0) and d["layers"][-1] == cfg.depth
    mean_flops = sum(f * fl for f, fl in zip(d["fraction"], d["flops"]))
    assert r["flops_saving"] == pytest.approx(1 - mean_flops / d["full_depth_flops"])
    s = r["selectivity"]
    assert s["exited_fraction"] == pytest.approx(1 - d["fraction"][-1])


def test_run_seed_prunes_the_spike_and_reports_everything(one_seed):
    cfg, r = one_seed
    assert r["candidates_initial"] == [1, 2, 3]
    assert [d["layer"] for d in r["pruned"]] == [2] and 2 not in r["candidates"]
    assert set(r["ablation"]) == {"i", "ii", "iii", "iv", "v"}
    assert r["ablation"]["v"]["top1"] == r["top1_lraee"] and r["ablation"]["i"]["top1"] == r["top1_full"]
    assert set(r["baselines"]) == {"confidence_only", "cls_ee", "pabee"}
    assert len(r["pareto"]["lraee"]) == 2 and all(len(p) == 2 for p in r["pareto"]["confidence_only"])
    assert len(r["per_layer_top1"]["cls_dist"]) == cfg.depth
    # informative SSA heads at shallow layers, full depth wrong on a quarter: exits should pay off
    assert r["top1_lraee"] > r["top1_full"]
    assert len(r["gate"]["weight"]) == len(r["candidates"])


def synthetic_int8(n, cfg, seed, noise_levels, s_x=0.05):
    """Like ``synthetic`` but from int8 tokens, as the int8 mode extracts them: the float SSA and
    SAV are the integer sums times the token scale, and the integer sums ride along."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
    protos = torch.randn(cfg.num_classes, cfg.width, generator=torch.Generator().manual_seed(99))
    signal = torch.tensor(noise_levels)[None, :, None, None]
    x = signal * protos[labels][:, None, None] + torch.randn(n, cfg.depth, cfg.tokens, cfg.width, generator=g)
    tok = (x / (4 * s_x)).round().clamp(-128, 127).long()
    sums = [token_sums(tok[:, k]) for k in range(cfg.depth)]
    s, v = torch.stack([a for a, _ in sums], 1), torch.stack([b for _, b in sums], 1)
    p = cfg.num_patches
    wrong = torch.rand(n, generator=g) < 0.25
    pred = torch.where(wrong, (labels + 1) % cfg.num_classes, labels)
    return Features((s * s_x / p).float(), (tok[:, :, 0] * s_x).float(),
                    (v * s_x ** 2 / (p * p * cfg.width)).float(), torch.randn(n, cfg.embed_dim, generator=g),
                    F.one_hot(pred, cfg.num_classes).float(), labels, ssa_sum=s, sav_num=v,
                    token_scales=torch.full((cfg.depth,), s_x, dtype=torch.float64))


def test_int8_mode_routes_on_the_fixed_point_head():
    _, r = run_synthetic(synthetic_int8, [0.01, 0.02, 0.02, 0.03], (1.0,))
    assert r["head"] == "fixed-point"
    q = r["quadrants"]
    assert r["top1_lraee"] == pytest.approx(q["both_correct"] + q["rescue"])
    assert abs(r["top1_lraee"] - r["float_head"]["top1"]) < 0.05
    d = r["fixed_vs_float"]
    assert 0 <= d["exit_layer_differs"] <= d["decisions_differ"] <= 1
    assert set(r["threshold_registers"]) == set(r["candidates"])
    assert all(t is None or isinstance(t, int) for t in r["threshold_registers"].values())
