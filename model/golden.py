"""The integer-only forward pass of the ViT on an IntModel: the truth the RTL is compared with.

Every activation between the input (pixels - 128) and the final logits is an int64 tensor
holding int8/int32 values; every step is one kernel of ``model/intops.py``. The outputs of
every block (int8 tokens) are returned so the RTL can be compared block by block.

Final logits are ``emb_q · class_q`` (int32): the arg-max of a cosine against unit-norm class
embeddings does not depend on the image embedding's norm, so no division is needed.

For the per-kernel ablation only, ``float_kernels`` replaces named integer kernels
("softmax", "gelu", "layernorm") with their float counterparts on dequantized values
(quantized back to the same int8 scale). That mode is, by construction, not integer-only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import intops
from model.errors import QexitError
from model.quantize import IntModel, pixels_to_patches

FLOAT_KERNELS = ("softmax", "gelu", "layernorm")
# Images per forward pass when running many. The golden model alone runs about as fast at 50 as
# at 250 (benchmarks/bench_golden.py --batches 250,50); the exits' int8 feature extraction took
# 7.4 s per 1,000 images at 50 against 11.7 s at 250 on the 2-core machine.
BATCH = 50


@dataclass
class GoldenOutput:
    blocks: list[torch.Tensor]            # per block: int8 tokens (N, T, width)
    embedding: torch.Tensor               # int8 (N, embed_dim)
    logits: torch.Tensor                  # int32 (N, num_classes)
    overflow: intops.OverflowCounter = field(default_factory=intops.OverflowCounter)

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(-1)


class Golden:
    """Runs an IntModel. ``Golden(im).forward(images)`` → GoldenOutput."""

    def __init__(self, im: IntModel, float_kernels: tuple[str, ...] = (), record=None):
        """``record``, when given, is called as ``record(kind, name, inputs, output)`` for every
        operation (kinds: gemm, matmul, layernorm, softmax, gelu, table, add); the RTL checks use it to
        run each operation of the model on the same integers."""
        unknown = set(float_kernels) - set(FLOAT_KERNELS)
        if unknown:
            raise QexitError(f"unknown float kernels {sorted(unknown)}; choose from {FLOAT_KERNELS}")
        self.im = im
        self.cfg = im.config
        self.float_kernels = set(float_kernels)
        self.record = record

    def _rec(self, kind: str, name: str, inputs: dict, output: torch.Tensor) -> torch.Tensor:
        if self.record is not None:
            self.record(kind, name, inputs, output)
        return output

    # ---- kernels (integer unless ablated)
    def _layernorm(self, x, name, c, lo=intops.INT8_MIN, hi=intops.INT8_MAX):
        prm = self.im.prefix(name)
        if "layernorm" not in self.float_kernels:
            return self._rec("layernorm", name, {"x": x}, intops.layernorm(x, **prm, counter=c, name=name, lo=lo, hi=hi))
        # ablation: float LN with the same affine, quantized to the same output scale
        s_in, s_out = self._ln_scales(name)
        g = prm["g"].double() / 2.0 ** (prm["shift"].item() - intops.LN_FRAC_BITS) * s_out
        b = prm["b"].double() / 2.0 ** prm["shift"].item() * s_out
        y = F.layer_norm(x.double() * s_in, (x.shape[-1],), g, b)
        return intops.saturate(torch.round(y / s_out).to(torch.int64), lo, hi, c, name)

    def _ln_scales(self, name: str) -> tuple[float, float]:
        s = self.im.scales
        if name == "head.ln":
            return s[f"b{self.cfg.depth - 1}.x_out"], s["lnp"]
        if name == "pre.ln":
            return s["pre_in"], s["b0.x_in"]
        blk, which = name.split(".")
        return s[f"{blk}.x_in" if which == "ln1" else f"{blk}.x_mid"], s[f"{blk}.{which}"]

    def _softmax(self, scores, blk, c):
        prm = self.im.prefix(f"{blk}.softmax")
        if "softmax" not in self.float_kernels:
            return self._rec("softmax", f"{blk}.softmax", {"scores": scores},
                             intops.softmax(scores, **prm, counter=c, name=f"{blk}.softmax"))
        s = self.im.scales
        s_in = s[f"{blk}.q"] * s[f"{blk}.k"] / math.sqrt(self.cfg.head_dim)
        p = torch.softmax(scores.double() * s_in, -1)
        return torch.round(p * 2 ** intops.PROB_BITS).to(torch.int64).clamp(0, 127)

    def _gelu(self, h, blk, c, lo=intops.INT8_MIN, hi=intops.INT8_MAX):
        prm = self.im.prefix(f"{blk}.gelu")
        if "table" in prm:          # an activation given as a table (quick_gelu): no float ablation
            return self._rec("table", f"{blk}.gelu", {"x": h},
                             intops.table_lookup(h, prm["table"], c, f"{blk}.gelu", lo, hi))
        if "gelu" not in self.float_kernels:
            return self._rec("gelu", f"{blk}.gelu", {"x": h},
                             intops.gelu(h, **prm, counter=c, name=f"{blk}.gelu", lo=lo, hi=hi))
        s = self.im.scales
        y = F.gelu(h.double() * s[f"{blk}.h"]) / s[f"{blk}.g"]
        return intops.saturate(torch.round(y).to(torch.int64), lo, hi, c, f"{blk}.gelu")

    def _linear(self, x, name, c, lo=intops.INT8_MIN, hi=intops.INT8_MAX):
        prm = self.im.prefix(name)
        acc = intops.gemm(x, prm["w"], prm.get("b"), c, name)
        out = intops.requantize(acc, prm["m"], prm["shift"], c, name, lo, hi)
        return self._rec("gemm", name, {"a": x, "w": prm["w"], "bias": prm.get("b"), "mult": prm["m"],
                                        "shift": prm["shift"]}, out)

    # ---- the network
    def embed(self, images: torch.Tensor, c: intops.OverflowCounter) -> torch.Tensor:
        cfg, p = self.cfg, self.im.params
        if images.dim() != 4 or tuple(images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
            raise QexitError(f"images have shape {tuple(images.shape)}, the IntModel needs "
                             f"(N, {cfg.channels}, {cfg.image_size}, {cfg.image_size})")
        if images.dtype != torch.uint8:
            raise QexitError(f"images must be uint8 pixels, got {images.dtype}")
        a = pixels_to_patches(images, cfg.patch)                       # int8 (N, P, patch_dim)
        acc = intops.gemm(a, p["embed.w"], p["embed.b"], c, "embed")  # bias (P, width): per token
        tok = self._rec("gemm", "embed", {"a": a, "w": p["embed.w"], "bias": p["embed.b"], "mult": p["embed.m"],
                                          "shift": p["embed.shift"]},
                        intops.requantize(acc, p["embed.m"], p["embed.shift"], c, "embed"))
        cls = p["embed.cls"].expand(len(images), 1, -1)
        x = torch.cat([cls, tok], dim=1)
        return self._layernorm(x, "pre.ln", c) if cfg.pre_ln else x

    def block(self, x: torch.Tensor, i: int, c: intops.OverflowCounter) -> torch.Tensor:
        cfg, blk = self.cfg, f"b{i}"
        n, t, d = x.shape
        r = intops.int_range(self.im.block_widths[i][1])       # the block's activation range (int8 unless mixed)
        a = self._layernorm(x, f"{blk}.ln1", c, *r)
        qkv = self._linear(a, f"{blk}.qkv", c, *r)
        q, k, v = qkv.reshape(n, t, 3, cfg.heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        kt = k.transpose(-2, -1)
        scores = self._rec("matmul", f"{blk}.scores", {"a": q, "b": kt}, intops.matmul(q, kt, c, f"{blk}.scores"))
        probs = self._softmax(scores, blk, c)
        ctx = intops.matmul(probs, v, c, f"{blk}.ctx")
        m_ctx, s_ctx = self.im.p(f"{blk}.ctx.m"), self.im.p(f"{blk}.ctx.shift")
        ctx = self._rec("matmul", f"{blk}.ctx", {"a": probs, "b": v, "mult": m_ctx, "shift": s_ctx},
                        intops.requantize(ctx, m_ctx, s_ctx, c, f"{blk}.ctx", *r))
        ctx = ctx.transpose(1, 2).reshape(n, t, d)
        attn = self._linear(ctx, f"{blk}.proj", c, *r)
        x = self._rec("add", f"{blk}.add1", {"a": x, "b": attn},
                      intops.add(x, attn, **self.im.prefix(f"{blk}.add1"), counter=c, name=f"{blk}.add1"))
        h = self._linear(self._layernorm(x, f"{blk}.ln2", c, *r), f"{blk}.fc1", c, *r)
        mlp = self._linear(self._gelu(h, blk, c, *r), f"{blk}.fc2", c, *r)
        return self._rec("add", f"{blk}.add2", {"a": x, "b": mlp},
                         intops.add(x, mlp, **self.im.prefix(f"{blk}.add2"), counter=c, name=f"{blk}.add2"))

    def head(self, x: torch.Tensor, c: intops.OverflowCounter) -> tuple[torch.Tensor, torch.Tensor]:
        """Final tokens → (int8 embedding, int32 logits)."""
        cls = self._layernorm(x[:, 0], "head.ln", c)
        emb = self._linear(cls, "head.proj", c)
        classes = self.im.p("head.class_emb").t()
        logits = self._rec("matmul", "head.logits", {"a": emb, "b": classes},
                           intops.matmul(emb, classes, c, "head.logits"))
        return emb, logits

    def forward(self, images: torch.Tensor, counter: intops.OverflowCounter | None = None) -> GoldenOutput:
        c = counter if counter is not None else intops.OverflowCounter()
        x = self.embed(images, c)
        blocks = []
        for i in range(self.cfg.depth):
            x = self.block(x, i, c)
            blocks.append(x)
        emb, logits = self.head(x, c)
        return GoldenOutput(blocks, emb, logits, c)

    def dequantize_blocks(self, out: GoldenOutput) -> list[torch.Tensor]:
        """Block outputs as float tensors in the FP32 model's units (for analyses and exit heads)."""
        s = self.im.scales
        return [b.float() * s[f"b{i}.x_out"] for i, b in enumerate(out.blocks)]


def run_batched(im: IntModel, images: torch.Tensor, batch_size: int = BATCH, progress: bool = False,
                float_kernels: tuple[str, ...] = (), keep_blocks: bool = False) -> GoldenOutput:
    """The golden model over many images in batches; blocks are kept only when asked (memory)."""
    g = Golden(im, float_kernels)
    c = intops.OverflowCounter()
    blocks, embs, logits = [], [], []
    bar = tqdm(range(0, len(images), batch_size), desc="golden int8", disable=None if progress else True, leave=False)
    for i in bar:
        out = g.forward(images[i:i + batch_size], c)
        embs.append(out.embedding)
        logits.append(out.logits)
        if keep_blocks:
            blocks.append(out.blocks)
    stacked = [torch.cat([b[j] for b in blocks]) for j in range(im.config.depth)] if keep_blocks else []
    return GoldenOutput(stacked, torch.cat(embs), torch.cat(logits), c)


def hidden_states(im: IntModel, images: torch.Tensor) -> list[torch.Tensor]:
    """Dequantized block outputs (float, N×T×width per block), as CLIPViT.hidden_states gives."""
    g = Golden(im)
    return g.dequantize_blocks(g.forward(images))
