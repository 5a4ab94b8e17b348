import pytest
import torch

from model import quantize as quantize_mod
from model.checkpoint import load_checkpoint
from model.errors import QexitError
from model.golden import Golden
from model.quantize import (
    SHIPPED_INTMODEL, IntModel, calibrate, dynamic_int8, expected_shapes, load_intmodel, quantize,
    shipped_intmodel_digest, trace_fp32, validate
)
from model.train import evaluate
from model.vit import CLIPViT, ViTConfig
from tests.conftest import TINY


def test_trace_mirrors_forward(tiny_trained, fmnist_test):
    model, _ = tiny_trained
    x = fmnist_test.images[:16]
    with torch.no_grad():
        assert torch.allclose(trace_fp32(model, x)["logits"], model(x), atol=1e-5)


def test_intmodel_is_complete_typed_and_in_range(tiny_intmodel):
    im = tiny_intmodel
    assert set(expected_shapes(TINY)) <= set(im.params)
    validate(im)
    for name, t in im.params.items():
        assert t.dtype == torch.int64, name
        if name.endswith(".w"):
            assert t.min() >= -128 and t.max() <= 127
            assert (t.abs().amax(dim=1) == 127).all(), f"{name}: per-channel scale should reach 127"


def test_save_load_roundtrip(tiny_intmodel, tmp_path):
    p = tmp_path / "im.pt"
    tiny_intmodel.save(p)
    im = load_intmodel(p, TINY)
    assert all(torch.equal(im.params[k], v) for k, v in tiny_intmodel.params.items())


def test_truncated_file(tiny_intmodel, tmp_path):
    p = tmp_path / "im.pt"
    tiny_intmodel.save(p)
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(QexitError, match="truncated or corrupt"):
        load_intmodel(p)


def test_other_version(tiny_intmodel, tmp_path):
    p = tmp_path / "im.pt"
    tiny_intmodel.save(p)
    blob = torch.load(p, weights_only=True)
    blob["version"] = 99
    torch.save(blob, p)
    with pytest.raises(QexitError, match="version 99"):
        load_intmodel(p)


def test_mismatched_config(tiny_intmodel, tmp_path):
    p = tmp_path / "im.pt"
    tiny_intmodel.save(p)
    with pytest.raises(QexitError, match="another model config"):
        load_intmodel(p, TINY.__class__(width=32, depth=2, heads=2))


def test_missing_and_bad_parameters(tiny_intmodel):
    params = dict(tiny_intmodel.params)
    del params["b1.fc2.w"]
    with pytest.raises(QexitError, match="lacks 1 parameters"):
        validate(IntModel(TINY, params, tiny_intmodel.scales))
    params = dict(tiny_intmodel.params)
    params["b0.qkv.m"] = params["b0.qkv.m"].clone()
    params["b0.qkv.m"][0] = 2 ** 31
    with pytest.raises(QexitError, match="multiplier outside"):
        validate(IntModel(TINY, params, tiny_intmodel.scales))
    params = dict(tiny_intmodel.params)
    params["b0.fc1.w"] = params["b0.fc1.w"] * 2
    with pytest.raises(QexitError, match="outside int8"):
        validate(IntModel(TINY, params, tiny_intmodel.scales))
    params = dict(tiny_intmodel.params)
    params["b1.softmax.qc"] = torch.tensor(2 ** 20)     # would break the 17-bit i-exp bound
    with pytest.raises(QexitError, match="b1.softmax: qc"):
        validate(IntModel(TINY, params, tiny_intmodel.scales))
    for name, value, message in (("b0.ln2.eps", torch.tensor(2 ** 60), "b0.ln2: eps"),
                                 ("b1.gelu.qc", torch.tensor(2 ** 24), "b1.gelu: qc"),
                                 ("b0.fc1.b", torch.full((TINY.hidden,), 2 ** 31), "b0.fc1.b holds values outside int32")):
        params = dict(tiny_intmodel.params)
        params[name] = value
        with pytest.raises(QexitError, match=message):
            validate(IntModel(TINY, params, tiny_intmodel.scales))


