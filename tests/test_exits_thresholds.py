"""model/exits/thresholds.py: routing, FLOPs accounting and LCT under a budget."""
import numpy as np
import pytest

from model.exits.thresholds import (ALWAYS, GRID, NEVER, ExitCosts, best_under_budget, evaluate_policy, exit_costs,
                                    lct_thresholds, outcome, route)
from model.flops import early_exit_flops, full_depth_flops
from model.vit import ViTConfig


def test_route_takes_the_first_passing_layer():
    s = np.array([[0.9, 0.9], [0.1, 0.95], [0.1, 0.2], [0.6, 0.1]])
    assert route(s, np.array([0.8, 0.9])).tolist() == [0, 1, 2, 2]
    assert route(s, np.array([NEVER, 0.9])).tolist() == [1, 1, 2, 2]
    assert route(s, np.array([0.5, 0.5])).tolist() == [0, 1, 2, 0]


def test_outcome_uses_head_or_full_depth():
    head = np.array([[True, False], [False, True], [False, False]])
    full = np.array([False, False, True])
    assert outcome(np.array([0, 1, 2]), head, full).tolist() == [True, True, True]
    assert outcome(np.array([1, 0, 0]), head, full).tolist() == [False, False, False]


def test_costs_match_model_flops():
    cfg = ViTConfig()
    cands = [3, 6, 9]
    costs = exit_costs(cfg, cands, 128)
    expect = np.asarray(early_exit_flops(cfg, cands, 128)) / full_depth_flops(cfg)
    assert np.allclose(costs.per_sample(np.arange(4), np.ones(3, bool)), expect)
    # a switched-off head is not paid for
    off = costs.per_sample(np.array([2, 3]), np.array([True, False, True]))
    assert np.allclose(off, [expect[2] - costs.head, expect[3] - costs.head])


def test_budget_rule():
    pts = [(0.90, 1.0), (0.88, 0.7), (0.85, 0.6), (0.88, 0.65)]
    assert best_under_budget(pts, 1.0) == 0
    assert best_under_budget(pts, 0.8) == 3  # best accuracy within budget, ties to fewer FLOPs
    assert best_under_budget(pts, 0.5) == 2  # nothing fits: fewest FLOPs


def rescue_toy(n=3000, seed=0):
    """Three candidates; the layer-1 head is right whenever its score is high, and full depth is
    wrong on a fifth of those: early exits can beat full depth."""
    rng = np.random.default_rng(seed)
    scores = rng.random((n, 3))
    head = np.stack([scores[:, 0] > 0.5, scores[:, 1] > 0.3, rng.random(n) < 0.5], axis=1)
    full = rng.random(n) < 0.8
    costs = ExitCosts(np.array([0.3, 0.6, 0.8, 1.0]), 0.01)
    return scores, head, full, costs


@pytest.mark.parametrize("budget", [0.35, 0.5, 0.7, 0.9, 1.0])
def test_lct_respects_budget(budget):
    scores, head, full, costs = rescue_toy()
    thr = lct_thresholds(scores, head, full, costs, budget, inr=np.array([3.0, 2.0, 1.0]))
    acc, flops = evaluate_policy(scores, thr, head, full, costs)
    assert flops <= budget + 1e-9
    assert all(t in GRID or t in (ALWAYS, NEVER) for t in thr)


@pytest.mark.parametrize("budget", [0.7, 1.0])
def test_lct_finds_the_rescue(budget):
    scores, head, full, costs = rescue_toy()
    thr = lct_thresholds(scores, head, full, costs, budget, inr=np.array([3.0, 2.0, 1.0]))
    acc, _ = evaluate_policy(scores, thr, head, full, costs)
    assert acc > full.mean() + 0.05
    assert thr[2] == NEVER  # the noisy third head is never worth running when the budget allows


def test_lct_infeasible_budget_goes_to_fewest_flops():
    scores, head, full, costs = rescue_toy()
    thr = lct_thresholds(scores, head, full, costs, 0.05, inr=np.ones(3))
    assert thr[0] == ALWAYS  # everything leaves at the first candidate: the cheapest policy
    assert evaluate_policy(scores, thr, head, full, costs)[1] == pytest.approx(0.31)


def test_lct_holds_back_when_exits_only_hurt():
    scores, head, full, costs = rescue_toy()
    thr = lct_thresholds(scores, np.zeros_like(head), np.ones_like(full), costs, 1.0, inr=np.ones(3))
    assert np.all(thr == NEVER)
