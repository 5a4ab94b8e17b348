"""qexit/commands/exits.py: `qexit exits` end to end on a tiny checkpoint, and its bad-input errors."""
import argparse
import json

import numpy as np
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.data import SPLITS, load_fashion_mnist
from model.errors import QexitError
from model.exits import evaluate
from model.vit import CLIPViT, ViTConfig
from qexit.commands import common, exits


@pytest.fixture(scope="module")
def small_data():
    return {s: load_fashion_mnist(s).subset(400) for s in SPLITS}


@pytest.fixture
def env(tmp_path, monkeypatch, small_data):
    monkeypatch.setattr(common, "load_images", lambda split, *args: small_data[split])
    n = torch.get_num_threads()
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, CLIPViT(ViTConfig(width=16, depth=4, heads=2, embed_dim=24)))
    yield tmp_path, ckpt
    torch.set_num_threads(n)


def parse(*argv):
    p = argparse.ArgumentParser()
    exits.add_arguments(p)
    return p.parse_args(list(argv))


def tiny_args(tmp_path, ckpt, *extra):
    return parse("--checkpoint", str(ckpt), "--modes", "dynamic,fp32", "--seeds", "2", "--train-images", "300",
                 "--gate-images", "200", "--test-images", "200", "--head-epochs", "2", "--out", str(tmp_path / "rep"),
                 "--cache-dir", str(tmp_path / "cache"), "--quiet", *extra)


def test_help_explains_the_options():
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    exits.add_arguments(p)
    text = p.format_help()
    for opt in ("--checkpoint", "--intmodel", "--budget", "--modes", "--seeds", "--candidates", "--gate-images",
                "--test-images", "--out", "--cache-dir"):
        assert opt in text
    assert "(0, 1]" in text


def test_runs_writes_reports_and_reuses_the_cache(env):
    tmp_path, ckpt = env
    assert exits.run(tiny_args(tmp_path, ckpt)) == 0
    out = tmp_path / "rep" / "exits"
    for name in ("README.md", "summary.json", "exit_distribution.json", "exit_distribution.png", "pareto.png",
                 "cls_vs_ssa.png", "noise.png"):  # noise.png: the dynamic mode has quantization noise
        assert (out / name).is_file(), name
    s = json.loads((out / "summary.json").read_text())
    for key in ("top1_full", "top1_full_std", "top1_full_dynamic", "top1_full_fp32", "top1_lraee", "flops_saving",
                "rescue", "loss", "exit_distribution", "top1_lraee_dynamic", "top1_lraee_std", "top1_fp32",
                "seconds_total"):
        assert key in s, key
    assert s["top1_full"] == s["top1_full_dynamic"]
    assert not any("int8" in k for k in s), "no int8 keys when int8 is not a mode"
    assert len(s["exit_distribution"]) == 4 and sum(s["exit_distribution"]) == pytest.approx(1.0)
    assert s["mode"] == "dynamic" and s["modes"] == ["dynamic", "fp32"]
    assert s["features_cached"] is False and s["seeds"] == 2
    d = json.loads((out / "exit_distribution.json").read_text())
    assert d["modes"]["dynamic"]["fraction"] == pytest.approx(s["exit_distribution"])
    assert d["modes"]["dynamic"]["top1_full_depth"] == s["top1_full_dynamic"]
    assert len(d["modes"]["dynamic"]["seeds"]) == 2
    readme = (out / "README.md").read_text()
    assert "Rescue" in readme and "Ablation" in readme and "PABEE" in readme
    assert "attributable to quantization" in readme and "net_rescue_beyond_fp32_dynamic" in s
    assert s["quantization_errors_dynamic"] >= s["rescue_of_quantization_errors_dynamic"] >= 0
    assert exits.run(tiny_args(tmp_path, ckpt, "--candidates", "1,3", "--grid", "0.6:0.9:7")) == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["features_cached"] is True
    assert s2["top1_full"] == s["top1_full"]  # same backbone, same full-depth predictions


@pytest.mark.parametrize("argv, words", [
    (("--budget", "0"), "(0, 1]"),
    (("--budget", "1.5"), "(0, 1]"),
    (("--gate-split", "test"), "overlaps the test split"),
    (("--gate-split", "train"), "overlaps the head-training images"),
    (("--candidates", "4"), "within 1..3"),
    (("--candidates", "a,b"), "--candidates"),
    (("--modes", "int4"), "--modes"),
    (("--grid", "0.5:1.2:5"), "--grid"),
    (("--grid", "0.5"), "LO:HI:N"),
])
def test_bad_input_is_one_line(env, argv, words):
    tmp_path, ckpt = env
    with pytest.raises(QexitError) as err:
        exits.run(tiny_args(tmp_path, ckpt, *argv))
    assert "\n" not in str(err.value) and words in str(err.value)
    assert not (tmp_path / "rep" / "exits").exists()


def test_empty_candidates_after_pruning(env, monkeypatch):
    tmp_path, ckpt = env
    # plant a noise spike at layer 2 so that Eq. 6 drops the only candidate
    real = evaluate.prune_layers
    monkeypatch.setattr(evaluate, "prune_layers", lambda cands, inr, noise, kappa: real(
        cands, np.array([10.0, 1.0, 10.0, 10.0]), {"nsr": [0.1, 1.0, 0.1, 0.1]}, kappa))
    with pytest.raises(QexitError) as err:
        exits.run(tiny_args(tmp_path, ckpt, "--candidates", "2"))
    assert "no candidate layer is left" in str(err.value) and "\n" not in str(err.value)
