"""FLOPs of the ViT forward pass, per part, from a ``ViTConfig`` (one place for this arithmetic).

Conventions (per image):

* A GEMM ``(m × k) · (k × n)`` costs ``2·m·k·n`` FLOPs (a multiply-accumulate is two), plus
  ``m·n`` for a bias add.
* Element-wise work is counted per element: LayerNorm ``LN_FLOPS`` (mean, subtract, square,
  variance, scale and shift), softmax ``SOFTMAX_FLOPS`` (max, exp, sum, divide), GELU/ReLU
  ``GELU_FLOPS`` / 1, a residual add 1. These are small next to the GEMMs (about 3% of a block)
  and are kept so that the totals are honest, not to model any particular hardware.
* The exit head of ``model.exits`` (pool, LN, Linear, ReLU, Linear, normalise, cosine against the
  class embeddings) and its gate (softmax, top-2, spatial-activation variance, a 3-input linear
  unit) are counted in ``exit_head_flops``.

An early-exit policy with candidate layers ``c_1 < ... < c_K`` runs the exit head (and gate)
at every candidate it reaches, so a sample that exits at ``c_k`` costs the embedding, blocks
``1..c_k`` and ``k`` exit heads; a sample that never exits costs the full backbone, ``K`` exit
heads and the final head (``early_exit_flops``).
"""
from __future__ import annotations

from model.vit import ViTConfig

LN_FLOPS = 5
SOFTMAX_FLOPS = 4
GELU_FLOPS = 8


def gemm_flops(m: int, k: int, n: int, bias: bool = True) -> int:
    return 2 * m * k * n + (m * n if bias else 0)


def patch_embed_flops(cfg: ViTConfig) -> int:
    """Patch projection (a GEMM over the patches) plus the position-embedding add."""
    return gemm_flops(cfg.num_patches, cfg.patch_dim, cfg.width) + cfg.tokens * cfg.width


def block_flops_breakdown(cfg: ViTConfig) -> dict[str, int]:
    """FLOPs of one pre-LN transformer block, by operation (GEMMs name their weight)."""
    t, d, h = cfg.tokens, cfg.width, cfg.hidden
    return {
        "ln1": LN_FLOPS * t * d,
        "qkv": gemm_flops(t, d, 3 * d),
        "scores": 2 * t * t * d + cfg.heads * t * t,  # Q·Kᵀ over all heads, then the 1/sqrt(dh) scale
        "softmax": SOFTMAX_FLOPS * cfg.heads * t * t,
        "context": 2 * t * t * d,  # attention · V over all heads
        "proj": gemm_flops(t, d, d),
        "residual1": t * d,
        "ln2": LN_FLOPS * t * d,
        "fc1": gemm_flops(t, d, h),
        "gelu": GELU_FLOPS * t * h,
        "fc2": gemm_flops(t, h, d),
        "residual2": t * d,
    }


def block_flops(cfg: ViTConfig) -> int:
    return sum(block_flops_breakdown(cfg).values())


def _cosine_flops(cfg: ViTConfig) -> int:
    """L2-normalise an embedding and take its dot product with every class embedding."""
    e = cfg.embed_dim
    return 3 * e + gemm_flops(1, e, cfg.num_classes, bias=False)


def final_head_flops(cfg: ViTConfig) -> int:
    """The backbone's own head: ln_post on [CLS], projection, cosine logits."""
    return LN_FLOPS * cfg.width + gemm_flops(1, cfg.width, cfg.embed_dim, bias=False) + _cosine_flops(cfg)


def exit_head_flops(cfg: ViTConfig, head_hidden: int, pooled: bool = True) -> int:
    """One exit head and its gate at one layer.

    ``pooled``: the SSA head averages the patch tokens first; a [CLS] head does not. Both gates
    compute the spatial-activation variance over the patch tokens.
    """
    p, d, c = cfg.num_patches, cfg.width, cfg.num_classes
    pool = p * d if pooled else 0
    mlp = LN_FLOPS * d + gemm_flops(1, d, head_hidden) + head_hidden + gemm_flops(1, head_hidden, cfg.embed_dim)
    gate = SOFTMAX_FLOPS * c + 2 * c + 3 * p * d + 2 * 3 + 1
    return pool + mlp + _cosine_flops(cfg) + gate


def full_depth_flops(cfg: ViTConfig) -> int:
    """The plain backbone, no exit heads: the "full depth" reference for FLOPs savings."""
    return patch_embed_flops(cfg) + cfg.depth * block_flops(cfg) + final_head_flops(cfg)


def early_exit_flops(cfg: ViTConfig, candidates: list[int], head_hidden: int, pooled: bool = True) -> list[int]:
    """FLOPs of a sample that exits at each candidate layer (1-based), then of one that runs to
    full depth: a list of ``len(candidates) + 1`` numbers."""
    if list(candidates) != sorted(set(candidates)) or not all(1 <= c <= cfg.depth for c in candidates):
        raise ValueError(f"candidates {candidates} must be increasing layers in 1..{cfg.depth}")
    head = exit_head_flops(cfg, head_hidden, pooled)
    out = [patch_embed_flops(cfg) + c * block_flops(cfg) + (k + 1) * head for k, c in enumerate(candidates)]
    out.append(full_depth_flops(cfg) + len(candidates) * head)
    return out


# --------------------------------------------------------------------------- BOPs (mixed precision)
# A MAC of a b_w-bit by a b_a-bit operand is b_w * b_a bit operations (BOPs), the measure of
# APQ/MAQEE and PMQ. Block i at (w, a) bits (model.quantize's widths): its four weight GEMMs are
# w x a, Q·Kᵀ is a x a, and probabilities · V is 8 x a (the probabilities are 7-bit unsigned in
# an int8 container). The patch embedding, the final head and the exit heads stay 8 x 8.
# Element-wise work (LayerNorm, softmax, GELU, adds) has no MACs and is not counted in BOPs.

def block_macs(cfg: ViTConfig) -> dict[str, int]:
    """MACs of one block by GEMM (the weight GEMMs name their weight)."""
    t, d, h = cfg.tokens, cfg.width, cfg.hidden
    return {"qkv": t * d * 3 * d, "proj": t * d * d, "fc1": t * d * h, "fc2": t * h * d,
            "scores": t * t * d, "context": t * t * d}


def block_bops(cfg: ViTConfig, w: int = 8, a: int = 8) -> int:
    m = block_macs(cfg)
    return (m["qkv"] + m["proj"] + m["fc1"] + m["fc2"]) * w * a + m["scores"] * a * a + m["context"] * 8 * a


def embed_bops(cfg: ViTConfig) -> int:
    return cfg.num_patches * cfg.patch_dim * cfg.width * 64


def final_head_bops(cfg: ViTConfig) -> int:
    return (cfg.width * cfg.embed_dim + cfg.embed_dim * cfg.num_classes) * 64


def exit_head_bops(cfg: ViTConfig, head_hidden: int) -> int:
    """One SSA exit head's dense layers and cosine (8 x 8)."""
    return (cfg.width * head_hidden + head_hidden * cfg.embed_dim + cfg.embed_dim * cfg.num_classes) * 64
