"""The FP32 CLIP-style vision transformer.

Patch embedding (a Linear on flattened patches, so it is a plain GEMM in hardware),
[CLS] + patch tokens with learned positions, pre-LN blocks
(LN → MHA → residual → LN → MLP(GELU) → residual), final LN on [CLS], projection, and
cosine logits against fixed class text embeddings times a learned logit scale, as in
CLIP zero-shot classification.
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

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or v < 1:
                raise QexitError(f"ViT config {f.name}={v!r} must be a positive integer")
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


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, C, H, W) → (N, P, patch*patch*C), patches in row-major order, pixels (ph, pw, c)."""
    n, c, h, w = images.shape
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def normalize_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → normalised float."""
    return (images.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD


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
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        self.fc1 = nn.Linear(cfg.width, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CLIPViT(nn.Module):
    """Image tower + fixed class text embeddings. ``forward`` returns cosine logits."""

    def __init__(self, cfg: ViTConfig, class_embeddings: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = nn.Linear(cfg.patch_dim, cfg.width)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.tokens, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.ln_post = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if class_embeddings is None:
            class_embeddings = torch.randn(cfg.num_classes, cfg.embed_dim)
        if tuple(class_embeddings.shape) != (cfg.num_classes, cfg.embed_dim):
            raise QexitError(f"class embeddings have shape {tuple(class_embeddings.shape)}, the config "
                             f"needs ({cfg.num_classes}, {cfg.embed_dim})")
        self.register_buffer("class_embeddings", F.normalize(class_embeddings.float(), dim=-1))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → tokens (N, T, width) before the first block."""
        cfg = self.cfg
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise QexitError(f"images have shape {tuple(images.shape)}, the model needs "
                             f"(N, {cfg.channels}, {cfg.image_size}, {cfg.image_size})")
        x = self.patch_embed(patchify(normalize_pixels(images), cfg.patch))
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

    def cosine_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp() * F.normalize(embedding, dim=-1) @ self.class_embeddings.t()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        for blk in self.blocks:
            x = blk(x)
        return self.cosine_logits(self.image_embedding(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
