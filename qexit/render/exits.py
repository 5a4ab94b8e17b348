"""The exits step's report: README.md text, the Rescue verdicts and the PNG plots (matplotlib,
Agg backend).

``results``, ``noise`` and the summary ``s`` are those of ``model.exits.summary.build_summary``.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from model.exits.evaluate import mean_std
from model.exits.summary import layer_fractions
from qexit.render.markdown import markdown_table

matplotlib.use("Agg")

MODE_NAMES = {"fp32": "FP32", "dynamic": "dynamic INT8 (quantize_dynamic)", "int8": "integer-only INT8 (golden)"}


def _pct(ms: tuple[float, float], nseeds: int) -> str:
    return f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}" if nseeds > 1 else f"{100 * ms[0]:.2f}"


def plot_all(out: Path, cfg, modes, results, noise, top1_fp32) -> None:
    """exit_distribution.png, pareto.png, cls_vs_ssa.png and (quantized modes) noise.png in ``out``."""
    layers = np.arange(1, cfg.depth + 1)
    # exit distribution
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(modes)
    for i, m in enumerate(modes):
        fr = np.stack([layer_fractions(r, cfg.depth) for r in results[m]])
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


def readme(cfg, modes, results, noise, top1_fp32, xcfg, s, train_images: int, gate_split: str, grid: str) -> str:
    """README.md of reports/exits/ from the summary ``s``; ``grid`` is the --grid text."""
    n = xcfg.seeds
    pm = lambda k, m: _pct((s[f"{k}_{m}"], s[f"{k}_{m}_std"]), n)  # noqa: E731
    lines = ["# LRA-EE early exits", "",
             f"Checkpoint `{s['checkpoint']}`; ViT depth {cfg.depth}, width {cfg.width}; modes "
             f"{', '.join(MODE_NAMES[m] for m in modes)}. Heads trained on {train_images} train images, gate and "
             f"thresholds on the `{gate_split}` split (resampled per seed), everything below on "
             f"{s['images_test']} test images. FLOPs budget {xcfg.budget:g} (thresholds chosen on the gating split "
             f"only). Mean ± std over {n} seed(s). Took {s['seconds_total']:.0f} s "
             f"({s['seconds_features']:.0f} s of it backbone features, "
             f"{'all from the cache' if s['features_cached'] else 'computed'}) with {s['threads']} torch thread(s).",
             "", "## Main results (test split)", ""]
    rows = [["FP32 full depth (reference)", "-", "0.00", f"{100 * top1_fp32:.2f}", "-"]]
    for m in modes:
        d = 100 * (s[f"top1_lraee_{m}"] - s[f"top1_full_{m}"])
        rows.append([f"{MODE_NAMES[m]} full depth", m, "0.00", pm("top1_full", m), "-"])
        rows.append(["LRA-EE", m, pm("flops_saving", m), pm("top1_lraee", m), f"{d:+.2f}"])
    lines += [markdown_table(["Method", "Mode", "FLOPs saving (%)", "Top-1 (%)", "Δ vs full depth (%p)"], rows), ""]
    for m in modes:
        if f"top1_lraee_float_{m}" not in s:
            continue
        d_top1 = 100 * (s[f"top1_lraee_{m}"] - s[f"top1_lraee_float_{m}"])
        d_save = 100 * (s[f"flops_saving_{m}"] - s[f"flops_saving_float_{m}"])
        quad = ("both_correct", "rescue", "loss", "both_wrong", "net_rescue")
        rows = [["fixed-point head and gate (`model/exits/fixed.py`), what the hardware does", pm("flops_saving", m),
                 pm("top1_lraee", m), *(pm(k, m) for k in quad)],
                ["float head and gate", pm("flops_saving_float", m), pm("top1_lraee_float", m),
                 *(pm(f"{k}_float", m) for k in quad)]]
        lines += [f"### {MODE_NAMES[m]}: fixed-point head against the float head", "",
                  f"The {MODE_NAMES[m]} rows above are the fixed-point head's: the distilled SSA heads and the gate "
                  "are trained in float, quantized, and the thresholds are chosen on the fixed-point gate's own "
                  "values; the test split is routed by the comparator's integer test (gate >= threshold "
                  "register). Each row has its four quadrants against the same full depth.", "",
                  markdown_table(["Head", "FLOPs saving (%)", "Top-1 (%)", "Both correct (%)", "Rescue (%)", "Loss (%)",
                                  "Both wrong (%)", "Net rescue (%p)"], rows), "",
                  f"Fixed minus float: top-1 {d_top1:+.2f}%p, FLOPs saving {d_save:+.2f}%p. Test images whose "
                  f"decision differs (exit layer or class): {pm('decisions_differ', m)}% (exit layer "
                  f"{pm('exit_layer_differs', m)}%, class {pm('class_differs', m)}%).", ""]

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
             pm("top1_full", m)] for m in modes]
    lines += [markdown_table(["Mode", "Exited early (%)", "Top-1 of exited (%)", "Top-1 of full-depth group (%)",
                              "Full-depth top-1, all (%)"], rows), ""]

    lines += ["## Exit distribution", "", "![exit distribution](exit_distribution.png)", ""]
    rows = []
    for m in modes:
        fr = np.stack([layer_fractions(r, cfg.depth) for r in results[m]])
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
        rows.append([m, "full depth (own head)", "0.00", pm("top1_full", m), "-"])
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
              f"- LCT: τ_l = τ_0 + β(1 − r_l) from the rescaled log-INR r_l, swept over the grid {grid} "
              "(LO:HI:N), then refined one layer at a time; accuracy is maximised with mean FLOPs ≤ budget on the "
              "gating split.",
              "- FLOPs of an exit at layer l: patch embedding + blocks 1..l + every exit head (and gate) run so far; "
              "full depth: the whole backbone + its final head (+ the exit heads run). Saving = 1 − mean/full-depth.",
              ""]
    return "\n".join(lines)
