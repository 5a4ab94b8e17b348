"""Exit heads: one small projection per layer into the class-embedding space (§4.2).

A head at layer ``l`` maps a pooled vector ``z`` (the SSA patch mean, or the [CLS] token for
the baseline head) to an image embedding and scores it like CLIP does:

    e_l = W2 · relu(W1 · LN(z) + b1) + b2,     logits_l = s_l · cos(e_l, t_c) for every class c

with ``t_c`` the fixed class text embeddings and ``s_l`` a learned logit scale (clamped to
100, as the backbone's). LN is the LayerNorm the backbone itself applies before its own
projection (the residual stream's scale grows with depth). The paper's MLP uses GELU; this
one uses ReLU because hls4ml, which builds the head in hardware, rejects GELU.

Supervision (§5.1): "hard" is cross-entropy on the labels; "distilled" adds
``distill_weight · (1 − cos(e_l, e_fp32))``, a cosine-embedding loss toward the FP32 model's
own full-depth image embedding. The heads of all layers are trained together as one batched
module; their parameters are disjoint and Adam is per-parameter, so this equals training each
layer's head on its own.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

HEAD_HIDDEN = 128
MAX_LOG_SCALE = math.log(100.0)


class ExitHeads(nn.Module):
    """``layers`` independent heads applied to inputs of shape (N, layers, width)."""

    def __init__(self, layers: int, width: int, embed_dim: int, hidden: int = HEAD_HIDDEN, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.ln_weight = nn.Parameter(torch.ones(layers, width))
        self.ln_bias = nn.Parameter(torch.zeros(layers, width))
        self.w1 = nn.Parameter(torch.randn(layers, width, hidden, generator=g) / math.sqrt(width))
        self.b1 = nn.Parameter(torch.zeros(layers, hidden))
        self.w2 = nn.Parameter(torch.randn(layers, hidden, embed_dim, generator=g) / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(layers, embed_dim))
        self.log_scale = nn.Parameter(torch.full((layers,), math.log(10.0)))

    @property
    def layers(self) -> int:
        return self.w1.shape[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(N, layers, width) → embeddings (N, layers, embed_dim)."""
        x = F.layer_norm(z, z.shape[-1:]) * self.ln_weight + self.ln_bias
        h = torch.relu(torch.einsum("nld,ldh->nlh", x, self.w1) + self.b1)
        return torch.einsum("nlh,lhe->nle", h, self.w2) + self.b2

    def logits(self, embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, layers, E) → cosine logits (N, layers, classes)."""
        cos = F.normalize(embeddings, dim=-1) @ F.normalize(class_embeddings, dim=-1).t()
        return self.log_scale.exp()[:, None] * cos


def train_heads(z: torch.Tensor, labels: torch.Tensor, class_embeddings: torch.Tensor,
                target: torch.Tensor | None = None, seed: int = 0, epochs: int = 4, batch_size: int = 128,
                lr: float = 1e-3, distill_weight: float = 1.0, hidden: int = HEAD_HIDDEN,
                progress: bool = False, desc: str = "heads") -> ExitHeads:
    """Train one head per layer on cached features ``z`` (N, layers, width).

    ``target`` (N, embed_dim), the FP32 model's embedding, turns on distilled supervision.
    """
    n, layers, width = z.shape
    heads = ExitHeads(layers, width, class_embeddings.shape[1], hidden, seed)
    opt = torch.optim.Adam(heads.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps = math.ceil(n / batch_size)
    for _ in tqdm(range(epochs), desc=desc, disable=None if progress else True, leave=False):
        perm = torch.randperm(n, generator=gen)
        for s in range(steps):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            emb = heads(z[idx])
            logits = heads.logits(emb, class_embeddings)
            y = labels[idx]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat_interleave(layers)) * layers
            if target is not None:
                cos = F.cosine_similarity(emb, target[idx].unsqueeze(1), dim=-1)  # (B, layers)
                loss = loss + distill_weight * (1 - cos).mean(0).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                heads.log_scale.clamp_(0, MAX_LOG_SCALE)
    return heads.eval()


@torch.no_grad()
def head_logits(heads: ExitHeads, z: torch.Tensor, class_embeddings: torch.Tensor,
                batch_size: int = 2000) -> torch.Tensor:
    """Cosine logits (N, layers, classes) of trained heads on features ``z`` (N, layers, width)."""
    out = [heads.logits(heads(z[i:i + batch_size]), class_embeddings) for i in range(0, len(z), batch_size)]
    return torch.cat(out)
