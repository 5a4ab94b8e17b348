"""Train the FP32 CLIP-style ViT on the embedded default (or --data) and write a checkpoint.

AdamW with warm-up and a cosine schedule; a resumable state file (<out>.state) is written
after every epoch, so an interrupted run continues with --resume. The defaults reproduce
the shipped weights (model/weights/vit_fmnist.pt).
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from model.checkpoint import save_checkpoint
from model.train import TrainConfig, evaluate, train
from model.vit import ViTConfig
from qexit.commands.common import add_data_args, load_split, positive

HELP = "train the FP32 ViT (AdamW, cosine schedule, resumable)"


def add_arguments(p):
    d, t = ViTConfig(), TrainConfig()
    p.add_argument("--out", type=Path, default=Path("checkpoints/vit.pt"), help="checkpoint to write")
    p.add_argument("--resume", action="store_true", help="continue from <out>.state if it exists")
    for name in ("width", "depth", "heads", "patch", "mlp_ratio"):
        p.add_argument(f"--{name.replace('_', '-')}", type=positive, default=getattr(d, name), help=f"model {name}")
    p.add_argument("--epochs", type=positive, default=t.epochs)
    p.add_argument("--batch-size", type=positive, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--train-images", type=positive, default=None, help="use only the first N training images")
    p.add_argument("--threads", type=positive, default=None, help="torch CPU threads (default: all cores)")
    add_data_args(p)


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    tr = load_split(args, "train", args.train_images)
    gate = load_split(args, "gate", 2000)
    cfg = ViTConfig(image_size=tr.images.shape[-1], channels=tr.images.shape[1], patch=args.patch,
                    width=args.width, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
                    num_classes=len(tr.classes))
    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, seed=args.seed)
    model, metrics = train(cfg, tcfg, tr, args.out, eval_data=gate, resume=args.resume)
    test = load_split(args, "test", cfg=cfg)
    top1 = evaluate(model, test, progress=True)
    info = {"top1_test": top1, "params": model.num_params(), "train_time_s": metrics["train_time_s"],
            "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
            "config": cfg.to_dict(), "train_config": asdict(tcfg)}
    save_checkpoint(args.out, model, asdict(tcfg), {**metrics, **info})
    args.out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"test top-1 {top1:.4f}, {info['params']} parameters, trained in {metrics['train_time_s']:.0f} s; "
          f"wrote {args.out}")
    return 0
