"""LRA-EE early exits on the quantized ViT (paper §4–§7) and their evaluation.

Trains SSA and [CLS] exit heads on cached features of the frozen backbone (hard-label and
FP32-distilled), a learned gate per layer (confidence, top-2 margin, spatial-activation
variance), drops pathological layers by the INR rule, picks per-layer thresholds (LCT) on the
gating split under a FLOPs budget, and evaluates on the test split: top-1 and FLOPs saving
against INT8 full depth, the exit distribution, the four-quadrant Rescue-Effect table, gate
selectivity, the Pareto frontier, [CLS] vs SSA per layer, the (i)–(v) ablation and the CLS-EE,
confidence-only and PABEE baselines, as mean ± std over seeds. Writes reports/exits/
(README.md, summary.json, exit_distribution.json, PNGs). Backbone features are cached under
--cache-dir, so a rerun only trains the small heads and gates.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import SHIPPED_WEIGHTS, load_checkpoint
from model.data import GATE_SIZE, SPLITS, load_fashion_mnist, split_indices
from model.errors import QexitError
from model.exits.backbones import MODES, dynamic_backbone, fp32_backbone, int8_backbone
from model.exits.evaluate import ExitConfig, check_disjoint, mean_std, run_mode
from model.exits.features import CACHE_DIR, cached_features
from model.flops import block_flops, exit_head_flops, full_depth_flops, patch_embed_flops
from qexit.reports import REPORTS_DIR, markdown_table, report_dir, write_summary

HELP = "LRA-EE early exits: heads, gate, LCT thresholds, layer pruning, Rescue-Effect evaluation"
MODE_NAMES = {"fp32": "FP32", "dynamic": "dynamic INT8 (quantize_dynamic)", "int8": "integer-only INT8 (golden)"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_WEIGHTS,
                   help="FP32 checkpoint: the backbone to quantize and the distillation teacher")
    p.add_argument("--intmodel", type=Path, default=None,
                   help="IntModel file for the int8 mode; when none is given, the checkpoint is quantized, "
                        "calibrated on --calib-images training images")
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


def split_ids(split: str, n: int) -> np.ndarray:
    """Global image ids (0..59999 official train, 60000.. test) of the first ``n`` images of a split."""
    if split == "test":
        return 60000 + np.arange(n)
    train_idx, gate_idx = split_indices()
    return (train_idx if split == "train" else gate_idx).numpy()[:n]


def _pct(ms: tuple[float, float], nseeds: int) -> str:
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}" if nseeds > 1 else f"{100 * ms[0]:.2f}"


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

    model, _ = load_checkpoint(args.checkpoint)
    cfg = model.cfg
    xcfg.resolve_candidates(cfg.depth)
    data = {"train": load_fashion_mnist("train").subset(args.train_images),
            "gate": load_fashion_mnist(args.gate_split).subset(args.gate_images),
            "test": load_fashion_mnist("test").subset(args.test_images)}
    ids = {"train": split_ids("train", len(data["train"])), "gate": split_ids(args.gate_split, len(data["gate"])),
           "test": split_ids("test", len(data["test"]))}
    check_disjoint(ids["gate"], ids["test"], "gating split", "test split")
    check_disjoint(ids["gate"], ids["train"], "gating split", "head-training images")
    check_disjoint(ids["train"], ids["test"], "head-training images", "test split")

    backbones = {"fp32": fp32_backbone(model)}
    for m in modes:
        if m == "dynamic":
            backbones[m] = dynamic_backbone(model)
        elif m == "int8":
            calib = load_fashion_mnist("train").subset(args.calib_images).images
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
    seconds_total = time.time() - t_start

    with report_dir("exits", args.out) as out:
        summary, dist = build_summary(cfg, modes, results, noise, top1_fp32, xcfg, args, len(data["test"]))
        summary.update({"seconds_total": round(seconds_total, 1), "seconds_features": round(seconds_features, 1),
                        "features_cached": cached_all, "threads": args.threads})
        write_summary(out, summary)
        (out / "exit_distribution.json").write_text(json.dumps(dist, indent=2) + "\n")
        plot_all(out, cfg, modes, results, noise, top1_fp32)
        (out / "README.md").write_text(readme(cfg, modes, results, noise, top1_fp32, xcfg, args, summary))
    print(f"exits: {modes[0]}: top-1 full depth {100 * summary['top1_int8_full']:.2f}% → LRA-EE "
          f"{100 * summary['top1_lraee']:.2f}% at {100 * summary['flops_saving']:.1f}% FLOPs saving; rescue "
          f"{100 * summary['rescue']:.2f}% vs loss {100 * summary['loss']:.2f}% ({seconds_total:.0f} s) → "
          f"{Path(args.out) / 'exits'}")
    return 0


def _layer_fractions(run: dict, depth: int) -> np.ndarray:
    """A seed's exit distribution on the grid of layers 1..depth (last = full depth)."""
    frac = np.zeros(depth)
    for layer, f in zip(run["exit_distribution"]["layers"], run["exit_distribution"]["fraction"]):
        frac[layer - 1] += f
    return frac


