"""Shared fixtures: a tiny ViT (2 blocks, width 16) trained briefly, and its IntModel."""
from __future__ import annotations

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
