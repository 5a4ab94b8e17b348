"""Per-block bit-widths in the IntModel and the golden model."""
import pytest
import torch

from model import intops
from model.errors import QexitError
from model.golden import Golden
from model.quantize import ACT_POINTS, LINEARS, IntModel, calibrate, check_widths, from_scales, load_intmodel


@pytest.fixture(scope="module")
def tiny_scales(tiny_trained, fmnist_gate):
    model, _ = tiny_trained
    return model, calibrate(model, fmnist_gate.images[:128])


def test_eight_bits_everywhere_is_the_int8_model(tiny_scales, tiny_intmodel, fmnist_test):
    model, scales = tiny_scales
    for widths in (None, [(8, 8)] * model.cfg.depth):
        im = from_scales(model, scales, 99.99, 128, widths)
        assert im.uniform8
        assert im.params.keys() == tiny_intmodel.params.keys()
        assert all(torch.equal(im.params[k], tiny_intmodel.params[k]) for k in im.params)
    a = Golden(im).forward(fmnist_test.images[:50])
    b = Golden(tiny_intmodel).forward(fmnist_test.images[:50])
    assert torch.equal(a.logits, b.logits)


def test_narrow_block_stays_in_its_ranges(tiny_scales, fmnist_test, tmp_path):
    """Block 2 at 4-bit weights and 3-bit activations: its weights and everything it computes but
    the residual stream fit those ranges; block 1 and the residual stream stay int8, and the
    narrower block really is used (its values fill the 3-bit range)."""
    model, scales = tiny_scales
    im = from_scales(model, scales, widths=[(8, 8), (4, 3)])
    for lin in LINEARS:
        w = im.params[f"b1.{lin}.w"]
        assert w.min() >= -8 and w.max() <= 7 and w.abs().max() == 7       # symmetric: max|w| -> 7
        assert im.params[f"b0.{lin}.w"].abs().max() == 127
    for p in ACT_POINTS:
        assert im.scales[f"b1.{p}"] == pytest.approx(scales[f"b1.{p}"] * 127 / 3)
    seen = {}

    def record(kind, name, inputs, out):
        seen.setdefault(name, []).append(out)

    Golden(im, record=record).forward(fmnist_test.images[:40])
    narrow = [n for n in seen if n.startswith("b1.") and n not in ("b1.add1", "b1.add2", "b1.scores")
              and not n.endswith("softmax")]
    assert {"b1.ln1", "b1.qkv", "b1.ctx", "b1.proj", "b1.ln2", "b1.fc1", "b1.gelu", "b1.fc2"} <= set(narrow)
    for n in narrow:
        v = torch.cat([t.reshape(-1) for t in seen[n]])
        assert v.min() >= -4 and v.max() <= 3, n
        assert v.max() == 3 or v.min() == -4, n
    wide = torch.cat([t.reshape(-1) for n in ("b0.fc1", "b1.add2") for t in seen[n]])
    assert wide.max() > 3 or wide.min() < -4
    im.save(tmp_path / "mixed.pt")
    back = load_intmodel(tmp_path / "mixed.pt")
    assert back.widths == ((8, 8), (4, 3)) and not back.uniform8


def test_narrow_kernels_clamp_the_int8_result():
    """Saturating at a narrower range equals clamping the int8 result: the same kernels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-128, 128, (6, 16), generator=g)
    lo, hi = intops.int_range(4)
    prm = intops.layernorm_params(torch.rand(16) + 0.5, torch.randn(16) * 0.1, 0.05, 0.02)
    assert torch.equal(intops.layernorm(x, **prm, lo=lo, hi=hi), intops.layernorm(x, **prm).clamp(lo, hi))
    gp = intops.gelu_params(0.05, 0.03)
    assert torch.equal(intops.gelu(x, **gp, lo=lo, hi=hi), intops.gelu(x, **gp).clamp(lo, hi))
    acc = torch.randint(-2 ** 20, 2 ** 20, (6, 16), generator=g)
    m, s = intops.quantize_multiplier(torch.full((16,), 0.003))
    assert torch.equal(intops.requantize(acc, m, s, lo=lo, hi=hi), intops.requantize(acc, m, s).clamp(lo, hi))


@pytest.mark.parametrize("widths,text", [
    ([(8, 8), (9, 8)], "weight bit-width 9 is outside {2..8}"),
    ([(8, 1), (8, 8)], "activation bit-width 1 is outside {2..8}"),
    ([(8, 8)], "has 1 layers but the model has 2"),
    ([(8, 8), (8, 8), (8, 8)], "has 3 layers but the model has 2"),
    ("88", "pair per block"),
])
def test_bad_widths(tiny_scales, widths, text):
    model, scales = tiny_scales
    with pytest.raises(QexitError) as e:
        from_scales(model, scales, widths=widths)
    assert text in str(e.value) and "\n" not in str(e.value)


def test_intmodel_values_exceeding_their_widths(tiny_intmodel, tmp_path):
    """An 8-bit IntModel that claims 4-bit weights in block 2 is refused on load, in one line."""
    im = IntModel(tiny_intmodel.config, dict(tiny_intmodel.params), tiny_intmodel.scales,
                 {}, ((8, 8), (4, 8)))
    im.save(tmp_path / "bad.pt")
    with pytest.raises(QexitError) as e:
        load_intmodel(tmp_path / "bad.pt")
    msg = str(e.value)
    assert "b1.qkv.w (block 2) holds values outside its declared 4-bit range [-8, 7]" in msg and "\n" not in msg
    assert check_widths([(8, 8), (4, 8)], 2) == ((8, 8), (4, 8))


def test_rtl_refuses_a_mixed_intmodel(tiny_scales):
    model, scales = tiny_scales
    im = from_scales(model, scales, widths=[(8, 8), (4, 4)])
    with pytest.raises(QexitError) as e:
        im.require_uniform8("the early-exit RTL run")
    assert "runs 8-bit IntModels" in str(e.value) and "[[8, 8], [4, 4]]" in str(e.value)
