"""model/exits/summary.py: cross-seed aggregates on small synthetic results, and the Rescue
verdict the exits README states (qexit/render/exits.py)."""
import statistics

import pytest

from model.exits.evaluate import ExitConfig
from model.exits.summary import build_summary, layer_fractions
from model.flops import full_depth_flops
from model.vit import ViTConfig
from qexit.render.exits import rescue_verdict

CFG = ViTConfig(width=16, depth=4, heads=2, embed_dim=24)
NOISE = {"nsr": [0.1, 0.4, 0.2, 0.3]}


def fake_run(seed, top1_full, rescue, loss, net_rescue, layers=(2, 4), fraction=(0.25, 0.75), pruned=()):
    """One seed's result with only the fields build_summary reads."""
    return {
        "seed": seed, "top1_full": top1_full, "top1_lraee": top1_full + rescue - loss, "flops_saving": 0.1 * (seed + 1),
        "quadrants": {"rescue": rescue, "loss": loss, "both_correct": 0.5, "both_wrong": 0.2, "net_rescue": net_rescue,
                      "quantization_errors": 0.05, "rescue_of_quantization_errors": 0.01},
        "selectivity": {"top1_exited": 0.9, "top1_full_depth_group": 0.6, "exited_fraction": fraction[0]},
        "baselines": {b: {"top1": 0.7, "flops_saving": 0.2} for b in ("confidence_only", "cls_ee", "pabee")},
        "exit_distribution": {"layers": list(layers), "fraction": list(fraction)},
        "thresholds": {2: 0.8}, "gate": {"layers": [2], "weight": [[1.0, 0.0, 0.0]], "bias": [0.0]},
        "pruned": [{"layer": l} for l in pruned],
    }


RESULTS = {
    "int8": [fake_run(0, 0.80, 0.10, 0.04, 0.06, pruned=(3,)), fake_run(1, 0.84, 0.12, 0.02, 0.10, fraction=(0.5, 0.5))],
    "dynamic": [fake_run(0, 0.86, 0.03, 0.05, -0.02), fake_run(1, 0.88, 0.01, 0.03, -0.02, pruned=(1, 3))],
    "fp32": [fake_run(0, 0.90, 0.04, 0.03, 0.01), fake_run(1, 0.92, 0.06, 0.03, 0.03)],
}


def summarize(modes):
    xcfg = ExitConfig(seeds=2)
    return build_summary(CFG, modes, {m: RESULTS[m] for m in modes}, {m: NOISE for m in modes}, 0.91, xcfg,
                         "ckpt.pt", 200)


def test_aggregates_are_mean_and_std_over_seeds():
    s, dist = summarize(["int8", "dynamic", "fp32"])
    assert s["mode"] == "int8" and s["modes"] == ["int8", "dynamic", "fp32"]
    assert s["checkpoint"] == "ckpt.pt" and s["images_test"] == 200 and s["top1_fp32"] == 0.91
    assert s["top1_full_int8"] == pytest.approx(0.82) and s["top1_full_int8_std"] == pytest.approx(
        statistics.stdev([0.80, 0.84]))
    assert s["top1_full_dynamic"] == pytest.approx(0.87) and s["top1_full_fp32"] == pytest.approx(0.91)
    assert s["top1_full"] == s["top1_full_int8"] and s["top1_full_std"] == s["top1_full_int8_std"]
    assert s["top1_int8_full"] == s["top1_full_int8"]
    assert s["rescue"] == pytest.approx(0.11) and s["loss"] == pytest.approx(0.03)
    assert s["flops_saving_dynamic"] == pytest.approx(0.15)
    # exit distribution on layers 1..4: seed 0 (0, .25, 0, .75), seed 1 (0, .5, 0, .5)
    assert s["exit_distribution"] == pytest.approx([0, 0.375, 0, 0.625])
    assert s["exit_distribution_int8"] == s["exit_distribution"]
    assert s["pruned_layers_int8"] == [3] and s["pruned_layers_dynamic"] == [1, 3] and s["pruned_layers_fp32"] == []
    assert s["nsr_per_layer_dynamic"] == NOISE["nsr"]
    d = dist["modes"]["dynamic"]
    assert dist["mode_primary"] == "int8" and dist["full_depth_flops"] == full_depth_flops(CFG)
    assert d["top1_full_depth"] == s["top1_full_dynamic"] and d["top1"] == s["top1_lraee_dynamic"]
    assert d["layers"] == [1, 2, 3, 4] and len(d["seeds"]) == 2 and d["seeds"][0]["thresholds"] == {"2": 0.8}


def test_rescue_effect_and_net_rescue_beyond_fp32():
    s, _ = summarize(["int8", "dynamic", "fp32"])
    assert s["rescue_effect_int8"] is True and s["rescue_effect"] is True  # 0.11 > 0.03
    assert s["rescue_effect_dynamic"] is False  # 0.02 < 0.04
    fp32_net = (0.01 + 0.03) / 2
    assert s["net_rescue_beyond_fp32_int8"] == pytest.approx((0.06 + 0.10) / 2 - fp32_net)
    assert s["net_rescue_beyond_fp32_dynamic"] == pytest.approx(-0.02 - fp32_net)
    assert "net_rescue_beyond_fp32_fp32" not in s


def test_no_fp32_control_and_no_int8_mode():
    s, dist = summarize(["dynamic"])
    assert not any(k.startswith("net_rescue_beyond_fp32") for k in s)
    assert "top1_int8_full" not in s and not any("int8" in k for k in s)
    assert s["top1_full"] == pytest.approx(0.87) and s["mode"] == "dynamic"
    assert list(dist["modes"]) == ["dynamic"]


def test_int8_key_when_int8_is_not_the_headline():
    s, _ = summarize(["fp32", "int8"])
    assert s["top1_full"] == pytest.approx(0.91) and s["top1_int8_full"] == pytest.approx(0.82)
    assert s["top1_int8_full"] == s["top1_full_int8"]


def test_one_seed_has_zero_std():
    s, _ = build_summary(CFG, ["int8"], {"int8": RESULTS["int8"][:1]}, {"int8": NOISE}, 0.9, ExitConfig(seeds=1),
                         "c", 10)
    assert s["top1_full"] == 0.80 and s["top1_full_std"] == 0.0


def test_layer_fractions_sum_repeated_layers():
    run = {"exit_distribution": {"layers": [1, 1, 4], "fraction": [0.1, 0.2, 0.7]}}
    assert layer_fractions(run, 4).tolist() == pytest.approx([0.3, 0, 0, 0.7])


def test_rescue_verdict():
    s, _ = summarize(["int8", "dynamic", "fp32"])
    text = rescue_verdict("int8", s, NOISE)
    assert "rescue 11.00% > loss 3.00%: a Rescue Effect appears (net +8.00%p)" in text
    assert "the FP32 control's net rescue is +2.00%p, so +6.00%p is attributable to quantization" in text
    assert "max 0.4 (block 2)" in text
    assert "no Rescue Effect" in rescue_verdict("dynamic", s, NOISE)
    assert rescue_verdict("fp32", s, NOISE).endswith("this is the no-quantization control.")
    s, _ = summarize(["dynamic"])
    assert "attributable to quantization" not in rescue_verdict("dynamic", s, NOISE)