def build_summary(cfg, modes, results, noise, top1_fp32, xcfg, args, n_test) -> tuple[dict, dict]:
    """(flat summary.json, exit_distribution.json)."""
    summary = {"mode": modes[0], "modes": modes, "top1_fp32": top1_fp32, "budget": xcfg.budget,
               "seeds": xcfg.seeds, "images_test": n_test, "checkpoint": str(args.checkpoint)}
    dist = {"mode_primary": modes[0], "depth": cfg.depth, "full_depth_flops": full_depth_flops(cfg),
            "flops_backbone_to_layer": [patch_embed_flops(cfg) + l * block_flops(cfg) for l in range(1, cfg.depth + 1)],
            "flops_exit_head": exit_head_flops(cfg, xcfg.head_hidden),
            "note": "fraction[l-1] = share of test images that exit after block l (the last entry is full depth); "
                    "per seed, flops[i] is the FLOPs of an image exiting at layers[i], counting every exit head "
                    "it ran on the way", "modes": {}}
    for i, m in enumerate(modes):
        runs = results[m]
        vals = {
            "top1_int8_full": [r["top1_full"] for r in runs],
            "top1_lraee": [r["top1_lraee"] for r in runs],
            "flops_saving": [r["flops_saving"] for r in runs],
            "rescue": [r["quadrants"]["rescue"] for r in runs],
            "loss": [r["quadrants"]["loss"] for r in runs],
            "both_correct": [r["quadrants"]["both_correct"] for r in runs],
            "both_wrong": [r["quadrants"]["both_wrong"] for r in runs],
            "net_rescue": [r["quadrants"]["net_rescue"] for r in runs],
            "quantization_errors": [r["quadrants"]["quantization_errors"] for r in runs],
            "rescue_of_quantization_errors": [r["quadrants"]["rescue_of_quantization_errors"] for r in runs],
            "top1_exited": [r["selectivity"]["top1_exited"] for r in runs],
            "top1_full_depth_group": [r["selectivity"]["top1_full_depth_group"] for r in runs],
            "exited_fraction": [r["selectivity"]["exited_fraction"] for r in runs],
        }
        for b in ("confidence_only", "cls_ee", "pabee"):
            vals[f"top1_{b}"] = [r["baselines"][b]["top1"] for r in runs]
            vals[f"flops_saving_{b}"] = [r["baselines"][b]["flops_saving"] for r in runs]
        fr = np.stack([_layer_fractions(r, cfg.depth) for r in runs])
        for k, v in vals.items():
            mean, std = mean_std(v)
            summary[f"{k}_{m}"] = mean
            summary[f"{k}_{m}_std"] = std
            if i == 0:
                summary[k] = mean
                summary[f"{k}_std"] = std
        summary[f"exit_distribution_{m}"] = fr.mean(0).tolist()
        summary[f"rescue_effect_{m}"] = bool(summary[f"rescue_{m}"] > summary[f"loss_{m}"])
        if "fp32" in modes and m != "fp32":
            fp32_net = mean_std([r["quadrants"]["net_rescue"] for r in results["fp32"]])[0]
            summary[f"net_rescue_beyond_fp32_{m}"] = summary[f"net_rescue_{m}"] - fp32_net
        summary[f"pruned_layers_{m}"] = sorted({d["layer"] for r in runs for d in r["pruned"]})
        summary[f"nsr_per_layer_{m}"] = noise[m]["nsr"]
        if i == 0:
            summary["exit_distribution"] = fr.mean(0).tolist()
            summary["rescue_effect"] = summary[f"rescue_effect_{m}"]
        dist["modes"][m] = {
            "layers": list(range(1, cfg.depth + 1)), "fraction": fr.mean(0).tolist(),
            "fraction_std": fr.std(0).tolist(),
            "top1": summary[f"top1_lraee_{m}"], "flops_saving": summary[f"flops_saving_{m}"],
            "top1_full_depth": summary[f"top1_int8_full_{m}"],
            "seeds": [{"seed": r["seed"], **r["exit_distribution"],
                       "thresholds": {str(k): v for k, v in r["thresholds"].items()}, "gate": r["gate"]}
                      for r in runs],
        }
    return summary, dist


