"""Baseline exit policies, chosen on the gating split under the same FLOPs budget as LRA-EE.

* **Confidence-only heuristic** (§6.3): exit at the first candidate whose head confidence
  (max softmax) reaches one global threshold τ, swept over ``thresholds.GRID`` (and ALWAYS/NEVER).
* **CLS-EE** (BranchyNet/DeeBERT style): the same confidence rule on [CLS]-token heads.
* **PABEE** (patience-based, Zhou et al. 2020): every layer 1..depth−1 has a head; a sample
  exits at layer k once the heads' predictions have stayed unchanged for ``patience``
  consecutive layers (the predictions at k−patience … k agree); patience 1..K−1 is swept.
"""
from __future__ import annotations

import numpy as np

from model.exits.thresholds import ALWAYS, GRID, NEVER, ExitCosts, best_under_budget, outcome, route


def choose_global_threshold(confidence: np.ndarray, head_correct: np.ndarray, full_correct: np.ndarray,
                            costs: ExitCosts, budget: float, grid: tuple[float, ...] = GRID) -> float:
    """The one threshold (shared by all candidates) chosen by the budget rule."""
    options = [ALWAYS] + list(grid) + [NEVER]
    k = confidence.shape[1]
    points = []
    for t in options:
        exit_idx = route(confidence, np.full(k, t))
        points.append((outcome(exit_idx, head_correct, full_correct).mean(),
                       costs.per_sample(exit_idx, np.full(k, np.isfinite(t))).mean()))
    return options[best_under_budget(points, budget)]


def patience_route(preds: np.ndarray, patience: int) -> np.ndarray:
    """PABEE exit index per sample (K = full depth) for head predictions (N, K)."""
    n, k = preds.shape
    exit_idx = np.full(n, k)
    if patience < 1:
        raise ValueError("patience must be at least 1")
    streak = np.zeros(n, dtype=int)
    for j in range(1, k):
        streak = np.where(preds[:, j] == preds[:, j - 1], streak + 1, 0)
        fire = (streak >= patience) & (exit_idx == k)
        exit_idx[fire] = j
    return exit_idx


def choose_patience(preds: np.ndarray, head_correct: np.ndarray, full_correct: np.ndarray,
                    costs: ExitCosts, budget: float) -> int:
    """The patience (1..K−1) chosen by the budget rule; all heads are always run."""
    k = preds.shape[1]
    options = list(range(1, max(k, 2)))
    points = []
    for p in options:
        exit_idx = patience_route(preds, p)
        points.append((outcome(exit_idx, head_correct, full_correct).mean(),
                       costs.per_sample(exit_idx, np.ones(k, bool)).mean()))
    return options[best_under_budget(points, budget)]
