"""The quantize step's report: qirc.png and README.md, from the command's summary (its ``qirc``
key holds ``model.qirc.analyze``'s metrics per INT8 mode)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from model.qirc import METRICS
from qexit.render.markdown import markdown_table

matplotlib.use("Agg")


def plot_qirc(analyses: dict[str, dict[str, list[float]]], path) -> None:
    """One PNG with a panel per QIRC metric; one line per INT8 mode."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, metric in zip(axes.flat, METRICS):
        for mode, a in analyses.items():
            ax.plot(range(1, len(a[metric]) + 1), a[metric], marker="o", label=mode)
        ax.set_title(metric)
        ax.set_xlabel("block")
        ax.grid(alpha=0.3)
        if metric in ("mse", "nsr"):
            ax.set_yscale("log")
    axes.flat[0].legend()
    fig.suptitle("QIRC: layer-wise quantization noise against FP32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme(s: dict, depth: int) -> str:
    """README.md of reports/quantize/."""
    a, dy = s["qirc"]["int8"], s["qirc"]["dynamic"]
    rows = [[l + 1, a["nsr"][l], dy["nsr"][l], a["rel_err"][l], a["cos_tokens"][l], dy["cos_tokens"][l],
             a["cos_pooled"][l], a["mse"][l], a["outlier_ratio"][l]] for l in range(depth)]
    text = [
        "# Quantization: FP32 → integer-only INT8", "",
        markdown_table(["model", "top-1"], [["FP32", s["top1_fp32"]], ["INT8 integer-only (golden)", s["top1_int8"]],
                                            ["INT8 dynamic (paper mode)", s["top1_dynamic_int8"]]]),
        "", f"Test images: {s['images']}. Calibration: {s['calibration']} on the gating split.",
        "Bit-widths (weights/activations per block): " + " ".join(f"{w}/{a}" for w, a in s["widths"])
        + ("" if all(p == [8, 8] for p in s["widths"]) else " (mixed: the 'INT8' rows are this assignment)"),
        f"Saturated values (int8/int32 range, counted, never wrapped): {s['saturated_values']} "
        f"(worst point {s['saturated_fraction_max']:.2e} of its values).", "",
        "## QIRC: layer-wise noise (Eq. 1)", "",
        "NSR = ‖ĥ−h‖/‖h−h_prev‖; cos = INT8↔FP32 token cosine; pooled = patch-mean cosine; "
        "outlier = max/p99.9 of FP32 |h|.", "",
        markdown_table(["block", "NSR int8", "NSR dyn", "rel err int8", "cos int8", "cos dyn", "pooled cos int8",
                        "MSE int8", "outlier ratio"], rows),
        "", "![QIRC](qirc.png)", "",
    ]
    if s["ablation_top1"]:
        text += ["## Per-kernel ablation (kernel replaced by float)", "",
                 markdown_table(["float kernel(s)", "top-1"], [[k, v] for k, v in s["ablation_top1"].items()]), ""]
    return "\n".join(text)
