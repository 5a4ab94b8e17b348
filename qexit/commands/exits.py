"""LRA-EE early exits on the quantized ViT (paper §4–§7) and their evaluation.

Trains SSA and [CLS] exit heads on cached features of the frozen backbone (hard-label and
FP32-distilled), a learned gate per layer (confidence, top-2 margin, spatial-activation
variance), drops pathological layers by the INR rule, picks per-layer thresholds (LCT) on the
gating split under a FLOPs budget, and evaluates on the test split: top-1 and FLOPs saving
against full depth in the same mode, the exit distribution, the four-quadrant Rescue-Effect table, gate
selectivity, the Pareto frontier, [CLS] vs SSA per layer, the (i)–(v) ablation and the CLS-EE,
confidence-only and PABEE baselines, as mean ± std over seeds. Writes reports/exits/
(README.md, summary.json, exit_distribution.json, PNGs) and, in int8 mode, exit_path.pt:
the fixed-point head, the threshold registers and the test split's head outputs (seed 0), which
`qexit hls` and `qexit verify head|comparator` read. Backbone features are cached under
--cache-dir, so a rerun only trains the small heads and gates.

This module only parses the arguments, loads the data and backbones and writes the files; the
evaluation is model.exits.evaluate, the aggregates model.exits.summary, the README and plots
qexit.render.exits.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import SHIPPED_WEIGHTS
from model.data import GATE_SIZE, SPLITS, split_ids
from model.errors import QexitError
from model.exits import exit_path
from model.exits.backbones import MODES, dynamic_backbone, file_digest, fp32_backbone, int8_backbone
from model.exits.evaluate import ExitConfig, check_disjoint, run_mode
from model.exits.features import CACHE_DIR, cached_features
from model.exits.summary import build_summary
from model.quantize import SHIPPED_INTMODEL
from qexit.commands.common import add_model_args, load_model, load_split, model_name
from qexit.render import exits as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary

HELP = "LRA-EE early exits: heads, gate, LCT thresholds, layer pruning, Rescue-Effect evaluation"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)           # --checkpoint or --model clip:DIR: the backbone and the distillation teacher
    p.add_argument("--intmodel", type=Path, default=None,
                   help="IntModel file for the int8 mode (default: the shipped one for the shipped checkpoint; "
                        "for any other model, the checkpoint is quantized, calibrated on --calib-images images)")
    p.add_argument("--calib-images", type=int, default=512, help="calibration images when quantizing for int8")
    p.add_argument("--modes", default="int8,dynamic,fp32",
                   help=f"comma-separated backbone modes from {', '.join(MODES)}; the first is the headline, fp32 "
                        f"is the no-quantization control (int8 needs the integer golden model)")
    p.add_argument("--budget", type=float, default=0.85,
                   help="FLOPs budget in (0, 1]: the largest mean FLOPs, as a fraction of full depth, that the "
                        "thresholds may use on the gating split (0.85 = save at least 15%%)")
    p.add_argument("--grid", default="0.5:0.99:25",
                   help="threshold grid LO:HI:N of the LCT sweep (N evenly spaced values in [LO, HI]; "
                        "'always' and 'off' are added to it)")
    p.add_argument("--seeds", type=int, default=3, help="independent runs (heads, gate, gating resample)")
    p.add_argument("--candidates", default="all",
                   help="candidate exit layers before pruning, e.g. 4,6,8,10 (1-based); 'all' = 1..depth-1")
    p.add_argument("--prune-kappa", type=float, default=1.5,
                   help="pathological-layer rule (Eq. 6): drop a layer whose INR is this many times below its "
                        "neighbours' geometric mean while its NSR spikes above theirs")
    p.add_argument("--train-images", type=int, default=10000, help="train-split images the heads learn from")
    p.add_argument("--gate-images", type=int, default=GATE_SIZE,
                   help="gating-split images for the gate and the thresholds (a prefix of the split)")
    p.add_argument("--test-images", type=int, default=10000,
                   help="test images to evaluate on (a prefix of the test split, 10000 = all)")
    p.add_argument("--gate-split", choices=SPLITS, default="gate",
                   help="split that trains the gate and picks thresholds; must not overlap the test split "
                        "or the head-training images")
    p.add_argument("--head-epochs", type=int, default=4, help="epochs of exit-head training")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/exits/")
    p.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="feature cache folder")
    p.add_argument("--no-cache", action="store_true", help="recompute backbone features, do not cache them")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for these small tensors on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise QexitError(f"unknown --modes {text!r}; choose from {', '.join(MODES)}")
    return list(dict.fromkeys(modes))


def parse_grid(text: str) -> tuple[float, ...]:
    try:
        lo, hi, n = text.split(":")
        lo, hi, n = float(lo), float(hi), int(n)
    except ValueError:
        raise QexitError(f"--grid {text!r} must be LO:HI:N, e.g. 0.5:0.99:25") from None
    if not (0 < lo <= hi < 1 and n >= 1):
        raise QexitError(f"--grid {text!r} needs 0 < LO <= HI < 1 and N >= 1")
    return tuple(float(x) for x in np.round(np.linspace(lo, hi, n), 4))


def parse_candidates(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() == "all":
        return None
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise QexitError(f"--candidates {text!r} must be 'all' or comma-separated layer numbers like 4,6,8") from None


def run(args) -> int:
    t_start = time.time()
    xcfg = ExitConfig(budget=args.budget, candidates=parse_candidates(args.candidates), seeds=args.seeds,
                      head_epochs=args.head_epochs, prune_kappa=args.prune_kappa, grid=parse_grid(args.grid))
    modes = parse_modes(args.modes)
    for name, v in (("--train-images", args.train_images), ("--gate-images", args.gate_images),
                    ("--test-images", args.test_images), ("--threads", args.threads)):
        if v is not None and v < 1:
            raise QexitError(f"{name} {v} must be at least 1")
    torch.set_num_threads(args.threads)
    progress = not args.quiet

    model, _ = load_model(args)
    cfg = model.cfg
    xcfg.resolve_candidates(cfg.depth)
    train = load_split(args, "train", cfg=cfg)        # read once: the heads' images and the calibration's
    data = {"train": train.subset(args.train_images),
            "gate": load_split(args, args.gate_split, args.gate_images, cfg),
            "test": load_split(args, "test", args.test_images, cfg)}
    if args.data is None:       # the embedded splits share one pool of images: check they do not overlap
        ids = {"train": split_ids("train", len(data["train"])), "gate": split_ids(args.gate_split, len(data["gate"])),
               "test": split_ids("test", len(data["test"]))}
        check_disjoint(ids["gate"], ids["test"], "gating split", "test split")
        check_disjoint(ids["gate"], ids["train"], "gating split", "head-training images")
        check_disjoint(ids["train"], ids["test"], "head-training images", "test split")
    elif args.gate_split in ("train", "test"):
        raise QexitError(f"--gate-split {args.gate_split} with --data would tune the gate on images the heads "
                         "learn from or the test split; use --gate-split gate (DIR/gate)")

    if args.intmodel is None and args.model is None and Path(args.checkpoint).resolve() == SHIPPED_WEIGHTS.resolve():
        args.intmodel = SHIPPED_INTMODEL
    backbones = {"fp32": fp32_backbone(model)}
    for m in modes:
        if m == "dynamic":
            backbones[m] = dynamic_backbone(model)
        elif m == "int8":
            calib = train.subset(args.calib_images).images
            backbones[m] = int8_backbone(model, args.intmodel, calib)
    cache_dir = None if args.no_cache else args.cache_dir

    t_feat = time.time()
    cached_all = True

    def feats(mode, split, with_noise=False):
        nonlocal cached_all
        d = data[split]
        f, hit = cached_features(backbones[mode], split if split != "gate" else f"gate-{args.gate_split}",
                                 d.images, d.labels, model if with_noise else None, cache_dir, progress=progress)
        cached_all &= hit
        return f

    fp32_train = feats("fp32", "train")
    fp32_test = feats("fp32", "test")
    per_mode = {m: {"train": feats(m, "train"), "gate": feats(m, "gate", True), "test": feats(m, "test")}
                for m in modes}
    seconds_features = time.time() - t_feat

    ce = model.class_embeddings
    fp32_correct = (fp32_test.final_logits.argmax(-1) == fp32_test.labels).numpy()
    top1_fp32 = float(fp32_correct.mean())
    results = {}
    for m in modes:
        f = per_mode[m]
        results[m] = run_mode(cfg, ce, f["train"], f["gate"], f["test"], fp32_train.final_embedding,
                              f["gate"].noise(), xcfg, progress, desc=f"{m} seeds", fp32_correct=fp32_correct)
    noise = {m: per_mode[m]["gate"].noise() for m in modes}
    exit_paths = [r.pop("exit_path", None) for m in modes for r in results[m]]
    seconds_total = time.time() - t_start

    with report_dir("exits", args.out) as out:
        summary, dist = build_summary(cfg, modes, results, noise, top1_fp32, xcfg, model_name(args),
                                      len(data["test"]))
        summary.update({"seconds_total": round(seconds_total, 1), "seconds_features": round(seconds_features, 1),
                        "features_cached": cached_all, "threads": args.threads})
        write_summary(out, summary)
        (out / "exit_distribution.json").write_text(json.dumps(dist, indent=2) + "\n")
        if exit_paths[0] is not None:     # the int8 mode's seed 0: what the exit hardware runs
            exit_path.save(out / exit_path.FILENAME, exit_path.ExitPath(
                **exit_paths[0], depth=cfg.depth, tokens=cfg.num_patches + 1,
                intmodel_digest=file_digest(args.intmodel) if args.intmodel else None))
        render.plot_all(out, cfg, modes, results, noise, top1_fp32)
        (out / "README.md").write_text(render.readme(cfg, modes, results, noise, top1_fp32, xcfg, summary,
                                                     args.train_images, args.gate_split, args.grid))
    print(f"exits: {modes[0]}: top-1 full depth {100 * summary['top1_full']:.2f}% → LRA-EE "
          f"{100 * summary['top1_lraee']:.2f}% at {100 * summary['flops_saving']:.1f}% FLOPs saving; rescue "
          f"{100 * summary['rescue']:.2f}% vs loss {100 * summary['loss']:.2f}% ({seconds_total:.0f} s) → "
          f"{Path(args.out) / 'exits'}")
    return 0
