from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from model import data
from model.clip import clip_preprocess
from model.errors import QexitError


def test_splits_are_deterministic_disjoint_and_sized():
    tr, gate = data.split_indices()
    assert len(tr) == 55000 and len(gate) == data.GATE_SIZE
    assert not set(tr.tolist()) & set(gate.tolist())
    tr2, gate2 = data.split_indices()
    assert torch.equal(tr, tr2) and torch.equal(gate, gate2)


def test_fashion_mnist_loads_three_splits():
    test = data.load_fashion_mnist("test")
    gate = data.load_fashion_mnist("gate")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert len(gate) == 5000 and set(gate.labels.unique().tolist()) == set(range(10))
    assert test.classes == data.FASHION_MNIST_CLASSES


def test_missing_dataset_is_one_line(tmp_path):
    with pytest.raises(QexitError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist("test", root=tmp_path)


def test_corrupt_dataset_is_one_line(tmp_path):
    for n in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]:
        (tmp_path / n).write_bytes(b"not gzip")
    with pytest.raises(QexitError, match="cannot read"):
        data.load_fashion_mnist("test", root=tmp_path)


def test_unknown_split():
    with pytest.raises(QexitError, match="unknown split"):
        data.load_fashion_mnist("val")


def _write_folder(root, n_per_class=3):
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n_per_class):
            arr = np.full((32, 40), 60 * i + (100 if c == "dog" else 0), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")


def test_image_folder_loads_and_resizes(tmp_path):
    _write_folder(tmp_path)
    ds = data.load_image_folder(tmp_path, image_size=28)
    assert ds.images.shape == (6, 1, 28, 28) and ds.classes == ("cat", "dog")
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.images[3].float().mean().item() == pytest.approx(100, abs=1)
    rgb = data.load_image_folder(tmp_path, image_size=8, channels=3)
    assert rgb.images.shape == (6, 3, 8, 8)


def test_image_folder_with_a_preprocess_gives_its_float_pixels(tmp_path):


    _write_folder(tmp_path)
    ds = data.load_image_folder(tmp_path, preprocess=partial(clip_preprocess, size=16))
    assert ds.images.shape == (6, 3, 16, 16) and ds.images.dtype == torch.float32
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.classes == ("cat", "dog")
    with Image.open(tmp_path / "dog" / "2.png") as im:
        assert torch.equal(ds.images[5], clip_preprocess(im, 16))
    assert data.load_image_folder(tmp_path, image_size=8).images.dtype == torch.uint8  # the default path stays


def test_image_folder_rejects_non_image(tmp_path):
    _write_folder(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(QexitError, match="notes.txt is not a readable image"):
        data.load_image_folder(tmp_path)


def test_image_folder_missing_or_empty(tmp_path):
    with pytest.raises(QexitError, match="does not exist"):
        data.load_image_folder(tmp_path / "nope")
    with pytest.raises(QexitError, match="no class sub-folders"):
        data.load_image_folder(tmp_path)


def test_load_dataset_uses_split_subfolder(tmp_path):
    _write_folder(tmp_path / "test")
    assert len(data.load_dataset("test", tmp_path)) == 6


def test_split_ids_are_global_and_disjoint():
    test_ids = data.split_ids("test", 100)
    assert test_ids.tolist() == list(range(60000, 60100))
    tr, gate = data.split_ids("train", 55000), data.split_ids("gate", data.GATE_SIZE)
    assert len(tr) == 55000 and len(gate) == data.GATE_SIZE
    assert not set(tr.tolist()) & set(gate.tolist())
    assert tr.max() < 60000 and gate.max() < 60000
    assert data.split_ids("gate", 7).tolist() == data.split_indices()[1][:7].tolist()
