"""The LRA-EE evaluation of one backbone mode: heads, gate, INR, pruning, LCT, baselines,
ablations, four quadrants and the Pareto frontier, for one seed; and mean ± std over seeds.

Data use (nothing is tuned on the test split):

* heads: trained on cached features of a subset of the *train* split;
* INR, pruning, gate and thresholds: the *gating* split, resampled with replacement per seed
  (the paper's "gating-split sampling");
* every reported number: the *test* split.

A seed re-initialises and re-shuffles the heads, re-initialises the gate and redraws the
gating-split resample. The "full depth" prediction is the backbone's own final head in that
mode; a sample that does not exit takes it, so LRA-EE with no exits equals the baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from model.errors import QexitError
from model.exits.baselines import choose_global_threshold, choose_patience, patience_route
from model.exits.features import Features
from model.exits.fixed import GATE_BITS, quantize_head
from model.exits.fixed import thresholds as fixed_thresholds
from model.exits.gate import gate_features, train_gate
from model.exits.heads import HEAD_HIDDEN, head_logits, train_heads
from model.exits.pruning import PRUNE_KAPPA, information_to_noise, prune_layers
from model.exits.thresholds import (GRID, exit_costs, lct_thresholds, outcome, route)
from model.flops import (block_flops, early_exit_flops, exit_head_flops, full_depth_flops,
                         patch_embed_flops)
from model.vit import ViTConfig

PARETO_BUDGETS = tuple(round(b, 1) for b in np.arange(0.1, 1.001, 0.1))


def check_budget(budget: float) -> None:
    if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise QexitError(f"FLOPs budget {budget} is outside (0, 1]; it is the largest mean FLOPs allowed as a "
                         "fraction of full depth (0.85 = save at least 15%)")


def check_disjoint(a_ids: Sequence[int], b_ids: Sequence[int], a_name: str = "gating split",
                   b_name: str = "test split") -> None:
    """Refuse two sample sets that share images (ids are global image indices)."""
    both = np.intersect1d(np.asarray(a_ids), np.asarray(b_ids))
    if len(both):
        raise QexitError(f"the {a_name} overlaps the {b_name} in {len(both)} images (e.g. image {int(both[0])}); "
                         f"thresholds must be chosen on held-out data, so use disjoint splits")


@dataclass
class ExitConfig:
    budget: float = 0.85
    candidates: tuple[int, ...] | None = None  # 1-based layers; None = every layer but the last
    seeds: int = 3
    head_hidden: int = HEAD_HIDDEN
    head_epochs: int = 4
    head_batch: int = 128
    head_lr: float = 1e-3
    distill_weight: float = 1.0
    prune_kappa: float = PRUNE_KAPPA
    pareto_budgets: tuple[float, ...] = PARETO_BUDGETS
    grid: tuple[float, ...] = GRID  # threshold grid of the sweeps

    def __post_init__(self):
        check_budget(self.budget)
        if not self.grid or any(not 0 < t < 1 for t in self.grid):
            raise QexitError(f"threshold grid {self.grid} must be non-empty, with values in (0, 1)")
        for b in self.pareto_budgets:
            check_budget(b)
        if self.seeds < 1:
            raise QexitError(f"--seeds {self.seeds} must be at least 1")
        if not self.prune_kappa > 1:
            raise QexitError(f"--prune-kappa {self.prune_kappa} must be greater than 1")

    def resolve_candidates(self, depth: int) -> list[int]:
        if self.candidates is None:
            return list(range(1, depth))
        cands = sorted(set(int(c) for c in self.candidates))
        bad = [c for c in cands if not 1 <= c < depth]
        if bad or not cands:
            raise QexitError(f"candidate layers {list(self.candidates)} must be non-empty and within 1..{depth - 1} "
                             f"(layer {depth} is full depth)")
        return cands


def quadrants(ee_correct: np.ndarray, full_correct: np.ndarray, fp32_correct: np.ndarray | None = None) -> dict:
    """The four-quadrant decomposition (§7.1), as fractions of N, plus the net rescue margin.

    With ``fp32_correct`` (the FP32 model's full-depth correctness on the same images) it also
    separates what quantization did: ``quantization_errors`` = full depth wrong where FP32 is
    right, and ``rescue_of_quantization_errors`` = those that the early exit gets right.
    """
    ee, full = np.asarray(ee_correct, bool), np.asarray(full_correct, bool)
    n = len(ee)
    q = {"both_correct": float((ee & full).sum() / n), "rescue": float((ee & ~full).sum() / n),
         "loss": float((~ee & full).sum() / n), "both_wrong": float((~ee & ~full).sum() / n)}
    q["net_rescue"] = q["rescue"] - q["loss"]
    q["images"] = n
    if fp32_correct is not None:
        ref = np.asarray(fp32_correct, bool)
        q["quantization_errors"] = float((~full & ref).sum() / n)
        q["rescue_of_quantization_errors"] = float((ee & ~full & ref).sum() / n)
    return q


def selectivity(exit_idx: np.ndarray, correct: np.ndarray, k: int) -> dict:
    """Accuracy of the early-exited samples against those run to full depth (§7.2)."""
    early = exit_idx < k
    nan = float("nan")
    return {"exited_fraction": float(early.mean()),
            "top1_exited": float(correct[early].mean()) if early.any() else nan,
            "top1_full_depth_group": float(correct[~early].mean()) if (~early).any() else nan}


def _policy(cfg: ViTConfig, layers: list[int], exit_idx: np.ndarray, head_correct: np.ndarray,
            full_correct: np.ndarray, thresholds: np.ndarray | None, head_hidden: int, pooled: bool = True) -> dict:
    """Test metrics of one routing over candidate ``layers`` (columns of ``head_correct``)."""
    k = len(layers)
    active = np.isfinite(thresholds) if thresholds is not None else np.ones(k, bool)
    costs = exit_costs(cfg, layers, head_hidden, pooled)
    correct = outcome(exit_idx, head_correct, full_correct)
    act_layers = [c for c, a in zip(layers, active) if a]
    act_index = {j: i for i, j in enumerate(np.flatnonzero(active))}
    dist = np.zeros(len(act_layers) + 1)
    top1_at = [float("nan")] * (len(act_layers) + 1)
    for j in range(k + 1):
        m = exit_idx == j
        if not m.any():
            continue
        slot = act_index[j] if j < k else len(act_layers)
        dist[slot] = m.mean()
        top1_at[slot] = float(correct[m].mean())
    return {"top1": float(correct.mean()),
            "flops_saving": float(1 - costs.per_sample(exit_idx, active).mean()),
            "correct": correct, "exit_idx": exit_idx,
            "exit_layers": act_layers + [cfg.depth],
            "exit_fraction": dist.tolist(),
            "exit_top1": top1_at,
            "exit_flops": early_exit_flops(cfg, act_layers, head_hidden, pooled)}


def run_seed(cfg: ViTConfig, class_embeddings: torch.Tensor, train: Features, gate: Features, test: Features,
             distill_target: torch.Tensor, noise: dict, xcfg: ExitConfig, seed: int,
             progress: bool = False, fp32_correct: np.ndarray | None = None) -> dict:
    """One seed of the whole evaluation on one mode. ``noise``: per-layer dict with "nsr";
    ``fp32_correct``: the FP32 model's full-depth correctness on the test images, if known."""
    depth = cfg.depth
    cands0 = xcfg.resolve_candidates(depth)
    ce = class_embeddings.float()
    hp = dict(epochs=xcfg.head_epochs, batch_size=xcfg.head_batch, lr=xcfg.head_lr,
              distill_weight=xcfg.distill_weight, hidden=xcfg.head_hidden, progress=progress)
    heads = {
        "ssa_hard": (train_heads(train.ssa, train.labels, ce, None, seed, desc="SSA heads, hard", **hp), "ssa"),
        "ssa_dist": (train_heads(train.ssa, train.labels, ce, distill_target, seed, desc="SSA heads, distilled",
                                 **hp), "ssa"),
        "cls_dist": (train_heads(train.cls, train.labels, ce, distill_target, seed, desc="[CLS] heads, distilled",
                                 **hp), "cls"),
    }
    g = torch.Generator().manual_seed(10_000 + seed)
    gate_s = gate.take(torch.randint(0, len(gate), (len(gate),), generator=g))

    def full_correct(f: Features) -> np.ndarray:
        return (f.final_logits.argmax(-1) == f.labels).numpy()

    fc_gate, fc_test = full_correct(gate_s), full_correct(test)
    logits, correct = {}, {}
    for name, (h, kind) in heads.items():
        for split, f in (("gate", gate_s), ("test", test)):
            lg = head_logits(h, getattr(f, kind), ce)
            logits[name, split] = lg
            correct[name, split] = (lg.argmax(-1) == f.labels[:, None]).numpy()

    gate_acc = correct["ssa_dist", "gate"].mean(0)
    inr = information_to_noise(gate_acc, noise)
    cands, dropped = prune_layers(cands0, inr, noise, xcfg.prune_kappa)
    ci = np.asarray(cands) - 1
    costs = exit_costs(cfg, cands, xcfg.head_hidden)

    def gate_scores(name: str):
        f_gate = gate_features(logits[name, "gate"][:, ci], gate_s.sav[:, ci])
        gm = train_gate(f_gate, torch.from_numpy(correct[name, "gate"][:, ci]), seed)
        s_test = gm.prob(gate_features(logits[name, "test"][:, ci], test.sav[:, ci])).numpy()
        return gm, gm.prob(f_gate).numpy(), s_test

    def lraee_on(c_gate, c_test, budget: float, s_gate, s_test) -> dict:
        thr = lct_thresholds(s_gate, c_gate, fc_gate, costs, budget, inr[ci], xcfg.grid)
        res = _policy(cfg, cands, route(s_test, thr), c_test, fc_test, thr, xcfg.head_hidden)
        res["thresholds"] = thr.tolist()
        return res

    def lraee(name: str, budget: float, s_gate, s_test) -> dict:
        return lraee_on(correct[name, "gate"][:, ci], correct[name, "test"][:, ci], budget, s_gate, s_test)

    gm, s_gate, s_test = gate_scores("ssa_dist")
    main = lraee("ssa_dist", xcfg.budget, s_gate, s_test)
    float_main, fixed_vs_float, exit_path = None, None, None
    if gate_s.ssa_sum is not None and test.ssa_sum is not None:
        # the int8 mode's head as the hardware computes it: quantize the distilled SSA heads
        # and the gate, pick the thresholds on its own gate values, and report it
        fh = quantize_head(heads["ssa_dist"][0], gm, ce, gate_s.token_scales[ci].tolist(), gate_s.ssa_sum[:, ci],
                           gate_s.sav_num[:, ci], cfg.num_patches, layers=ci.tolist())
        fx = {}
        for split, f in (("gate", gate_s), ("test", test)):
            scores, g_int = fh.forward(f.ssa_sum[:, ci], f.sav_num[:, ci])
            fx[split] = ((scores.argmax(-1) == f.labels[:, None]).numpy(),
                         torch.sigmoid(g_int.double() / 2 ** GATE_BITS).numpy(), scores.argmax(-1).numpy(),
                         scores, g_int)
        # thresholds are chosen on the gating split's gate probabilities; the test split is
        # then routed as the comparator routes it: integer gate >= integer threshold register
        thr_fx = np.asarray(lct_thresholds(fx["gate"][1], fx["gate"][0], fc_gate, costs, xcfg.budget, inr[ci],
                                           xcfg.grid), dtype=np.float64)
        active = np.isfinite(thr_fx)
        regs = fixed_thresholds(torch.from_numpy(np.where(active, thr_fx, 0.5))).numpy()
        exit_idx = route(fx["test"][4].double().numpy(), np.where(active, regs.astype(np.float64), np.inf))
        fixed_main = _policy(cfg, cands, exit_idx, fx["test"][0], fc_test, thr_fx, xcfg.head_hidden)
        fixed_main["thresholds"] = thr_fx.tolist()
        fixed_main["threshold_registers"] = [int(r) if a else None for r, a in zip(regs, active)]
        full_pred = test.final_logits.argmax(-1).numpy()

        def predicted(res, cls):
            idx = res["exit_idx"]
            early = idx < len(cands)
            out = full_pred.copy()
            out[early] = cls[np.flatnonzero(early), idx[early]]
            return idx, out

        fi, fp = predicted(fixed_main, fx["test"][2])
        li, lp = predicted(main, logits["ssa_dist", "test"][:, ci].argmax(-1).numpy())
        fixed_vs_float = {"exit_layer_differs": float((fi != li).mean()), "class_differs": float((fp != lp).mean()),
                          "decisions_differ": float(((fi != li) | (fp != lp)).mean())}
        exit_path = {"head": fh, "layers": cands, "registers": fixed_main["threshold_registers"],
                     "test_scores": fx["test"][3], "test_gates": fx["test"][4],
                     "test_exit": torch.from_numpy(fi), "test_class": torch.from_numpy(fp)}
        float_main, main = main, fixed_main
    _, s_gate_h, s_test_h = gate_scores("ssa_hard")
    hard = lraee("ssa_hard", xcfg.budget, s_gate_h, s_test_h)

    # baselines: confidence-only on SSA heads, CLS-EE on [CLS] heads, PABEE over every layer
    def conf(name, split):
        return logits[name, split].softmax(-1).max(-1).values.numpy()

    baselines = {}
    for label, name, pooled in (("confidence_only", "ssa_dist", True), ("cls_ee", "cls_dist", False)):
        cst = exit_costs(cfg, cands, xcfg.head_hidden, pooled)
        tau = choose_global_threshold(conf(name, "gate")[:, ci], correct[name, "gate"][:, ci], fc_gate, cst,
                                      xcfg.budget, xcfg.grid)
        thr = np.full(len(cands), tau)
        r = _policy(cfg, cands, route(conf(name, "test")[:, ci], thr), correct[name, "test"][:, ci], fc_test, thr,
                    xcfg.head_hidden, pooled)
        baselines[label] = {"top1": r["top1"], "flops_saving": r["flops_saving"], "setting": f"tau={tau:g}"}
    all_layers = list(range(1, depth))
    pab_costs = exit_costs(cfg, all_layers, xcfg.head_hidden)
    preds = {s: logits["ssa_dist", s][:, :depth - 1].argmax(-1).numpy() for s in ("gate", "test")}
    patience = choose_patience(preds["gate"], correct["ssa_dist", "gate"][:, :depth - 1], fc_gate, pab_costs,
                               xcfg.budget)
    r = _policy(cfg, all_layers, patience_route(preds["test"], patience), correct["ssa_dist", "test"][:, :depth - 1],
                fc_test, None, xcfg.head_hidden)
    baselines["pabee"] = {"top1": r["top1"], "flops_saving": r["flops_saving"], "setting": f"patience={patience}"}

    # Pareto frontier across threshold settings: LCT per budget; the learned gate and the
    # confidence heuristic with one threshold for every layer; PABEE per patience
    pareto = {"lraee": [], "gate_uniform": [], "confidence_only": [], "pabee": []}
    pareto_routes = []                            # LCT's routing per budget, for the cost model
    for b in xcfg.pareto_budgets:
        p = lraee("ssa_dist", b, s_gate, s_test)
        pareto["lraee"].append([p["flops_saving"], p["top1"]])
        pareto_routes.append({"budget": b, "top1": p["top1"], "flops_saving": p["flops_saving"],
                              "layers": p["exit_layers"], "fraction": p["exit_fraction"]})
    for key, scores in (("gate_uniform", s_test), ("confidence_only", conf("ssa_dist", "test")[:, ci])):
        for t in xcfg.grid:
            thr = np.full(len(cands), t)
            p = _policy(cfg, cands, route(scores, thr), correct["ssa_dist", "test"][:, ci], fc_test, thr,
                        xcfg.head_hidden)
            pareto[key].append([p["flops_saving"], p["top1"]])
    for pat in range(1, depth - 1):
        p = _policy(cfg, all_layers, patience_route(preds["test"], pat), correct["ssa_dist", "test"][:, :depth - 1],
                    fc_test, None, xcfg.head_hidden)
        pareto["pabee"].append([p["flops_saving"], p["top1"]])

    full = full_depth_flops(cfg)
    last_saving = 1 - (patch_embed_flops(cfg) + depth * block_flops(cfg)
                       + exit_head_flops(cfg, xcfg.head_hidden)) / full
    top1_full = float(fc_test.mean())
    ablation = {
        "i": {"config": "Baseline (full depth)", "head": "[CLS]", "supervision": "-", "routing": "full depth",
              "flops_saving": 0.0, "top1": top1_full},
        "ii": {"config": "SSA-Last (hard)", "head": "SSA", "supervision": "hard label", "routing": "full depth",
               "flops_saving": last_saving, "top1": float(correct["ssa_hard", "test"][:, -1].mean())},
        "iii": {"config": "SSA-Last (distilled)", "head": "SSA", "supervision": "FP32 distill",
                "routing": "full depth", "flops_saving": last_saving,
                "top1": float(correct["ssa_dist", "test"][:, -1].mean())},
        "iv": {"config": "LRA-EE (hard)", "head": "SSA", "supervision": "hard label", "routing": "adaptive",
               "flops_saving": hard["flops_saving"], "top1": hard["top1"]},
        "v": {"config": "LRA-EE (distilled)", "head": "SSA", "supervision": "FP32 distill", "routing": "adaptive",
              "flops_saving": main["flops_saving"], "top1": main["top1"]},
    }
    out_fixed = {}
    if float_main is not None:
        out_fixed = {"head": "fixed-point",
                     "float_head": {"top1": float_main["top1"], "flops_saving": float_main["flops_saving"],
                                    "quadrants": quadrants(float_main["correct"], fc_test, fp32_correct),
                                    "thresholds": dict(zip(cands, float_main["thresholds"]))},
                     "fixed_vs_float": fixed_vs_float,
                     "threshold_registers": dict(zip(cands, main["threshold_registers"])),
                     "exit_path": exit_path}
    return {
        **out_fixed,
        "seed": seed,
        "top1_full": top1_full,
        "top1_lraee": main["top1"],
        "flops_saving": main["flops_saving"],
        "quadrants": quadrants(main["correct"], fc_test, fp32_correct),
        "selectivity": selectivity(main["exit_idx"], main["correct"], len(cands)),
        "candidates_initial": cands0,
        "candidates": cands,
        "pruned": dropped,
        "inr": inr.tolist(),
        "gate_accuracy_per_layer": gate_acc.tolist(),
        "thresholds": dict(zip(cands, main["thresholds"])),
        "gate": {"layers": cands, "weight": gm.weight.tolist(), "bias": gm.bias.tolist()},
        "exit_distribution": {"layers": main["exit_layers"], "fraction": main["exit_fraction"],
                              "top1": main["exit_top1"], "flops": main["exit_flops"], "full_depth_flops": full},
        "per_layer_top1": {name: correct[name, "test"].mean(0).tolist() for name in heads},
        "ablation": ablation,
        "baselines": baselines,
        "pareto": pareto,
        "pareto_routes": pareto_routes,
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over the values that are not NaN (a seed with no
    early exits has no "exited" accuracy); NaN when none is, std 0 for a single value."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def run_mode(cfg: ViTConfig, class_embeddings: torch.Tensor, train: Features, gate: Features, test: Features,
             distill_target: torch.Tensor, noise: dict, xcfg: ExitConfig, progress: bool = False,
             desc: str = "seeds", fp32_correct: np.ndarray | None = None) -> list[dict]:
    """``run_seed`` for seeds 0..xcfg.seeds−1."""
    return [run_seed(cfg, class_embeddings, train, gate, test, distill_target, noise, xcfg, s, progress, fp32_correct)
            for s in tqdm(range(xcfg.seeds), desc=desc, disable=None if progress else True)]
