"""Cross-seed aggregates of the exits evaluation: summary.json and exit_distribution.json.

``results`` maps each mode to its per-seed ``run_seed`` dicts; ``noise`` maps each mode to its
gating-split noise (``nsr`` per layer). Per-mode keys end in ``_<mode>`` (and ``_<mode>_std``);
the first mode is the headline and also gets the bare keys (``top1_full``, ``top1_lraee``, ...).
"""
from __future__ import annotations

import numpy as np

from model.exits.evaluate import ExitConfig, mean_std
from model.flops import block_flops, exit_head_flops, full_depth_flops, patch_embed_flops
from model.vit import ViTConfig

BASELINES = ("confidence_only", "cls_ee", "pabee")


def layer_fractions(run: dict, depth: int) -> np.ndarray:
    """A seed's exit distribution on the grid of layers 1..depth (last = full depth)."""
    frac = np.zeros(depth)
    for layer, f in zip(run["exit_distribution"]["layers"], run["exit_distribution"]["fraction"]):
        frac[layer - 1] += f
    return frac


def seed_values(runs: list[dict]) -> dict[str, list[float]]:
    """The per-seed values that summary.json averages, by key (without the mode suffix)."""
    vals = {
        "top1_full": [r["top1_full"] for r in runs],
        "top1_lraee": [r["top1_lraee"] for r in runs],
        "flops_saving": [r["flops_saving"] for r in runs],
    }
    for k in ("rescue", "loss", "both_correct", "both_wrong", "net_rescue", "quantization_errors",
              "rescue_of_quantization_errors"):
        vals[k] = [r["quadrants"][k] for r in runs]
    for k in ("top1_exited", "top1_full_depth_group", "exited_fraction"):
        vals[k] = [r["selectivity"][k] for r in runs]
    for b in BASELINES:
        vals[f"top1_{b}"] = [r["baselines"][b]["top1"] for r in runs]
        vals[f"flops_saving_{b}"] = [r["baselines"][b]["flops_saving"] for r in runs]
    if all("float_head" in r for r in runs):   # int8: the results above are the fixed-point head's
        vals["top1_lraee_float"] = [r["float_head"]["top1"] for r in runs]
        vals["flops_saving_float"] = [r["float_head"]["flops_saving"] for r in runs]
        for k in ("both_correct", "rescue", "loss", "both_wrong", "net_rescue"):
            vals[f"{k}_float"] = [r["float_head"]["quadrants"][k] for r in runs]
        for k in ("decisions_differ", "exit_layer_differs", "class_differs"):
            vals[k] = [r["fixed_vs_float"][k] for r in runs]
    return vals


def build_summary(cfg: ViTConfig, modes: list[str], results: dict, noise: dict, top1_fp32: float,
                  xcfg: ExitConfig, checkpoint: str, n_test: int) -> tuple[dict, dict]:
    """(flat summary.json, exit_distribution.json)."""
    summary = {"mode": modes[0], "modes": modes, "top1_fp32": top1_fp32, "budget": xcfg.budget,
               "seeds": xcfg.seeds, "images_test": n_test, "checkpoint": checkpoint}
    dist = {"mode_primary": modes[0], "depth": cfg.depth, "full_depth_flops": full_depth_flops(cfg),
            "flops_backbone_to_layer": [patch_embed_flops(cfg) + l * block_flops(cfg) for l in range(1, cfg.depth + 1)],
            "flops_exit_head": exit_head_flops(cfg, xcfg.head_hidden),
            "note": "fraction[l-1] = share of test images that exit after block l (the last entry is full depth); "
                    "per seed, flops[i] is the FLOPs of an image exiting at layers[i], counting every exit head "
                    "it ran on the way", "modes": {}}
    for i, m in enumerate(modes):
        runs = results[m]
        fr = np.stack([layer_fractions(r, cfg.depth) for r in runs])
        for k, v in seed_values(runs).items():
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
        summary[f"exit_head_{m}"] = runs[0].get("head", "float")
        summary[f"nsr_per_layer_{m}"] = noise[m]["nsr"]
        if i == 0:
            summary["exit_distribution"] = fr.mean(0).tolist()
            summary["rescue_effect"] = summary[f"rescue_effect_{m}"]
        dist["modes"][m] = {
            "layers": list(range(1, cfg.depth + 1)), "fraction": fr.mean(0).tolist(),
            "fraction_std": fr.std(0).tolist(),
            "top1": summary[f"top1_lraee_{m}"], "flops_saving": summary[f"flops_saving_{m}"],
            "top1_full_depth": summary[f"top1_full_{m}"],
            "seeds": [{"seed": r["seed"], **r["exit_distribution"],
                       "thresholds": {str(k): v for k, v in r["thresholds"].items()}, "gate": r["gate"],
                       "pareto": r.get("pareto_routes", [])}
                      for r in runs],
        }
    if "int8" in modes:  # the documented headline key of the int8 mode
        summary["top1_int8_full"] = summary["top1_full_int8"]
    return summary, dist
