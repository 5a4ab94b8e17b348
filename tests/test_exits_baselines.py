"""model/exits/baselines.py: confidence-only / CLS-EE threshold and PABEE patience."""
import numpy as np

from model.exits.baselines import choose_global_threshold, choose_patience, patience_route
from model.exits.thresholds import NEVER, ExitCosts, route


def test_patience_route_by_hand():
    preds = np.array([[1, 1, 1, 1],   # agrees from the start
                      [1, 2, 2, 2],   # streak starts at layer index 1
                      [1, 2, 1, 2],   # never agrees
                      [3, 3, 4, 4]])
    assert patience_route(preds, 1).tolist() == [1, 2, 4, 1]
    assert patience_route(preds, 2).tolist() == [2, 3, 4, 4]
    assert patience_route(preds, 3).tolist() == [3, 4, 4, 4]


def test_global_threshold_respects_budget():
    rng = np.random.default_rng(0)
    conf = rng.random((2000, 2))
    head = conf > 0.4
    full = rng.random(2000) < 0.7
    costs = ExitCosts(np.array([0.4, 0.7, 1.0]), 0.01)
    for budget in (0.7, 0.85, 1.0):
        tau = choose_global_threshold(conf, head, full, costs, budget)
        exit_idx = route(conf, np.full(2, tau))
        assert costs.per_sample(exit_idx, np.full(2, tau != NEVER)).mean() <= budget


def test_patience_choice_respects_budget():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 1000)
    preds = np.where(rng.random((1000, 5)) < 0.7, truth[:, None], rng.integers(0, 3, (1000, 5)))
    head = preds == truth[:, None]
    full = rng.random(1000) < 0.75
    costs = ExitCosts(np.array([0.15, 0.3, 0.45, 0.6, 0.75, 1.0]), 0.005)
    p_tight = choose_patience(preds, head, full, costs, 0.6)
    p_loose = choose_patience(preds, head, full, costs, 1.0)
    assert 1 <= p_tight <= p_loose <= 4
    assert costs.per_sample(patience_route(preds, p_tight), np.ones(5, bool)).mean() <= 0.6
