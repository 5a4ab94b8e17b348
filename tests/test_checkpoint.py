import pytest
import torch

from model.checkpoint import SHIPPED_WEIGHTS, load_checkpoint
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.train import evaluate
from model.vit import ViTConfig


def test_missing_checkpoint(tmp_path):
    with pytest.raises(QexitError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_corrupt_checkpoint(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"\x00garbage")
    with pytest.raises(QexitError, match="truncated or corrupt"):
        load_checkpoint(p)


def test_checkpoint_of_other_kind(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": 1}, p)
    with pytest.raises(QexitError, match="is not a qexit checkpoint"):
        load_checkpoint(p)


def test_checkpoint_config_mismatch(tiny_trained):
    _, path = tiny_trained
    with pytest.raises(QexitError, match="does not match the config"):
        load_checkpoint(path, ViTConfig())


def test_checkpoint_state_dict_mismatch(tiny_trained, tmp_path):
    model, path = tiny_trained
    blob = torch.load(path, weights_only=False)
    blob["config"]["depth"] = 3
    torch.save(blob, tmp_path / "x.pt")
    with pytest.raises(QexitError, match="does not match its own config"):
        load_checkpoint(tmp_path / "x.pt")


def test_shipped_weights_reach_committed_accuracy():
    """The shipped model's top-1 on a fixed 1,000-image test subset matches its committed figure."""
    model, blob = load_checkpoint(SHIPPED_WEIGHTS)
    assert model.cfg == ViTConfig()
    test = load_fashion_mnist("test").subset(1000)
    acc = evaluate(model, test)
    assert abs(acc - blob["metrics"]["top1_test_first1000"]) <= 0.005
    assert blob["metrics"]["top1_test"] >= 0.85
