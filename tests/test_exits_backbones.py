"""model/exits/backbones.py: the fp32 / dynamic-INT8 backbones and their cache keys."""
import pytest
import torch
from torch import nn

from model.errors import QexitError
from model.exits import backbones
from model.exits.backbones import dynamic_backbone, fp32_backbone, model_digest
from model.vit import CLIPViT, ViTConfig


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = CLIPViT(ViTConfig(width=16, depth=3, heads=2, embed_dim=24)).eval()
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return model, images


def test_fp32_backbone_is_the_model(tiny):
    model, images = tiny
    out = fp32_backbone(model).forward(images)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (20, 50, 16)
    with torch.no_grad():
        assert torch.allclose(out.logits, model(images), atol=1e-5)


def test_dynamic_backbone_is_quantized_copy(tiny):
    model, images = tiny
    fb, db = fp32_backbone(model), dynamic_backbone(model)
    assert fb.key != db.key
    with torch.no_grad():
        f, d = fb.forward(images), db.forward(images)
    assert not torch.equal(f.hidden_states[-1], d.hidden_states[-1])  # really quantized
    cos = torch.cosine_similarity(f.embedding, d.embedding, dim=-1)
    assert cos.min() > 0.9  # but close
    assert isinstance(model.blocks[0].fc1, nn.Linear) and type(model.blocks[0].fc1) is nn.Linear  # FP32 untouched


def test_digest_follows_the_weights(tiny):
    model, _ = tiny
    a = model_digest(model)
    other = CLIPViT(model.cfg, model.class_embeddings)
    other.load_state_dict(model.state_dict())
    assert model_digest(other) == a
    with torch.no_grad():
        other.blocks[1].fc2.weight[0, 0] += 1e-3
    assert model_digest(other) != a


def test_int8_without_golden_is_a_clear_error(tiny, monkeypatch):
    monkeypatch.setattr(backbones, "int8_available", lambda: False)
    with pytest.raises(QexitError) as err:
        backbones.int8_backbone(tiny[0])
    assert "\n" not in str(err.value) and "--modes dynamic" in str(err.value)
