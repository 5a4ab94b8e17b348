"""The exit decision as the hardware comparator (``hw/rtl/comparator.py``) makes it.

For one candidate layer: the class is the arg-max of the head's integer class scores (the
first index on ties), and the image exits when the layer is a candidate (not pruned) and the
gate's fixed-point pre-activation is at least the layer's threshold register, logit(τ) in the
same fixed point (σ(z) ≥ τ ⇔ z ≥ logit(τ)).
"""
from __future__ import annotations

import torch


def decide(scores: torch.Tensor, gate: torch.Tensor, layer: torch.Tensor, thresholds: torch.Tensor,
           candidate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores`` (N, classes) int, ``gate`` (N,) int, ``layer`` (N,) layer indices,
    ``thresholds`` (layers,) int, ``candidate`` (layers,) bool → (exit (N,) bool, class (N,))."""
    cls = scores.argmax(dim=-1)
    exit_ = candidate[layer].bool() & (gate >= thresholds[layer])
    return exit_, cls
