"""Per-layer features for the exit heads and the gate, extracted once and cached on disk.

Full token tensors are too big to keep (10k images × 12 layers × 50 tokens × 64), so for every
layer ``l`` (1-based, after block ``l``) we keep only what the heads and the gate read:

* ``ssa[:, l-1]``: Spatio-Semantic Aggregation (Eq. 3), the mean of the patch tokens
  ``h̄_l = (1/P) Σ_i h_{l,i}`` ([CLS] left out);
* ``cls[:, l-1]``: the [CLS] token ``h_{l,0}``;
* ``sav[:, l-1]``: the spatial-activation variance ``SAV_l = (1/(P·D)) Σ_i ‖h_{l,i} − h̄_l‖²``,
  the spread of the patch tokens around their mean (the paper's definition was lost in
  extraction; this is the plain variance over the spatial positions, averaged over channels);

plus the backbone's own full-depth embedding and logits. When a reference FP32 model is given, the
noise-to-signal ratio and MSE per layer (Eq. 1) are accumulated over the split too, by
``model.qirc.NoiseAccumulator`` (the one implementation of the QIRC metrics).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from model.exits.backbones import Backbone
from model.exits.fixed import token_sums
from model.golden import BATCH
from model.qirc import NoiseAccumulator, reference_states
from model.vit import CLIPViT

FEATURE_VERSION = 4
CACHE_DIR = Path(".cache/qexit/exits")


@dataclass
class Features:
    ssa: torch.Tensor              # (N, depth, width)
    cls: torch.Tensor              # (N, depth, width)
    sav: torch.Tensor              # (N, depth)
    final_embedding: torch.Tensor  # (N, embed_dim), the backbone's own head
    final_logits: torch.Tensor     # (N, classes); arg-max = the full-depth prediction
    labels: torch.Tensor           # (N,)
    nsr: torch.Tensor | None = None  # (depth,), when extracted against a reference
    mse: torch.Tensor | None = None  # (depth,)
    ssa_sum: torch.Tensor | None = None       # int8 mode: (N, depth, width) int64, the patch-token sums
    sav_num: torch.Tensor | None = None       # int8 mode: (N, depth) int64, the SAV numerators
    token_scales: torch.Tensor | None = None  # int8 mode: (depth,) float64, the blocks' token scales

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def depth(self) -> int:
        return self.ssa.shape[1]

    def take(self, idx: torch.Tensor) -> "Features":
        """The rows ``idx`` (per-layer noise statistics are kept as they are)."""
        fixed = ("nsr", "mse", "token_scales")
        per_row = {f.name: getattr(self, f.name)[idx] for f in fields(self)
                   if f.name not in fixed and getattr(self, f.name) is not None}
        return Features(**per_row, **{k: getattr(self, k) for k in fixed})

    def noise(self) -> dict[str, list[float]] | None:
        """The per-layer noise profile as a ``model.qirc``-style dict, or None."""
        if self.nsr is None:
            return None
        return {"nsr": self.nsr.tolist(), "mse": self.mse.tolist()}


def layer_features(hidden: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states (depth × (N, T, D)) → (ssa (N, depth, D), cls (N, depth, D), sav (N, depth))."""
    h = torch.stack(hidden, dim=1).float()  # (N, L, T, D)
    patches = h[:, :, 1:]
    ssa = patches.mean(dim=2)
    sav = ((patches - ssa.unsqueeze(2)) ** 2).mean(dim=(2, 3))
    return ssa, h[:, :, 0], sav


@torch.no_grad()
def extract_features(backbone: Backbone, images: torch.Tensor, labels: torch.Tensor,
                     reference: CLIPViT | None = None, batch_size: int = BATCH,
                     progress: bool = False, desc: str = "features") -> Features:
    """Run the backbone over ``images`` in batches and keep the per-layer features."""
    parts: dict[str, list[torch.Tensor]] = {"ssa": [], "cls": [], "sav": [], "emb": [], "logits": [],
                                            "ssa_sum": [], "sav_num": []}
    scales = None
    noise = NoiseAccumulator(len(reference.blocks)) if reference is not None else None
    for i in tqdm(range(0, len(images), batch_size), desc=desc, disable=None if progress else True, leave=False):
        x = images[i:i + batch_size]
        out = backbone.forward(x)
        hs, emb, logits = out.hidden_states, out.embedding, out.logits
        ssa, cls, sav = layer_features(hs)
        if out.tokens is not None:     # the integer sums the fixed-point exit head reads
            sums = [token_sums(t) for t in out.tokens]
            parts["ssa_sum"].append(torch.stack([s for s, _ in sums], 1))
            parts["sav_num"].append(torch.stack([v for _, v in sums], 1))
            scales = torch.tensor(out.token_scales, dtype=torch.float64)
        parts["ssa"].append(ssa)
        parts["cls"].append(cls)
        parts["sav"].append(sav)
        parts["emb"].append(emb.float())
        parts["logits"].append(logits.float())
        if noise is not None:
            noise.update(reference_states(reference, x), hs)
    feats = Features(torch.cat(parts["ssa"]), torch.cat(parts["cls"]), torch.cat(parts["sav"]),
                     torch.cat(parts["emb"]), torch.cat(parts["logits"]), labels.clone())
    if parts["ssa_sum"]:
        feats.ssa_sum, feats.sav_num = torch.cat(parts["ssa_sum"]), torch.cat(parts["sav_num"])
        feats.token_scales = scales
    if noise is not None:
        q = noise.result()
        feats.nsr = torch.tensor(q["nsr"], dtype=torch.float32)
        feats.mse = torch.tensor(q["mse"], dtype=torch.float32)
    return feats


def cache_key(backbone: Backbone, split: str, images: torch.Tensor, labels: torch.Tensor,
              with_noise: bool) -> str:
    h = hashlib.sha256()
    for part in (backbone.key, split, str(with_noise), str(FEATURE_VERSION), str(tuple(images.shape))):
        h.update(part.encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_features(backbone: Backbone, split: str, images: torch.Tensor, labels: torch.Tensor,
                    reference: CLIPViT | None = None, cache_dir: Path | str | None = CACHE_DIR,
                    batch_size: int = BATCH, progress: bool = False) -> tuple[Features, bool]:
    """(features, whether they came from the cache). ``cache_dir`` None turns the cache off."""
    if cache_dir is None:
        return extract_features(backbone, images, labels, reference, batch_size, progress,
                                f"{backbone.mode} {split}"), False
    key = cache_key(backbone, split, images, labels, reference is not None)
    path = Path(cache_dir) / f"{backbone.mode}-{split}-{key}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            return Features(**blob), True
        except Exception:  # a corrupt or stale cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    feats = extract_features(backbone, images, labels, reference, batch_size, progress, f"{backbone.mode} {split}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({f.name: getattr(feats, f.name) for f in fields(feats)}, tmp)
    tmp.replace(path)
    return feats, False
