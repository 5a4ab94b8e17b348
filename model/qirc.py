"""QIRC: layer-wise quantization-noise analysis (paper §3.1, Eq. 1).

For block l with FP32 output h_l (h_0 = the embedded tokens) and INT8 output ĥ_l:

* ``nsr``          ‖ĥ_l − h_l‖ / ‖h_l − h_{l−1}‖  (noise against the block's own update; Eq. 1)
* ``rel_err``      ‖ĥ_l − h_l‖ / ‖h_l‖
* ``cos_tokens``   mean cosine between ĥ_l and h_l token vectors
* ``cos_pooled``   mean cosine between the patch-token means (the SSA embedding) of ĥ_l and h_l
* ``mse``          mean squared error of ĥ_l against h_l
* ``outlier_ratio`` max|h_l| / 99.9th percentile of |h_l| (of the FP32 activations)

Norms are Frobenius norms over the whole image set (all images, tokens and channels);
the outlier ratio is the overall max over the mean of the per-batch 99.9th percentiles.
``NoiseAccumulator`` is the one implementation: ``analyze`` and the exit-feature
extraction (model/exits/features.py) both stream batches through it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

METRICS = ("nsr", "rel_err", "cos_tokens", "cos_pooled", "mse", "outlier_ratio")
HiddenFn = Callable[[torch.Tensor], list[torch.Tensor]]


class NoiseAccumulator:
    """Streams batches of (FP32, quantized) hidden states; ``result()`` gives the per-layer metrics."""

    def __init__(self, depth: int):
        z = lambda: torch.zeros(depth, dtype=torch.float64)  # noqa: E731
        self.err2, self.upd2, self.ref2, self.cos_tok, self.cos_pool, self.p999 = z(), z(), z(), z(), z(), z()
        self.absmax = z()
        self.values = self.tokens = self.images = self.batches = 0

    @torch.no_grad()
    def update(self, ref: list[torch.Tensor], quant: list[torch.Tensor]) -> None:
        """``ref``: FP32 embedded tokens then every block's output (depth + 1 tensors, N×T×D);
        ``quant``: the quantized backbone's block outputs (depth tensors)."""
        for l, hq in enumerate(quant):
            h, hp, hq = ref[l + 1].double(), ref[l].double(), hq.double()
            err = hq - h
            self.err2[l] += err.pow(2).sum()
            self.upd2[l] += (h - hp).pow(2).sum()
            self.ref2[l] += h.pow(2).sum()
            self.cos_tok[l] += F.cosine_similarity(hq, h, dim=-1).sum()
            self.cos_pool[l] += F.cosine_similarity(hq[:, 1:].mean(1), h[:, 1:].mean(1), dim=-1).sum()
            a = h.abs().flatten().float()
            self.absmax[l] = max(self.absmax[l].item(), a.max().item())
            self.p999[l] += a.kthvalue(max(1, int(0.999 * a.numel()))).values.item()
        h = quant[0]
        self.values += h.numel()
        self.tokens += h.shape[0] * h.shape[1]
        self.images += h.shape[0]
        self.batches += 1

    def result(self) -> dict[str, list[float]]:
        tiny = 1e-30
        return {
            "nsr": (self.err2 / self.upd2.clamp(min=tiny)).sqrt().tolist(),
            "rel_err": (self.err2 / self.ref2.clamp(min=tiny)).sqrt().tolist(),
            "cos_tokens": (self.cos_tok / self.tokens).tolist(),
            "cos_pooled": (self.cos_pool / self.images).tolist(),
            "mse": (self.err2 / self.values).tolist(),
            "outlier_ratio": (self.absmax / (self.p999 / self.batches).clamp(min=tiny)).tolist(),
        }


@torch.no_grad()
def reference_states(fp32_model, images: torch.Tensor) -> list[torch.Tensor]:
    """FP32 embedded tokens followed by every block's output: what ``NoiseAccumulator`` compares with."""
    return [fp32_model.embed(images)] + fp32_model.hidden_states(images)


@torch.no_grad()
def analyze(fp32_model, quant_hidden: HiddenFn, images: torch.Tensor, batch_size: int = 250) -> dict[str, list[float]]:
    """Per-layer QIRC metrics of a quantized backbone (``quant_hidden(images)``) against the FP32 model."""
    acc = NoiseAccumulator(fp32_model.cfg.depth)
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        acc.update(reference_states(fp32_model, x), quant_hidden(x))
    return acc.result()