def plot_all(out: Path, cfg, modes, results, noise, top1_fp32) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.arange(1, cfg.depth + 1)
    # exit distribution
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(modes)
    for i, m in enumerate(modes):
        fr = np.stack([_layer_fractions(r, cfg.depth) for r in results[m]])
        ax.bar(layers + (i - (len(modes) - 1) / 2) * width, 100 * fr.mean(0), width, yerr=100 * fr.std(0),
               label=MODE_NAMES[m])
    ax.set_xlabel(f"exit layer ({cfg.depth} = full depth)")
    ax.set_ylabel("test images exiting (%)")
    ax.set_xticks(layers)
    ax.legend()
    ax.set_title("LRA-EE exit distribution (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out / "exit_distribution.png", dpi=120)
    plt.close(fig)

    # Pareto frontier, [CLS] vs SSA, noise (quantized modes only): one panel per mode
    noisy = [m for m in modes if max(noise[m]["nsr"]) > 0]
    for name, draw, panels in (("pareto", _draw_pareto, modes), ("cls_vs_ssa", _draw_cls_ssa, modes),
                               ("noise", _draw_noise, noisy)):
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, m in zip(axes[0], panels):
            draw(ax, cfg, m, results[m], noise[m], top1_fp32)
            ax.set_title(f"{MODE_NAMES[m]}")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)


def _draw_pareto(ax, cfg, m, runs, noise, top1_fp32):
    r = runs[0]
    for key, style, label in (("lraee", "o-", "LRA-EE (LCT per budget)"),
                              ("gate_uniform", "d-.", "learned gate, one threshold"),
                              ("confidence_only", "s--", "confidence only"), ("pabee", "^:", "PABEE (patience)")):
        pts = np.asarray(r["pareto"][key])
        pts = pts[np.argsort(pts[:, 0])]
        ax.plot(100 * pts[:, 0], 100 * pts[:, 1], style, ms=4, label=label)
    ax.plot([0], [100 * r["top1_full"]], "k*", ms=12, label="full depth (this mode)")
    ax.axhline(100 * top1_fp32, color="grey", lw=0.8, ls="--", label="FP32 full depth")
    ax.set_xlabel("FLOPs saving (%)")
    ax.set_ylabel("test top-1 (%)")
    ax.legend(fontsize=8)


def _draw_cls_ssa(ax, cfg, m, runs, noise, top1_fp32):
    layers = np.arange(1, cfg.depth + 1)
    for key, label in (("ssa_dist", "SSA (distilled)"), ("ssa_hard", "SSA (hard)"), ("cls_dist", "[CLS] (distilled)")):
        v = 100 * np.asarray([r["per_layer_top1"][key] for r in runs])
        ax.errorbar(layers, v.mean(0), yerr=v.std(0), marker="o", ms=3, capsize=2, label=label)
    ax.axhline(100 * runs[0]["top1_full"], color="k", lw=0.8, label="full depth (this mode)")
    ax.set_xlabel("layer")
    ax.set_ylabel("exit-head test top-1 (%)")
    ax.set_xticks(layers)
    ax.legend(fontsize=8)


