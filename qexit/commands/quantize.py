"""Quantize the FP32 model into an IntModel and measure both INT8 modes against FP32.

Calibrates static int8 scales on the gating split (never the test split), writes the
IntModel (the one artifact the golden model, the RTL and the exit heads read), and reports:
top-1 of FP32, the integer-only INT8 golden model and the paper's dynamic INT8; the QIRC
layer-wise noise analysis of both INT8 modes (table + PNG); saturation counts; and, with
--ablation, the top-1 with each integer nonlinear kernel swapped for its float version.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from model import qirc
from model.checkpoint import SHIPPED_WEIGHTS
from model.golden import FLOAT_KERNELS, Golden, run_batched
from model.quantize import check_widths, dynamic_int8, quantize, shipped_intmodel_digest
from model.train import evaluate
from qexit.commands.common import INTMODEL_OUT, add_model_args, load_model, load_split, parse_assignment, positive
from qexit.render import quantize as render
from qexit.reports import report_dir, write_summary

HELP = "FP32 → IntModel (static INT8), accuracy of both INT8 modes, QIRC noise analysis"


def add_arguments(p):
    add_model_args(p)
    p.add_argument("--calib-images", type=positive, default=512, help="gating-split images used for calibration")
    p.add_argument("--percentile", type=float, default=99.99,
                   help="calibration percentile of |activation| (100 = max calibration)")
    p.add_argument("--test-images", type=positive, default=None, help="evaluate on the first N test images (default: all)")
    p.add_argument("--qirc-images", type=positive, default=1000, help="test images for the QIRC analysis")
    p.add_argument("--ablation", action="store_true", help="also run the per-kernel float ablation")
    p.add_argument("--assignment", default=None,
                   help="per-block bit-widths W:A (weights:activations, 2..8), comma-separated, one per block; "
                        "default 8:8 everywhere (see `qexit mixed`)")
    p.add_argument("--out", type=Path, default=INTMODEL_OUT,
                   help="where to write the IntModel (later steps read the shipped one unless given --intmodel)")


def top1(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return (pred == labels).float().mean().item()


def equals_shipped(args, im) -> bool | None:
    """Whether this calibration gives the shipped IntModel's integers (None: not the shipped model)."""
    if args.model is not None or args.assignment or Path(args.checkpoint).resolve() != SHIPPED_WEIGHTS.resolve():
        return None
    return im.digest() == shipped_intmodel_digest()


def run(args) -> int:
    t0 = time.time()
    model, _ = load_model(args)
    cfg = model.cfg
    widths = check_widths(parse_assignment(args.assignment), cfg.depth) if args.assignment else None
    calib = load_split(args, "gate", args.calib_images, cfg)
    test = load_split(args, "test", args.test_images, cfg)
    im = quantize(model, calib.images, args.percentile, widths)
    print(f"calibrated on {len(calib)} gating images ({im.calibration['method']} {args.percentile})")
    dyn = dynamic_int8(model)
    with torch.no_grad():
        acc_fp32 = evaluate(model, test)
        acc_dyn = evaluate(dyn, test)
    gold = run_batched(im, test.images, progress=True)
    acc_int8 = top1(gold.predictions, test.labels)
    print(f"top-1: fp32 {acc_fp32:.4f}  int8 (integer-only) {acc_int8:.4f}  dynamic int8 {acc_dyn:.4f}")

    qimg = test.images[:args.qirc_images]
    golden = Golden(im)
    analyses = {
        "int8": qirc.analyze(model, lambda x: golden.dequantize_blocks(golden.forward(x)), qimg),
        "dynamic": qirc.analyze(model, dyn.hidden_states, qimg),
    }
    ablation = {}
    if args.ablation:
        for k in [(k,) for k in FLOAT_KERNELS] + [FLOAT_KERNELS]:
            ablation["+".join(k)] = top1(run_batched(im, test.images, float_kernels=k, progress=True).predictions,
                                         test.labels)
    summary = {
        "top1_fp32": acc_fp32, "top1_int8": acc_int8, "top1_dynamic_int8": acc_dyn,
        "images": len(test), "calib_images": len(calib), "calibration": im.calibration,
        "nsr_per_layer": analyses["int8"]["nsr"], "cos_per_layer": analyses["int8"]["cos_tokens"],
        "nsr_per_layer_dynamic": analyses["dynamic"]["nsr"], "cos_per_layer_dynamic": analyses["dynamic"]["cos_tokens"],
        "qirc": analyses, "saturated_values": gold.overflow.total_overflows,
        "saturated_fraction_max": max(gold.overflow.summary().values(), default=0.0),
        "ablation_top1": ablation, "intmodel": str(args.out), "intmodel_digest": im.digest(),
        "equals_shipped": equals_shipped(args, im), "seconds": round(time.time() - t0, 1),
        "widths": [list(p) for p in im.block_widths],
    }
    with report_dir("quantize") as d:
        im.save(d / "intmodel.pt")
        write_summary(d, summary)
        render.plot_qirc(analyses, d / "qirc.png")
        (d / "README.md").write_text(render.readme(summary, cfg.depth))
    if Path(args.out) != INTMODEL_OUT:
        im.save(args.out)
    if summary["equals_shipped"] is not None:
        print("the IntModel equals the shipped one" if summary["equals_shipped"] else
              "the IntModel differs from the shipped one (this CPU's float kernels); later steps read the shipped "
              "one unless given --intmodel")
    print(f"wrote reports/quantize/ (IntModel, summary.json, README.md, qirc.png) in {summary['seconds']} s")
    return 0
