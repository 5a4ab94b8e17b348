"""The embedded default data set (Fashion-MNIST from Debian) and a folder-per-class loader.

Splits are deterministic: the 60k official training images are shuffled once with a fixed
seed; the last ``GATE_SIZE`` of that order form the held-out *gating* split (used to train
exit gates and choose thresholds), the rest are *train*. The official 10k test images are
*test*. Images are uint8 tensors of shape (N, 1, H, W); labels are int64 (N,).
``load_image_folder(..., preprocess=f)`` reads each image with ``f`` instead, e.g. CLIP's crop (model/clip.py).
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from model.clip import clip_crop
from model.errors import QexitError

FASHION_MNIST_DIR = Path(os.environ.get("QEXIT_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
GATE_SIZE = 5000
SPLIT_SEED = 0
SPLITS = ("train", "gate", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass
class Dataset:
    images: torch.Tensor  # uint8 (N, C, H, W); float when loaded with a ``preprocess``
    labels: torch.Tensor  # int64 (N,)
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "Dataset":
        """The first ``n`` images (all when ``n`` is None); deterministic."""
        if n is None or n >= len(self):
            return self
        return Dataset(self.images[:n], self.labels[:n], self.classes)


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as err:
        raise QexitError(f"cannot read {path}: {err}; reinstall it with "
                         "`apt-get install --reinstall dataset-fashion-mnist`") from None


def _check_fashion_mnist(root: Path) -> None:
    needed = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    missing = [n for n in needed if not (root / n).is_file()]
    if missing:
        raise QexitError(f"Fashion-MNIST not found in {root} (missing {missing[0]}); install it with "
                         "`sudo apt-get install dataset-fashion-mnist` or `make setup`")


def split_indices(n_train_total: int = 60000, gate_size: int = GATE_SIZE,
                  seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of (train, gate) inside the official training set; disjoint by construction."""
    perm = torch.randperm(n_train_total, generator=torch.Generator().manual_seed(seed))
    return perm[: n_train_total - gate_size], perm[n_train_total - gate_size:]


def split_ids(split: str, n: int) -> np.ndarray:
    """Global image ids (0..59999 official train, 60000.. test) of the first ``n`` images of a split."""
    if split == "test":
        return 60000 + np.arange(n)
    train_idx, gate_idx = split_indices()
    return (train_idx if split == "train" else gate_idx).numpy()[:n]


def load_fashion_mnist(split: str, root: Path | str = FASHION_MNIST_DIR) -> Dataset:
    """One split of Fashion-MNIST: 'train' (55k), 'gate' (5k, held out from train) or 'test' (10k)."""
    if split not in SPLITS:
        raise QexitError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    _check_fashion_mnist(root)
    prefix = "t10k" if split == "test" else "train"
    images = torch.from_numpy(_read_idx(root / f"{prefix}-images-idx3-ubyte.gz").copy())
    labels = torch.from_numpy(_read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
    if split != "test":
        train_idx, gate_idx = split_indices(len(labels))
        idx = train_idx if split == "train" else gate_idx
        images, labels = images[idx], labels[idx]
    return Dataset(images.unsqueeze(1).contiguous(), labels, FASHION_MNIST_CLASSES)


def load_image_folder(root: Path | str, image_size: int = 28, channels: int = 1, preprocess=None) -> Dataset:
    """A folder with one sub-folder per class (sorted names = class order), like torchvision's
    ImageFolder. Images are resized to ``image_size`` and converted to ``channels`` (1 or 3), as uint8.
    ``preprocess`` (a PIL image → tensor (C, H, W)) replaces that resizing: ``model.clip.clip_crop``
    gives CLIP's uint8 crops (what the flow reads), ``load_clip``'s preprocess its float pixels."""

    root = Path(root)
    class_dirs = [root / name for name in folder_classes(root)]
    images, labels = [], []
    mode = "L" if channels == 1 else "RGB"
    for label, d in enumerate(class_dirs):
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            try:
                with Image.open(f) as im:
                    if preprocess is None:
                        im = im.convert(mode).resize((image_size, image_size), Image.BILINEAR)
                        arr = np.asarray(im, dtype=np.uint8)
                        x = torch.from_numpy(arr.copy()).reshape(image_size, image_size, -1).permute(2, 0, 1)
                    else:
                        x = preprocess(im)
            except (UnidentifiedImageError, OSError) as err:
                raise QexitError(f"{f} is not a readable image ({type(err).__name__}); remove it or "
                                 f"convert it to one of {sorted(IMAGE_SUFFIXES)}") from None
            images.append(x)
            labels.append(label)
    if not images:
        raise QexitError(f"--data folder {root} holds no images")
    return Dataset(torch.stack(images), torch.tensor(labels, dtype=torch.int64),
                   tuple(d.name for d in class_dirs))


def load_dataset(split: str, data: Path | str | None = None, image_size: int = 28, channels: int = 1,
                 preprocess=None) -> Dataset:
    """The embedded default (``data`` None) or ``data/<split>/`` as an ImageFolder."""
    if data is None:
        return load_fashion_mnist(split)
    return load_image_folder(Path(data) / split, image_size, channels, preprocess)


def load_images(split: str, data: Path | str | None, image_size: int, channels: int, clip: bool = False) -> Dataset:
    """``load_dataset`` for a model of this input size: a CLIP model's images cropped and
    resized as CLIP does (``model.clip.clip_crop``), others resized."""
    return load_dataset(split, data, image_size, channels, partial(clip_crop, size=image_size) if clip else None)


def folder_classes(root: Path | str) -> list[str]:
    """An ImageFolder's class names (its sorted sub-folder names), without reading an image."""
    root = Path(root)
    if not root.is_dir():
        raise QexitError(f"--data folder {root} does not exist; pass a folder with one sub-folder per class")
    names = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not names:
        raise QexitError(f"--data folder {root} has no class sub-folders; put each class's images in root/<class>/")
    return names
