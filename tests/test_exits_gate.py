"""model/exits/gate.py: gate features and the per-layer logistic gate."""
import math

import pytest
import torch

from model.exits.gate import gate_features, train_gate


pytestmark = pytest.mark.usefixtures("one_thread")


def test_features_by_hand():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    logits = p.log().unsqueeze(1)  # (N=2, K=1, C=3)
    f = gate_features(logits, torch.tensor([[5.0], [6.0]]))
    assert f.shape == (2, 1, 3)
    assert torch.allclose(f[:, 0], torch.tensor([[0.7, 0.5, 5.0], [0.4, 0.05, 6.0]]), atol=1e-6)


def test_learns_separable_toy_per_layer():
    """Layer 0: correct iff confidence > 0.6; layer 1: correct iff SAV is small (large scale)."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    f = torch.stack([torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g) * 0.5,
                     100 + 400 * torch.rand(n, 2, generator=g)], dim=-1)
    correct = torch.stack([f[:, 0, 0] > 0.6, f[:, 1, 2] < 250], dim=1)
    gate = train_gate(f[:1000], correct[:1000], steps=500)
    pred = gate.prob(f[1000:]) >= 0.5
    acc = (pred == correct[1000:]).float().mean(0)
    assert acc[0] > 0.95 and acc[1] > 0.95
    assert gate.weight[0, 0] > 0 and gate.weight[1, 2] < 0  # the right feature, the right sign


def test_comparator_form():
    """σ(w·f+b) ≥ τ  ⇔  w·f+b ≥ logit(τ): the hardware compares the pre-activation."""
    g = torch.Generator().manual_seed(1)
    f = torch.randn(500, 3, 3, generator=g)
    gate = train_gate(f, f[..., 0] > 0, steps=50)
    tau = 0.8
    assert torch.equal(gate.prob(f) >= tau, gate.logit(f) >= math.log(tau / (1 - tau)))
