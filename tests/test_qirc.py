import torch

from model import qirc
from model.golden import Golden
from model.quantize import dynamic_int8
from qexit.render.quantize import plot_qirc


def test_analysis_shapes_and_sanity(tiny_trained, tiny_intmodel, fmnist_test, tmp_path):
    model, _ = tiny_trained
    g = Golden(tiny_intmodel)
    x = fmnist_test.images[:40]
    a = qirc.analyze(model, lambda im: g.dequantize_blocks(g.forward(im)), x, batch_size=16)
    assert set(a) == set(qirc.METRICS)
    assert all(len(v) == model.cfg.depth for v in a.values())
    assert all(0 < c <= 1.0 + 1e-9 for c in a["cos_tokens"])
    assert all(n > 0 for n in a["nsr"]) and all(r >= 1 for r in a["outlier_ratio"])
    d = qirc.analyze(model, dynamic_int8(model).hidden_states, x)
    plot_qirc({"int8": a, "dynamic": d}, tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_exact_backbone_has_zero_noise(tiny_trained, fmnist_test):
    model, _ = tiny_trained
    a = qirc.analyze(model, model.hidden_states, fmnist_test.images[:8])
    assert max(a["nsr"]) < 1e-9 and min(a["cos_tokens"]) > 1 - 1e-6


def test_noise_is_detected(tiny_trained, fmnist_test):
    model, _ = tiny_trained
    noisy = lambda x: [h + 0.1 * torch.randn_like(h) for h in model.hidden_states(x)]
    a = qirc.analyze(model, noisy, fmnist_test.images[:8])
    assert min(a["mse"]) > 0.005
