"""The backbones the exits run on: one ``Backbone`` per mode.

A backbone is two callables and a cache key, so any implementation plugs in:

* ``hidden_states(images) -> list[Tensor (N, T, width)]``: the tokens after every block
  (float; dequantized for the integer model), like ``CLIPViT.hidden_states``;
* ``final_embedding(tokens) -> Tensor (N, embed_dim)``: the backbone's own head on the last
  block's tokens ([CLS] → ln_post → proj); its cosine against the class embeddings is the
  "full depth" prediction of that mode;
* ``key``: a string that changes whenever the weights or the mode change (feature cache key).

Modes: "fp32" (the FP32 model), "dynamic" (the paper's INT8: ``quantize_dynamic`` on every
``nn.Linear``) and "int8" (the integer-only golden model).
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from model.errors import QexitError
from model.vit import CLIPViT

MODES = ("fp32", "dynamic", "int8")


@dataclass(frozen=True)
class Backbone:
    mode: str
    hidden_states: Callable[[torch.Tensor], list[torch.Tensor]]
    final_embedding: Callable[[torch.Tensor], torch.Tensor]
    key: str


def model_digest(model: nn.Module) -> str:
    """A hash of a model's state (names, shapes and values), stable across processes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def fp32_backbone(model: CLIPViT) -> Backbone:
    model = model.eval()
    return Backbone("fp32", model.hidden_states, model.image_embedding, f"fp32-{model_digest(model)}")


def dynamic_int8(model: CLIPViT) -> CLIPViT:
    # ---- LOCAL STAND-IN: to be replaced by `model.quantize.dynamic_int8(model)` (lead's module). ----
    # The paper's INT8 mode: dynamic post-training quantization of every Linear's weights (int8,
    # per tensor), activations quantized on the fly; a copy, so the FP32 model is untouched.
    try:
        from model.quantize import dynamic_int8 as shared
    except ImportError:
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    return shared(model)


def dynamic_backbone(model: CLIPViT) -> Backbone:
    q = dynamic_int8(model)
    return Backbone("dynamic", q.hidden_states, q.image_embedding, f"dynamic-{model_digest(model)}")


def int8_available() -> bool:
    """Whether the integer golden model exposes what the "int8" mode needs."""
    try:
        from model import golden, quantize
    except ImportError:
        return False
    return all(hasattr(m, a) for m, a in [(golden, "hidden_states"), (quantize, "load_intmodel"),
                                          (quantize, "quantize")])


def int8_backbone(model: CLIPViT, intmodel_path: Path | str | None = None,
                  calib_images: torch.Tensor | None = None) -> Backbone:
    """The integer-only golden model as a backbone.

    ---- WIRING POINT (lead): the golden model's API, ``model.golden.hidden_states(intmodel, images)``,
    ``model.quantize.load_intmodel(path)`` and ``model.quantize.quantize(model, calib_images)``. ----
    The final head here is the FP32 ``image_embedding`` on the dequantized last tokens; swap in the
    golden model's integer ln_post/proj if it has one.
    """
    if not int8_available():
        raise QexitError("the int8 mode needs the integer golden model (model.golden.hidden_states, "
                         "model.quantize.load_intmodel/quantize), which is not built yet; "
                         "run with --modes dynamic")
    from model import golden, quantize

    if intmodel_path is not None:
        intmodel = quantize.load_intmodel(intmodel_path)
        key = f"int8-{file_digest(intmodel_path)}"
    else:
        if calib_images is None:
            raise QexitError("the int8 mode needs --intmodel or calibration images")
        intmodel = quantize.quantize(model, calib_images)
        h = hashlib.sha256(calib_images.contiguous().numpy().tobytes()).hexdigest()[:8]
        key = f"int8-{model_digest(model)}-calib{len(calib_images)}-{h}"
    return Backbone("int8", lambda images: golden.hidden_states(intmodel, images), model.image_embedding, key)