def test_too_few_calibration_images(tiny_trained, fmnist_gate):
    model, _ = tiny_trained
    with pytest.raises(QexitError, match="at least 32"):
        quantize(model, fmnist_gate.images[:8])


@pytest.mark.parametrize("option", [{"pre_ln": True}, {"act": "quick_gelu"}, {"pixel_mean": (0.5,), "pixel_std": (0.2,)},
                                    {"channels": 3, "pixel_mean": (0.4, 0.5, 0.6), "pixel_std": (0.2, 0.3, 0.25)}])
def test_clip_style_options_quantize(option):
    """Each CLIP option on its own (a pre-LN, quick_gelu as a table, other and per-channel pixel
    statistics folded into the patch embedding): the golden model tracks the FP32 model."""
    torch.manual_seed(0)
    model = CLIPViT(ViTConfig(**{**TINY.to_dict(), **option})).eval()
    c = model.cfg
    images = torch.randint(0, 256, (64, c.channels, c.image_size, c.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    im = quantize(model, images[:32])
    validate(im)
    out = Golden(im).forward(images[32:])
    with torch.no_grad():
        ref = model.image_embedding(model.hidden_states(images[32:])[-1]).double()
    cos = torch.nn.functional.cosine_similarity(out.embedding.double() * im.scales["emb"], ref, dim=-1)
    assert cos.min() > 0.95, cos


def test_max_calibration_is_at_least_percentile(tiny_trained, fmnist_gate):
    model, _ = tiny_trained
    p = calibrate(model, fmnist_gate.images[:64], 99.0)
    m = calibrate(model, fmnist_gate.images[:64], 100.0)
    assert all(m[k] >= p[k] for k in p)


def test_dynamic_int8_is_close_to_fp32(tiny_trained, fmnist_test):
    model, _ = tiny_trained
    dyn = dynamic_int8(model)
    assert "quantized" in type(dyn.blocks[0].fc1).__module__
    with torch.no_grad():
        assert abs(evaluate(dyn, fmnist_test) - evaluate(model, fmnist_test)) < 0.05


def test_shipped_intmodel_loads_with_its_hash():
    """The embedded default's IntModel ships beside its checkpoint: valid, 8-bit, and its
    digest equals the recorded one."""
    im = load_intmodel(SHIPPED_INTMODEL)
    assert im.digest() == shipped_intmodel_digest() and len(im.digest()) == 64
    im.require_uniform8("the shipped IntModel")
    model, _ = load_checkpoint()
    assert im.config == model.cfg


def test_digest_sees_every_integer(tiny_intmodel, tmp_path):
    d = tiny_intmodel.digest()
    tiny_intmodel.save(tmp_path / "a.pt")
    assert load_intmodel(tmp_path / "a.pt").digest() == d          # a round trip keeps it
    name = next(n for n in tiny_intmodel.params if n.endswith(".w"))
    tiny_intmodel.params[name][0, 0] += 1 if tiny_intmodel.params[name][0, 0] < 127 else -1
    assert tiny_intmodel.digest() != d


def test_a_changed_shipped_intmodel_is_refused(tiny_intmodel, tmp_path, monkeypatch):
    """A shipped IntModel whose integers no longer match the recorded hash: one line with the fix."""
    fake = tmp_path / "vit_fmnist_int8.pt"
    tiny_intmodel.save(fake)
    (tmp_path / "vit_fmnist_int8.sha256").write_text("0" * 64 + "\n")
    monkeypatch.setattr(quantize_mod, "SHIPPED_INTMODEL", fake)
    monkeypatch.setattr(quantize_mod, "SHIPPED_INTMODEL_DIGEST", tmp_path / "vit_fmnist_int8.sha256")
    with pytest.raises(QexitError, match="does not match its recorded hash.*git checkout"):
        load_intmodel(fake)
