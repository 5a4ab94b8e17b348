"""The learned exit gate (§4.3, Eq. 4): one logistic unit per candidate layer.

Features of a sample at layer ``l``, from that layer's exit-head logits and tokens:

* confidence ``c_l = max_k p_{l,k}`` (p = softmax of the head's logits),
* top-2 margin ``m_l = p_{l,(1)} − p_{l,(2)}``,
* spatial-activation variance ``SAV_l`` (``model.exits.features``).

The gate is ``g_l = σ(w_l · [c_l, m_l, SAV_l] + b_l)``, trained with BCE on the gating split
with label 1 iff the layer-``l`` exit is correct. Training standardises the features (per layer,
on the training rows) and folds the standardisation back into ``w_l`` and ``b_l``, so the
stored gate is a plain dot product on the raw features: the hardware comparator can test
``w·f + b ≥ logit(τ)`` (docs/architecture.md) with no extra arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FEATURE_NAMES = ("confidence", "margin", "sav")


def gate_features(logits: torch.Tensor, sav: torch.Tensor) -> torch.Tensor:
    """Head logits (N, K, classes) and SAV (N, K) → gate features (N, K, 3)."""
    top2 = logits.float().softmax(dim=-1).topk(2, dim=-1).values
    return torch.stack([top2[..., 0], top2[..., 0] - top2[..., 1], sav.float()], dim=-1)


@dataclass
class Gate:
    weight: torch.Tensor  # (K, 3), on the raw features
    bias: torch.Tensor    # (K,)

    def logit(self, features: torch.Tensor) -> torch.Tensor:
        """Gate pre-activation w·f + b, (N, K)."""
        return (features * self.weight).sum(-1) + self.bias

    def prob(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(features))


def train_gate(features: torch.Tensor, correct: torch.Tensor, seed: int = 0, steps: int = 400,
               lr: float = 0.05, weight_decay: float = 1e-4) -> Gate:
    """Fit one gate per layer: ``features`` (N, K, 3), ``correct`` (N, K) bool labels."""
    f = features.double()
    mean = f.mean(0)
    std = f.std(0).clamp_min(1e-12)
    x = (f - mean) / std
    y = correct.double()
    g = torch.Generator().manual_seed(seed)
    w = (0.01 * torch.randn(f.shape[1], f.shape[2], generator=g, dtype=torch.float64)).requires_grad_()
    b = torch.zeros(f.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits((x * w).sum(-1) + b, y) + weight_decay * (w ** 2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        weight = w / std
        bias = b - (w * mean / std).sum(-1)
    return Gate(weight.float(), bias.float())
