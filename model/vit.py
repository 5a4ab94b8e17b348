"""The FP32 CLIP-style vision transformer.

Patch embedding (a Linear on flattened patches, so it is a plain GEMM in hardware),
[CLS] + patch tokens with learned positions, pre-LN blocks
(LN → MHA → residual → LN → MLP(GELU) → residual), final LN on [CLS], projection, and
cosine logits against fixed class text embeddings times a learned logit scale, as in
CLIP zero-shot classification.

The defaults are the embedded Fashion-MNIST model. A real CLIP vision tower (model/clip.py)
also sets ``pre_ln`` (a LayerNorm on the tokens before the first block), ``act="quick_gelu"``
(x·σ(1.702x)), its LayerNorm ``ln_eps`` and per-channel pixel statistics.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from model.errors import QexitError

# Fashion-MNIST pixel statistics; inputs are uint8 and normalised inside the model.
PIXEL_MEAN = 0.2860
PIXEL_STD = 0.3530
ACTIVATIONS = ("gelu", "quick_gelu")


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 28
    patch: int = 4
    channels: int = 1
    width: int = 64
    depth: int = 12
    heads: int = 4
    mlp_ratio: int = 4
    embed_dim: int = 384  # the text encoder's dimension (all-MiniLM-L6-v2)
    num_classes: int = 10
    pre_ln: bool = False               # LayerNorm on the tokens before the first block (CLIP's pre_layrnorm)
    act: str = "gelu"                  # the MLP's activation: one of ACTIVATIONS
    ln_eps: float = 1e-5               # every LayerNorm's eps
    pixel_mean: tuple[float, ...] = (PIXEL_MEAN,)  # per channel, or one for all channels
    pixel_std: tuple[float, ...] = (PIXEL_STD,)

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise QexitError(f"ViT config {f.name}={v!r} must be a positive integer")
        if not isinstance(self.pre_ln, bool):
            raise QexitError(f"ViT config pre_ln={self.pre_ln!r} must be true or false")
        if self.act not in ACTIVATIONS:
            raise QexitError(f"ViT config act={self.act!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
        if not _is_real(self.ln_eps) or not 0 < self.ln_eps < 1:
            raise QexitError(f"ViT config ln_eps={self.ln_eps!r} must be a number between 0 and 1")
        for name in ("pixel_mean", "pixel_std"):
            v = getattr(self, name)
            if not isinstance(v, (tuple, list)) or len(v) not in (1, self.channels) or not all(map(_is_real, v)):
                raise QexitError(f"ViT config {name}={v!r} must hold one number per channel "
                                 f"({self.channels}) or one for all channels")
            object.__setattr__(self, name, tuple(float(x) for x in v))  # lists from a file become tuples
        if min(self.pixel_std) <= 0:
            raise QexitError(f"ViT config pixel_std={self.pixel_std!r} must be positive")
        if self.image_size % self.patch:
            raise QexitError(f"image_size {self.image_size} is not a multiple of patch {self.patch}")
        if self.width % self.heads:
            raise QexitError(f"width {self.width} is not a multiple of heads {self.heads}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def num_patches(self) -> int:
        return self.grid ** 2

    @property
    def tokens(self) -> int:
        return self.num_patches + 1

    @property
    def patch_dim(self) -> int:
        return self.patch * self.patch * self.channels

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        return self.width * self.mlp_ratio

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise QexitError(f"unknown ViT config keys {sorted(unknown)}")
        return cls(**d)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) → (N, P, patch*patch*C), patches in row-major order, pixels (ph, pw, c)."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def normalize_pixels(images: torch.Tensor, mean: tuple[float, ...] = (PIXEL_MEAN,),
                     std: tuple[float, ...] = (PIXEL_STD,)) -> torch.Tensor:
    """uint8 pixels (N, C, H, W) → normalised float, with one mean/std per channel (or one for all)."""
    mean, std = torch.tensor(mean).reshape(-1, 1, 1), torch.tensor(std).reshape(-1, 1, 1)
    return (images.float() / 255.0 - mean) / std


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's GELU approximation, x·σ(1.702x)."""
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.fc1 = nn.Linear(cfg.width, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.width)
        self.act = quick_gelu if cfg.act == "quick_gelu" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class CLIPViT(nn.Module):
    """Image tower + fixed class text embeddings. ``forward`` returns cosine logits."""

    def __init__(self, cfg: ViTConfig, class_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.tokens, cfg.width) * 0.02)
        # Identity has no parameters, so the state dict of a model without pre-LN is unchanged
        self.ln_pre = nn.LayerNorm(cfg.width, eps=cfg.ln_eps) if cfg.pre_ln else nn.Identity()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_post = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if class_embeddings is None:
            class_embeddings = torch.randn(cfg.num_classes, cfg.embed_dim)
        if tuple(class_embeddings.shape) != (cfg.num_classes, cfg.embed_dim):
            raise QexitError(f"class embeddings have shape {tuple(class_embeddings.shape)}, the config "
                             f"needs ({cfg.num_classes}, {cfg.embed_dim})")
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))

    def _checked(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise QexitError(f"images have shape {tuple(images.shape)}, the model needs "
                             f"(N, {cfg.channels}, {cfg.image_size}, {cfg.image_size})")
        return images

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → normalised float pixels, with the config's pixel statistics."""
        return normalize_pixels(self._checked(images), self.cfg.pixel_mean, self.cfg.pixel_std)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → tokens (N, T, width) before the first block."""
        return self.embed_pixels(self.normalized(images))

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixels (N, C, H, W) → tokens (N, T, width) before the first block."""
        return self.ln_pre(self.patch_tokens(pixels))

    def patch_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixels → [CLS] and patch tokens with positions, before the pre-LN."""
        x = self.patch_embed(patchify(self._checked(pixels), self.cfg.patch))
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + self.pos_embed

    def hidden_states(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The tokens after every block: a list of ``depth`` tensors (N, T, width)."""
        x = self.embed(images)
        out = []
        for blk in self.blocks:
            x = blk(x)
            out.append(x)
        return out

    def image_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final tokens → projected (unnormalised) image embedding from [CLS]."""
        return self.proj(self.ln_post(tokens[:, 0]))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised float pixels (CLIP-preprocessed for a real CLIP) → projected image embedding."""
        x = self.embed_pixels(pixels)
        for blk in self.blocks:
            x = blk(x)
        return self.image_embedding(x)

    def cosine_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * F.normalize(embedding, dim=-1) @ self.class_embeddings.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.cosine_logits(self.encode_image(self.normalized(images)))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
