"""Routing, FLOPs accounting and Layer-adaptive Confidence Thresholding (LCT, §4.4).

Routing: a sample visits the candidate layers ``c_1 < … < c_K`` in order and exits at the
first one whose score (gate probability, or confidence for the heuristics) reaches that
layer's threshold; a sample that never exits runs to full depth and takes the backbone's own
prediction. A threshold of ``NEVER`` (+inf) switches a candidate off: its head is not run;
``ALWAYS`` (0) sends every sample that reaches it out there.

Selection rule (used for every policy, on the gating split only): among settings whose mean
FLOPs fraction is within the budget, the highest accuracy wins, ties go to fewer FLOPs; if
no setting fits, the one with the fewest FLOPs wins (and ``budget_met`` says so).

LCT gives each candidate its own threshold ``τ_l`` from the grid ``GRID`` (25 points over
[0.5, 0.99], as in the paper, plus ``ALWAYS`` and ``NEVER`` so that any budget down to the
first candidate's cost can be met), in two stages:

1. INR calibration: ``τ_l = τ_0 + β·(1 − r_l)``, snapped to the grid, where ``r_l`` ∈ [0, 1]
   is the candidate's log-INR rescaled over the candidates (1 = highest INR). High-INR layers
   get lower thresholds, low-INR layers stricter ones. ``(τ_0, β)`` sweep ``GRID × BETAS``.
2. Per-layer refinement: coordinate ascent over the grid, one layer at a time (shallow to
   deep) with the others held, until a pass changes nothing (at most ``passes``).

A full joint grid (27^K settings) is out of reach for K ≈ 10 candidates; the two stages keep
the sweep to a few hundred evaluations, each a vectorised pass over the gating split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.flops import block_flops, exit_head_flops, full_depth_flops, patch_embed_flops

GRID = tuple(float(x) for x in np.round(np.linspace(0.5, 0.99, 25), 4))
NEVER = float("inf")
ALWAYS = 0.0
BETAS = (0.0, 0.1, 0.2, 0.3)


def route(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Exit index per sample (N,): the first candidate k with scores[:, k] ≥ thresholds[k],
    or K (full depth) when there is none."""
    scores = np.asarray(scores)
    passed = scores >= np.asarray(thresholds, dtype=np.float64)[None, :]
    k = scores.shape[1]
    return np.where(passed.any(1), passed.argmax(1), k)


@dataclass
class ExitCosts:
    """FLOPs as fractions of the plain full-depth backbone.

    ``backbone[k]``: embedding + blocks up to candidate ``k`` (``backbone[K]`` = the full
    backbone with its final head, 1.0); ``head``: one exit head with its gate.
    """
    backbone: np.ndarray
    head: float

    def per_sample(self, exit_idx: np.ndarray, active: np.ndarray) -> np.ndarray:
        """FLOPs fraction of each sample; a sample pays for every active head it reaches."""
        active = np.asarray(active, dtype=bool)
        heads_seen = np.concatenate([np.cumsum(active), [active.sum()]])  # heads run up to exit k
        return self.backbone[exit_idx] + self.head * heads_seen[exit_idx]


def outcome(exit_idx: np.ndarray, head_correct: np.ndarray, full_correct: np.ndarray) -> np.ndarray:
    """Per-sample correctness of a routing: the exit head's where it exits, else full depth's."""
    k = head_correct.shape[1]
    n = np.arange(len(exit_idx))
    return np.where(exit_idx < k, head_correct[n, np.minimum(exit_idx, k - 1)], full_correct)


def evaluate_policy(scores: np.ndarray, thresholds: np.ndarray, head_correct: np.ndarray,
                    full_correct: np.ndarray, costs: ExitCosts) -> tuple[float, float]:
    """(accuracy, mean FLOPs fraction) of thresholds on one split."""
    exit_idx = route(scores, thresholds)
    correct = outcome(exit_idx, head_correct, full_correct)
    return float(correct.mean()), float(costs.per_sample(exit_idx, np.isfinite(thresholds)).mean())


def _rank(acc: float, flops: float, budget: float) -> tuple:
    if flops <= budget + 1e-12:
        return (1, acc, -flops)
    return (0, -flops, acc)


def best_under_budget(points: list[tuple[float, float]], budget: float) -> int:
    """Index of the best (accuracy, FLOPs fraction) point under the selection rule."""
    return max(range(len(points)), key=lambda i: _rank(points[i][0], points[i][1], budget))


def _snap(values: np.ndarray, grid: tuple[float, ...]) -> np.ndarray:
    g = np.asarray(grid)
    return g[np.abs(g[None, :] - np.asarray(values)[:, None]).argmin(1)]


def lct_thresholds(scores: np.ndarray, head_correct: np.ndarray, full_correct: np.ndarray,
                   costs: ExitCosts, budget: float, inr: np.ndarray, grid: tuple[float, ...] = GRID,
                   passes: int = 3) -> np.ndarray:
    """Per-candidate thresholds (K,) that maximise accuracy under the FLOPs budget on the split
    given (the gating split). ``inr``: INR of each candidate (K,)."""
    def rank(thr):
        return _rank(*evaluate_policy(scores, thr, head_correct, full_correct, costs), budget)

    log_inr = np.log(np.maximum(np.asarray(inr, dtype=np.float64), 1e-300))
    spread = log_inr.max() - log_inr.min()
    r = (log_inr - log_inr.min()) / spread if spread > 0 else np.ones_like(log_inr)
    starts = [_snap(np.clip(t0 + beta * (1 - r), grid[0], grid[-1]), grid) for t0 in grid for beta in BETAS]
    starts += [np.full(len(r), NEVER), np.full(len(r), ALWAYS)]
    best = max(starts, key=rank)
    best_rank = rank(best)
    options = [ALWAYS] + list(grid) + [NEVER]
    for _ in range(passes):
        changed = False
        for k in range(len(best)):
            for t in options:
                if t == best[k]:
                    continue
                trial = best.copy()
                trial[k] = t
                tr = rank(trial)
                if tr > best_rank:
                    best, best_rank, changed = trial, tr, True
        if not changed:
            break
    return best


def exit_costs(cfg, candidates: list[int], head_hidden: int, pooled: bool = True) -> ExitCosts:
    """``ExitCosts`` for candidate layers (1-based) of a ``ViTConfig``, from ``model.flops``."""

    full = full_depth_flops(cfg)
    backbone = [(patch_embed_flops(cfg) + c * block_flops(cfg)) / full for c in candidates] + [1.0]
    return ExitCosts(np.asarray(backbone), exit_head_flops(cfg, head_hidden, pooled) / full)
