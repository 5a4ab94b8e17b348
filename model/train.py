"""Training the FP32 CLIP-style ViT (AdamW, warm-up + cosine schedule, resumable)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model.checkpoint import read_checkpoint, save_checkpoint, new_model
from model.data import Dataset
from model.errors import QexitError
from model.vit import CLIPViT, ViTConfig

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    seed: int = 0
    shift: int = 2  # random translation in pixels (data augmentation)
    flip: bool = True

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.shift < 0:
            raise QexitError(f"bad training config {self}: epochs, batch size and lr must be positive")


def augment(images: torch.Tensor, shift: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padded) and horizontal flip."""
    n, c, h, w = images.shape
    if shift:
        padded = F.pad(images, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        iy = dy[:, None] + torch.arange(h)[None]
        ix = dx[:, None] + torch.arange(w)[None]
        images = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                        iy[:, None, :, None], ix[:, None, None, :]]
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


@torch.no_grad()
def evaluate(model: CLIPViT, data: Dataset, batch_size: int = 500, progress: bool = False) -> float:
    """Top-1 accuracy (fraction) of the FP32 model."""
    model.eval()
    correct = 0
    for i in tqdm(range(0, len(data), batch_size), desc="eval", disable=None if progress else True, leave=False):
        logits = model(data.images[i:i + batch_size])
        correct += (logits.argmax(-1) == data.labels[i:i + batch_size]).sum().item()
    return correct / len(data)


def train(cfg: ViTConfig, tcfg: TrainConfig, train_data: Dataset, out: Path | str,
          eval_data: Dataset | None = None, resume: bool = False, progress: bool = True) -> tuple[CLIPViT, dict]:
    """Train and write ``out`` (the final checkpoint) and ``out``.state (resumable state after every epoch)."""
    out = Path(out)
    state_path = out.with_suffix(out.suffix + ".state")
    torch.manual_seed(tcfg.seed)
    model = new_model(cfg)
    if train_data.images.shape[1:] != (cfg.channels, cfg.image_size, cfg.image_size):
        raise QexitError(f"training images have shape {tuple(train_data.images.shape[1:])}, the config needs "
                         f"({cfg.channels}, {cfg.image_size}, {cfg.image_size})")
    # weight decay on weight matrices only: not on biases, norms, positions or the [CLS] token
    decays = {n: p.dim() >= 2 and "embed" not in n and "token" not in n for n, p in model.named_parameters()}
    decay = [p for n, p in model.named_parameters() if decays[n]]
    no_decay = [p for n, p in model.named_parameters() if not decays[n]]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tcfg.lr)
    steps_per_epoch = math.ceil(len(train_data) / tcfg.batch_size)
    total = steps_per_epoch * tcfg.epochs
    warmup = int(tcfg.warmup_epochs * steps_per_epoch)
    start_epoch, history, elapsed = 0, [], 0.0
    if resume and state_path.exists():
        st = read_checkpoint(state_path)
        if ViTConfig.from_dict(st["config"]) != cfg or st["train_config"] != asdict(tcfg):
            raise QexitError(f"{state_path} was written with another config; delete it or pass the same options")
        model.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        start_epoch, history, elapsed = st["epoch"], st["history"], st["elapsed_s"]
        print(f"resuming from epoch {start_epoch} of {tcfg.epochs}")
    gen = torch.Generator().manual_seed(tcfg.seed)
    for epoch in range(start_epoch, tcfg.epochs):
        t0 = time.time()
        gen.manual_seed(tcfg.seed * 1000 + epoch)
        perm = torch.randperm(len(train_data), generator=gen)
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tcfg.epochs}", disable=None if progress else True)
        loss_sum = correct = 0.0
        for s in bar:
            step = epoch * steps_per_epoch + s
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, tcfg.lr)
            idx = perm[s * tcfg.batch_size:(s + 1) * tcfg.batch_size]
            x = augment(train_data.images[idx], tcfg.shift, tcfg.flip, gen)
            y = train_data.labels[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(-1) == y).sum().item()
            if s % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        elapsed += time.time() - t0
        rec = {"epoch": epoch + 1, "train_loss": loss_sum / len(train_data),
               "train_acc": correct / len(train_data), "elapsed_s": round(elapsed, 1)}
        if eval_data is not None:
            rec["eval_acc"] = evaluate(model, eval_data)
        history.append(rec)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()), flush=True)
        save_checkpoint(state_path, model, asdict(tcfg), extra={
            "optimizer": opt.state_dict(), "epoch": epoch + 1, "history": history, "elapsed_s": elapsed})
    metrics = {"history": history, "train_time_s": round(elapsed, 1)}
    save_checkpoint(out, model, asdict(tcfg), metrics)
    return model, metrics