def _draw_noise(ax, cfg, m, runs, noise, top1_fp32):
    layers = np.arange(1, cfg.depth + 1)
    ax.semilogy(layers, noise["nsr"], "o-", label="NSR (Eq. 1)")
    ax.set_xlabel("layer")
    ax.set_ylabel("NSR")
    ax2 = ax.twinx()
    ax2.semilogy(layers, runs[0]["inr"], "s--", color="C1", label="INR (Eq. 5), seed 0")
    for d in runs[0]["pruned"]:
        ax2.plot([d["layer"]], [d["inr"]], "rx", ms=12, mew=2)
    ax2.set_ylabel("INR")
    ax.set_xticks(layers)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8)


def rescue_verdict(m: str, s: dict, noise: dict) -> str:
    """One sentence on whether a Rescue Effect appears in mode ``m``, and how much of it is quantization's."""
    r, lo, net = 100 * s[f"rescue_{m}"], 100 * s[f"loss_{m}"], 100 * s[f"net_rescue_{m}"]
    text = (f"rescue {r:.2f}% > loss {lo:.2f}%: a Rescue Effect appears (net {net:+.2f}%p)" if r > lo else
            f"rescue {r:.2f}% ≤ loss {lo:.2f}%: no Rescue Effect (net {net:+.2f}%p)")
    if m == "fp32":
        return text + "; this is the no-quantization control."
    nsr = noise["nsr"]
    text += (f". Quantization errors (full depth wrong, FP32 right): {100 * s[f'quantization_errors_{m}']:.2f}% of "
             f"images, of which the exits rescue {100 * s[f'rescue_of_quantization_errors_{m}']:.2f}%")
    if f"net_rescue_beyond_fp32_{m}" in s:
        text += (f"; the FP32 control's net rescue is {net - 100 * s[f'net_rescue_beyond_fp32_{m}']:+.2f}%p, so "
                 f"{100 * s[f'net_rescue_beyond_fp32_{m}']:+.2f}%p is attributable to quantization")
    return text + (f". NSR on the gating split: {nsr[0]:.3g} after block 1, max {max(nsr):.3g} "
                   f"(block {int(np.argmax(nsr)) + 1}).")


