"""model/exits/fixed.py: the fixed-point exit head and gate against the float
head and gate they are quantized from, and the widths of every stored constant."""
import torch

from model import intops
from model.exits import fixed
from model.exits.gate import Gate, gate_features
from model.exits.heads import ExitHeads

K, D, E, C, T = 3, 64, 96, 10, 50
S_X = [0.05, 0.08, 0.12]


def _setup():
    torch.manual_seed(0)
    heads = ExitHeads(K, D, E, hidden=32, seed=1)
    with torch.no_grad():
        heads.ln_weight.mul_(1 + 0.3 * torch.randn_like(heads.ln_weight))
        heads.b1.add_(0.1 * torch.randn_like(heads.b1))
    gate = Gate(torch.tensor([[4.0, 6.0, -0.5]] * K), torch.tensor([-3.0] * K))
    return heads, gate, torch.randn(C, E)


def _tokens(n, seed):
    g = torch.Generator().manual_seed(seed)
    tok = (torch.randn(n, K, T, D, generator=g) * 30 + torch.randn(n, K, 1, D, generator=g) * 20)
    tok = tok.round().clamp(-128, 127).long()
    s, v = zip(*[fixed.token_sums(tok[:, k]) for k in range(K)])
    return torch.stack(s, 1), torch.stack(v, 1)


def _float(heads, gate, cls_emb, s, v):
    with torch.no_grad():
        ssa = s.double() * torch.tensor(S_X, dtype=torch.float64)[None, :, None] / (T - 1)
        logits = heads.logits(heads(ssa.float()), cls_emb)
        sav = v.double() * torch.tensor(S_X, dtype=torch.float64) ** 2 / ((T - 1) ** 2 * D)
        return logits, gate.logit(gate_features(logits, sav.float()))


def test_token_sums_are_the_ssa_and_sav_numerators():
    x = torch.randint(-128, 128, (4, T, D))
    s, v = fixed.token_sums(x)
    p = x[:, 1:].double()
    assert torch.equal(s, x[:, 1:].sum(1))
    sav = ((p - p.mean(1, keepdim=True)) ** 2).mean((1, 2))
    assert torch.allclose(v.double() / ((T - 1) ** 2 * D), sav)


def test_fixed_head_follows_the_float_head():
    heads, gate, cls_emb = _setup()
    s_cal, v_cal = _tokens(512, 1)
    fh = fixed.quantize_head(heads, gate, cls_emb, S_X, s_cal, v_cal, T - 1)
    s, v = _tokens(600, 2)
    scores, g = fh.forward(s, v)
    logits, z = _float(heads, gate, cls_emb, s, v)
    assert scores.dtype == torch.int64 and scores.abs().max() < 2 ** 31
    assert (scores.argmax(-1) == logits.argmax(-1)).float().mean() > 0.9
    assert (g.double() / 2 ** fixed.GATE_BITS - z.double()).abs().mean() < 0.5
    tau = torch.tensor([0.05, 0.5, 0.9])
    assert ((g >= fixed.thresholds(tau)) == (torch.sigmoid(z) >= tau)).float().mean() > 0.95


def test_every_constant_fits_its_register():
    heads, gate, cls_emb = _setup()
    s_cal, v_cal = _tokens(256, 3)
    fh = fixed.quantize_head(heads, gate, cls_emb, S_X, s_cal, v_cal, T - 1)
    intops.check_int8(fh.class_t, "class embeddings")
    for lay in fh.layers:
        p = lay.params
        for w in ("w1", "w2"):
            intops.check_int8(p[w], w)
        for b in ("b1", "b2"):
            assert p[b].abs().max() <= intops.INT32_MAX
        for m, s in (("m_a", "sh_a"), ("m1", "sh1"), ("m2", "sh2"), ("m_z", "sh_z")):
            intops.check_multiplier(p[m], p[s], m)
        intops.check_layernorm_params(p["ln_g"], p["ln_b"], p["ln_shift"], p["ln_eps"])
        for w in ("w_c", "w_m", "w_s", "bias"):
            assert abs(int(p[w])) < 2 ** 31, w
    intops.check_softmax_params(**fh.softmax)


def test_threshold_registers_are_logit_tau():
    """G >= ceil(logit(tau) 2**GATE_BITS) exactly when G / 2**GATE_BITS >= logit(tau)."""
    taus = torch.tensor([0.5, 0.1, 0.3, 0.77, 0.99], dtype=torch.float64)
    th = fixed.thresholds(taus)
    assert th[0] == 0
    logit = torch.log(taus / (1 - taus))
    one = 2 ** fixed.GATE_BITS
    for g in list(range(-6 * one, 6 * one, one // 101)) + [int(t) + d for t in th for d in (-1, 0, 1)]:
        assert ((g >= th) == (g / 2 ** fixed.GATE_BITS >= logit)).all()
