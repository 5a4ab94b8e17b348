"""The backbones the exits run on: one ``Backbone`` per mode.

A backbone is one callable and a cache key, so any implementation plugs in:

* ``forward(images) -> BackboneOutput``:
  - ``hidden_states``: list of ``depth`` tensors (N, T, width), the tokens after every block
    (float; dequantized for the integer model), as ``CLIPViT.hidden_states`` gives;
  - ``embedding`` (N, embed_dim): the backbone's own head on the last block ([CLS] → ln_post
    → proj), in any scale;
  - ``logits`` (N, classes): its class scores; their arg-max is the mode's "full depth"
    prediction;
* ``key``: a string that changes whenever the weights or the mode change (feature cache key).

Modes: "fp32" (the FP32 model), "dynamic" (the paper's INT8: ``quantize_dynamic`` on every
``nn.Linear``) and "int8" (the integer-only golden model).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from model import golden, intops, quantize, vit
from model.errors import QexitError
from model.vit import CLIPViT

MODES = ("fp32", "dynamic", "int8")


class BackboneOutput(NamedTuple):
    hidden_states: list[torch.Tensor]
    embedding: torch.Tensor
    logits: torch.Tensor
    tokens: list[torch.Tensor] | None = None     # int8 mode: every block's int8 tokens ...
    token_scales: list[float] | None = None      # ... and their scales (hidden = tokens * scale)


@dataclass(frozen=True)
class Backbone:
    mode: str
    forward: Callable[[torch.Tensor], BackboneOutput]
    key: str


def clip_backbone(mode: str, model: CLIPViT, key: str) -> Backbone:
    """A backbone from any module with CLIPViT's ``hidden_states``/``image_embedding``/``cosine_logits``."""
    def forward(images: torch.Tensor) -> BackboneOutput:
        hs = model.hidden_states(images)
        emb = model.image_embedding(hs[-1])
        return BackboneOutput(hs, emb, model.cosine_logits(emb))
    return Backbone(mode, forward, key)


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


def code_digest(*modules) -> str:
    """A hash of the source files of modules (a changed forward pass must not reuse cached features)."""
    h = hashlib.sha256(torch.__version__.encode())
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return h.hexdigest()[:12]


def file_digest(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def fp32_backbone(model: CLIPViT) -> Backbone:
    return clip_backbone("fp32", model.eval(), f"fp32-{model_digest(model)}-{code_digest(vit)}")


def dynamic_backbone(model: CLIPViT) -> Backbone:
    return clip_backbone("dynamic", quantize.dynamic_int8(model), f"dynamic-{model_digest(model)}-{code_digest(vit)}")


def int8_backbone(model: CLIPViT, intmodel_path: Path | str | None = None,
                  calib_images: torch.Tensor | None = None) -> Backbone:
    """The integer-only golden model as a backbone: dequantized block outputs, and its own
    integer head (int8 embedding, int32 logits) for the full-depth prediction.

    An ``intmodel_path`` is loaded and validated at once (a bad file fails before any work);
    without one, the checkpoint is quantized on first use, so a run with cached features skips it.
    """

    code = code_digest(golden, intops, quantize)
    if intmodel_path is not None and not Path(intmodel_path).is_file():
        raise QexitError(f"--intmodel {intmodel_path} does not exist; write one with `qexit quantize` or leave "
                         "--intmodel out to quantize the checkpoint")
    if intmodel_path is not None:
        key = f"int8-{file_digest(intmodel_path)}-{code}"
    elif calib_images is not None:
        h = hashlib.sha256(calib_images.contiguous().numpy().tobytes()).hexdigest()[:8]
        key = f"int8-{model_digest(model)}-calib{len(calib_images)}-{h}-{code}"
    else:
        raise QexitError("the int8 mode needs --intmodel or calibration images")
    runner: list = []
    if intmodel_path is not None:
        runner.append(golden.Golden(quantize.load_intmodel(intmodel_path, model.cfg)))

    def forward(images: torch.Tensor) -> BackboneOutput:
        if not runner:
            runner.append(golden.Golden(quantize.quantize(model, calib_images)))
        g = runner[0]
        out = g.forward(images)
        scales = [g.im.scales[f"b{i}.x_out"] for i in range(len(out.blocks))]
        return BackboneOutput(g.dequantize_blocks(out), out.embedding.float(), out.logits.float(), out.blocks, scales)
    return Backbone("int8", forward, key)
