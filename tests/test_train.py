import torch

from model.checkpoint import load_checkpoint
from model.train import TrainConfig, augment, evaluate, lr_at, train
from tests.conftest import TINY


def test_tiny_model_learns(tiny_trained, fmnist_test):
    model, _ = tiny_trained
    assert evaluate(model, fmnist_test) > 0.3  # 10 classes: chance is 0.10


def test_checkpoint_roundtrip(tiny_trained, fmnist_test):
    model, path = tiny_trained
    loaded, blob = load_checkpoint(path)
    x = fmnist_test.images[:8]
    assert torch.equal(loaded(x), model(x))
    assert blob["metrics"]["history"][-1]["epoch"] == 3


def test_resume_continues_from_state(tmp_path, fmnist_train):
    data = fmnist_train.subset(256)
    out = tmp_path / "m.pt"
    train(TINY, TrainConfig(epochs=1, batch_size=64), data, out, progress=False)
    # pretend we asked for 2 epochs from the start: the state after epoch 1 is resumable
    st = torch.load(out.with_suffix(".pt.state"), weights_only=False)
    st["train_config"]["epochs"] = 2
    torch.save(st, out.with_suffix(".pt.state"))
    _, metrics = train(TINY, TrainConfig(epochs=2, batch_size=64), data, out, resume=True, progress=False)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_schedule_warmup_and_cosine():
    assert lr_at(0, 100, 10, 1.0) == 0.1
    assert lr_at(10, 100, 10, 1.0) == 1.0
    assert lr_at(99, 100, 10, 1.0) < 0.01


def test_augment_keeps_shape_and_pixels():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 1, 28, 28), dtype=torch.uint8)
    y = augment(x, 2, True, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert not torch.equal(x, y)
    assert torch.equal(augment(x, 0, False, g), x)
