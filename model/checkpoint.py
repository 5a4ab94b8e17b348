"""Saving and loading FP32 model checkpoints with their config, training config and metrics."""
from __future__ import annotations

from pathlib import Path

import torch

from model.errors import QexitError, load_artifact
from model.text import load_class_embeddings
from model.vit import CLIPViT, ViTConfig

FORMAT = "qexit-vit"
VERSION = 1
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "vit_fmnist.pt"


def save_checkpoint(path: Path | str, model: CLIPViT, train_config: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION, "config": model.cfg.to_dict(),
            "state_dict": model.state_dict(), "train_config": train_config or {},
            "metrics": metrics or {}}
    blob.update(extra or {})
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def read_checkpoint(path: Path | str) -> dict:
    """The raw checkpoint dict, checked for format and version."""
    return load_artifact(path, "checkpoint", FORMAT, VERSION,
                         f"train one with `qexit train --out {path}` or use the shipped {SHIPPED_WEIGHTS.name}",
                         weights_only=False)


def load_checkpoint(path: Path | str = SHIPPED_WEIGHTS, config: ViTConfig | None = None) -> tuple[CLIPViT, dict]:
    """(model in eval mode, checkpoint dict). ``config``, when given, must match the file's."""
    blob = read_checkpoint(path)
    cfg = ViTConfig.from_dict(blob["config"])
    if config is not None and config != cfg:
        diff = {k: (v, cfg.to_dict()[k]) for k, v in config.to_dict().items() if cfg.to_dict()[k] != v}
        raise QexitError(f"checkpoint {path} does not match the config (wanted vs file: {diff}); "
                         "pass the matching config or retrain")
    model = CLIPViT(cfg, blob["state_dict"]["class_embeddings"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise QexitError(f"checkpoint {path} does not match its own config ({first}); retrain it") from None
    model.eval()
    return model, blob


def new_model(cfg: ViTConfig) -> CLIPViT:
    return CLIPViT(cfg, load_class_embeddings())