def readme(cfg, modes, results, noise, top1_fp32, xcfg, args, s) -> str:
    n = xcfg.seeds
    pm = lambda k, m: _pct((s[f"{k}_{m}"], s[f"{k}_{m}_std"]), n)  # noqa: E731
    lines = ["# LRA-EE early exits", "",
             f"Checkpoint `{args.checkpoint}`; ViT depth {cfg.depth}, width {cfg.width}; modes "
             f"{', '.join(MODE_NAMES[m] for m in modes)}. Heads trained on {args.train_images} train images, gate and "
             f"thresholds on the `{args.gate_split}` split (resampled per seed), everything below on "
             f"{s['images_test']} test images. FLOPs budget {xcfg.budget:g} (thresholds chosen on the gating split "
             f"only). Mean ± std over {n} seed(s). Took {s['seconds_total']:.0f} s "
             f"({s['seconds_features']:.0f} s of it backbone features, "
             f"{'all from the cache' if s['features_cached'] else 'computed'}) with {s['threads']} torch thread(s).",
             "", "## Main results (test split)", ""]
    rows = [["FP32 full depth (reference)", "-", "0.00", f"{100 * top1_fp32:.2f}", "-"]]
    for m in modes:
        d = 100 * (s[f"top1_lraee_{m}"] - s[f"top1_int8_full_{m}"])
        rows.append([f"{MODE_NAMES[m]} full depth", m, "0.00", pm("top1_int8_full", m), "-"])
        rows.append(["LRA-EE", m, pm("flops_saving", m), pm("top1_lraee", m), f"{d:+.2f}"])
    lines += [markdown_table(["Method", "Mode", "FLOPs saving (%)", "Top-1 (%)", "Δ vs full depth (%p)"], rows), ""]

    lines += ["## Four quadrants: LRA-EE against the same mode's full depth", ""]
    rows = [[m, pm("both_correct", m), pm("rescue", m), pm("loss", m), pm("both_wrong", m), pm("net_rescue", m)]
            for m in modes]
    lines += [markdown_table(["Mode", "Both correct (%)", "Rescue (%)", "Loss (%)", "Both wrong (%)",
                              "Net rescue (%p)"], rows), ""]
    for m in modes:
        lines.append(f"- **{MODE_NAMES[m]}**: " + rescue_verdict(m, s, noise[m]))
    lines += ["", "The paper reports 9.5% rescue against 7.1% loss on CLIP ViT-B/32, where NSR exceeds 0.5 in "
              "late blocks. Rescue > loss alone does not show that quantization is being escaped: exit heads "
              "trained on the frozen features can beat the backbone's own head even without any quantization. "
              "The FP32 control (the same pipeline on the unquantized backbone) and the count of full-depth "
              "errors that FP32 does not make (quantization errors) separate the two.", ""]

    lines += ["## Gate selectivity", ""]
    rows = [[m, pm("exited_fraction", m), pm("top1_exited", m), pm("top1_full_depth_group", m),
             pm("top1_int8_full", m)] for m in modes]
    lines += [markdown_table(["Mode", "Exited early (%)", "Top-1 of exited (%)", "Top-1 of full-depth group (%)",
                              "Full-depth top-1, all (%)"], rows), ""]

    lines += ["## Exit distribution", "", "![exit distribution](exit_distribution.png)", ""]
    rows = []
    for m in modes:
        fr = np.stack([_layer_fractions(r, cfg.depth) for r in results[m]])
        rows.append([m] + [f"{100 * v:.1f}" for v in fr.mean(0)])
    lines += [markdown_table(["Mode"] + [f"L{l}" for l in range(1, cfg.depth)] + [f"L{cfg.depth} (full)"], rows),
              "", "Fractions (%) of test images exiting after each block; per-layer FLOPs are in "
              "`exit_distribution.json`.", ""]

    lines += ["## FLOPs–accuracy Pareto frontier (seed 0)", "", "![Pareto](pareto.png)", "",
              "LRA-EE points re-run LCT on the gating split for budgets "
              f"{', '.join(f'{b:g}' for b in xcfg.pareto_budgets)}; "
              "the learned-gate and confidence-only curves use one threshold for every layer, swept over the grid; "
              "PABEE sweeps its patience. All points are test-split results.", ""]

    lines += ["## [CLS] vs SSA exit heads per layer (test top-1, %)", "", "![CLS vs SSA](cls_vs_ssa.png)", ""]
    for m in modes:
        rows = []
        for key, label in (("cls_dist", "[CLS], distilled"), ("ssa_dist", "SSA, distilled"), ("ssa_hard", "SSA, hard")):
            v = np.asarray([r["per_layer_top1"][key] for r in results[m]])
            rows.append([label] + [_pct((a, b), n) for a, b in zip(v.mean(0), v.std(0, ddof=1) if n > 1 else 0 * v[0])])
        lines += [f"**{MODE_NAMES[m]}**", "", markdown_table(["Head"] + [f"L{l}" for l in range(1, cfg.depth + 1)],
                                                               rows), ""]

    lines += ["## Ablation (§6.1)", ""]
    for m in modes:
        rows = []
        for key in ("i", "ii", "iii", "iv", "v"):
            a = [r["ablation"][key] for r in results[m]]
            rows.append([f"({key})", a[0]["config"], a[0]["head"], a[0]["supervision"], a[0]["routing"],
                         _pct(mean_std([x["flops_saving"] for x in a]), n), _pct(mean_std([x["top1"] for x in a]), n)])
        lines += [f"**{MODE_NAMES[m]}**", "", markdown_table(["#", "Configuration", "Head", "Supervision", "Routing",
                                                               "FLOPs saving (%)", "Top-1 (%)"], rows), ""]
    lines += ["SSA-Last runs the exit head instead of the backbone's final head, hence its small FLOPs difference.", ""]

    lines += ["## Baselines (same budget, chosen on the gating split)", ""]
    rows = []
    for m in modes:
        rows.append([m, "full depth (own head)", "0.00", pm("top1_int8_full", m), "-"])
        for b, label in (("cls_ee", "CLS-EE ([CLS] heads, confidence)"), ("confidence_only", "confidence only (SSA)"),
                         ("pabee", "PABEE (patience)")):
            settings = ", ".join(sorted({r["baselines"][b]["setting"] for r in results[m]}))
            rows.append([m, label, pm(f"flops_saving_{b}", m), pm(f"top1_{b}", m), settings])
        rows.append([m, "LRA-EE", pm("flops_saving", m), pm("top1_lraee", m), "per-layer LCT"])
    lines += [markdown_table(["Mode", "Method", "FLOPs saving (%)", "Top-1 (%)", "Setting"], rows), ""]

    lines += ["## Pathological layer pruning (Eq. 6) and noise", ""]
    if any(max(noise[m]["nsr"]) > 0 for m in modes):
        lines += ["![noise](noise.png)", ""]
    for m in modes:
        rows = [[l + 1, f"{noise[m]['nsr'][l]:.4g}", f"{noise[m]['mse'][l]:.4g}", f"{results[m][0]['inr'][l]:.4g}",
                 f"{100 * results[m][0]['gate_accuracy_per_layer'][l]:.1f}"] for l in range(cfg.depth)]
        lines += [f"**{MODE_NAMES[m]}** (seed 0)", "",
                  markdown_table(["Layer", "NSR", "MSE", "INR", "SSA head top-1 on gating split (%)"], rows), ""]
        for r in results[m]:
            dropped = "; ".join(f"layer {d['layer']}: {d['reason']}" for d in r["pruned"]) or "none"
            lines.append(f"- seed {r['seed']}: candidates {r['candidates_initial']} → kept {r['candidates']}; "
                         f"dropped: {dropped}")
        lines.append("")

    lines += ["## Thresholds and gates (seed 0, for the hardware comparator)", ""]
    for m in modes:
        r = results[m][0]
        rows = [[layer, "off" if not np.isfinite(t) else f"{t:g}", *[f"{w:.4g}" for w in r["gate"]["weight"][i]],
                 f"{r['gate']['bias'][i]:.4g}"] for i, (layer, t) in enumerate(r["thresholds"].items())]
        lines += [f"**{MODE_NAMES[m]}**", "",
                  markdown_table(["Layer", "τ", "w_conf", "w_margin", "w_sav", "b"], rows), ""]

    lines += ["## Definitions", "",
              "- SSA: mean of the patch tokens; SAV: mean squared deviation of the patch tokens from that mean.",
              f"- Heads: LN → Linear({cfg.width}→{xcfg.head_hidden}) → ReLU → Linear(→{cfg.embed_dim}) → cosine with "
              "the class embeddings × learned scale. Distilled = CE + (1 − cos) to the FP32 model's full-depth embedding.",
              "- Gate: σ(w·[confidence, top-2 margin, SAV] + b) per layer, BCE on the gating split.",
              "- NSR_l = ‖H^q_l − H_l‖ / ‖H_l − H_{l−1}‖ over the gating split; INR_l = (SSA head top-1 on the gating "
              "split) / NSR_l (Eq. 5); Eq. 6 drops layer l if INR_l < sqrt(INR_{l−1}·INR_{l+1}) / κ and "
              f"NSR_l > sqrt(NSR_{{l−1}}·NSR_{{l+1}}) (a noise spike), κ = {xcfg.prune_kappa:g}.",
              f"- LCT: τ_l = τ_0 + β(1 − r_l) from the rescaled log-INR r_l, swept over the grid {args.grid} "
              "(LO:HI:N), then refined one layer at a time; accuracy is maximised with mean FLOPs ≤ budget on the "
              "gating split.",
              "- FLOPs of an exit at layer l: patch embedding + blocks 1..l + every exit head (and gate) run so far; "
              "full depth: the whole backbone + its final head (+ the exit heads run). Saving = 1 − mean/full-depth.",
              ""]
    return "\n".join(lines)
