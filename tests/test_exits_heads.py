"""model/exits/heads.py: batched per-layer exit heads, hard-label and distilled training."""
import pytest
import torch
import torch.nn.functional as F

from model.exits.heads import ExitHeads, head_logits, train_heads


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(n=600, width=8, classes=4, embed=6, seed=0):
    """Layer 0 carries the class (a prototype plus noise); layer 1 is pure noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    protos = 3 * torch.randn(classes, width, generator=g)
    z = torch.randn(n, 2, width, generator=g)
    z[:, 0] += protos[labels]
    class_emb = F.normalize(torch.randn(classes, embed, generator=g), dim=-1)
    return z, labels, class_emb


def test_shapes_and_layer_independence():
    heads = ExitHeads(layers=3, width=8, embed_dim=6, hidden=5)
    z = torch.randn(4, 3, 8)
    emb = heads(z)
    assert emb.shape == (4, 3, 6)
    logits = heads.logits(emb, F.normalize(torch.randn(10, 6), dim=-1))
    assert logits.shape == (4, 3, 10)
    emb[:, 0].sum().backward()  # layer 0's output depends on layer 0's parameters only
    assert heads.w1.grad[1:].abs().sum() == 0 and heads.w1.grad[0].abs().sum() > 0
    # and on layer 0's input only
    z2 = z.clone()
    z2[:, 1:] += 5
    assert torch.allclose(heads(z2)[:, 0], heads(z)[:, 0])


def test_learns_the_informative_layer_only():
    z, labels, ce = toy()
    heads = train_heads(z[:400], labels[:400], ce, epochs=15, batch_size=64, lr=3e-3, hidden=16)
    acc = (head_logits(heads, z[400:], ce).argmax(-1) == labels[400:, None]).float().mean(0)
    assert acc[0] > 0.9
    assert acc[1] < 0.45  # chance is 0.25


def test_distillation_pulls_embeddings_to_the_target():
    z, labels, ce = toy()
    target = torch.randn(len(labels), ce.shape[1], generator=torch.Generator().manual_seed(3))
    target = target + 4 * ce[labels]  # a teacher embedding near, not at, the class embedding
    kw = dict(epochs=10, batch_size=64, lr=3e-3, hidden=16, seed=1)
    hard = train_heads(z, labels, ce, **kw)
    dist = train_heads(z, labels, ce, target=target, distill_weight=2.0, **kw)
    with torch.no_grad():
        cos_hard = F.cosine_similarity(hard(z)[:, 0], target, dim=-1).mean()
        cos_dist = F.cosine_similarity(dist(z)[:, 0], target, dim=-1).mean()
    assert cos_dist > cos_hard + 0.05


def test_seed_changes_the_init_only_deterministically():
    a, b = ExitHeads(2, 4, 3, seed=0), ExitHeads(2, 4, 3, seed=0)
    c = ExitHeads(2, 4, 3, seed=1)
    assert torch.equal(a.w1, b.w1) and not torch.equal(a.w1, c.w1)
