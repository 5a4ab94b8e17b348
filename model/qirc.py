"""QIRC: layer-wise quantization-noise analysis (paper §3.1, Eq. 1).

For block l with FP32 output h_l (h_0 = the embedded tokens) and INT8 output ĥ_l:

* ``nsr``          ‖ĥ_l − h_l‖ / ‖h_l − h_{l−1}‖  (noise against the block's own update; Eq. 1)
* ``rel_err``      ‖ĥ_l − h_l‖ / ‖h_l‖
* ``cos_tokens``   mean cosine between ĥ_l and h_l token vectors
* ``cos_pooled``   mean cosine between the patch-token means (the SSA embedding) of ĥ_l and h_l
* ``mse``          mean squared error of ĥ_l against h_l
* ``outlier_ratio`` max|h_l| / 99.9th percentile of |h_l| (of the FP32 activations)

Norms are per image (all tokens of the image), then averaged over images.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

METRICS = ("nsr", "rel_err", "cos_tokens", "cos_pooled", "mse", "outlier_ratio")
HiddenFn = Callable[[torch.Tensor], list[torch.Tensor]]


@torch.no_grad()
def analyze(fp32_model, quant_hidden: HiddenFn, images: torch.Tensor, batch_size: int = 250) -> dict[str, list[float]]:
    """Per-layer QIRC metrics of a quantized backbone (``quant_hidden(images)``) against the FP32 model."""
    depth = fp32_model.cfg.depth
    sums = {m: torch.zeros(depth, dtype=torch.float64) for m in METRICS if m != "outlier_ratio"}
    absvals: list[list[torch.Tensor]] = [[] for _ in range(depth)]
    n_img = 0
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        ref = [fp32_model.embed(x)] + fp32_model.hidden_states(x)
        q = quant_hidden(x)
        n_img += len(x)
        for l in range(depth):
            h, hp, hq = ref[l + 1].double(), ref[l].double(), q[l].double()
            err = (hq - h).flatten(1)
            err_norm = err.norm(dim=1)
            sums["nsr"][l] += (err_norm / (h - hp).flatten(1).norm(dim=1).clamp(min=1e-12)).sum()
            sums["rel_err"][l] += (err_norm / h.flatten(1).norm(dim=1).clamp(min=1e-12)).sum()
            sums["cos_tokens"][l] += F.cosine_similarity(hq, h, dim=-1).mean(1).sum()
            sums["cos_pooled"][l] += F.cosine_similarity(hq[:, 1:].mean(1), h[:, 1:].mean(1), dim=-1).sum()
            sums["mse"][l] += err.pow(2).mean(1).sum()
            absvals[l].append(h.abs().flatten().float())
    out = {m: (v / n_img).tolist() for m, v in sums.items()}
    ratios = []
    for l in range(depth):
        v = torch.cat(absvals[l])
        k = max(1, int(0.999 * v.numel()))
        ratios.append((v.max() / v.kthvalue(k).values.clamp(min=1e-12)).item())
    out["outlier_ratio"] = ratios
    return out


def plot(analyses: dict[str, dict[str, list[float]]], path) -> None:
    """One PNG with a panel per metric; one line per INT8 mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, metric in zip(axes.flat, METRICS):
        for mode, a in analyses.items():
            ax.plot(range(1, len(a[metric]) + 1), a[metric], marker="o", label=mode)
        ax.set_title(metric)
        ax.set_xlabel("block")
        ax.grid(alpha=0.3)
        if metric in ("mse", "nsr"):
            ax.set_yscale("log")
    axes.flat[0].legend()
    fig.suptitle("QIRC: layer-wise quantization noise against FP32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
