"""model/exits/backbones.py: the fp32 / dynamic-INT8 backbones and their cache keys."""
import pytest
import torch
from torch import nn

from model.errors import QexitError
from model.exits import backbones
from model.exits.backbones import dynamic_backbone, fp32_backbone, model_digest
from model.vit import CLIPViT, ViTConfig


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = CLIPViT(ViTConfig(width=16, depth=3, heads=2, embed_dim=24)).eval()
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return model, images


def test_fp32_backbone_is_the_model(tiny):
    model, images = tiny
    out = fp32_backbone(model).forward(images)
    assert len(out.hidden_states) == 3 and out.hidden_states[0].shape == (40, 50, 16)
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


def test_int8_backbone_follows_fp32(tiny):
    model, images = tiny
    bb = backbones.int8_backbone(model, calib_images=images)
    assert bb.key.startswith("int8-") and bb.key != fp32_backbone(model).key
    out = bb.forward(images[:8])
    with torch.no_grad():
        ref = model.hidden_states(images[:8])
    assert len(out.hidden_states) == len(ref) and out.logits.shape == (8, model.cfg.num_classes)
    cos = torch.cosine_similarity(out.hidden_states[0].flatten(1), ref[0].flatten(1), dim=-1)
    assert cos.min() > 0.9


def test_int8_missing_intmodel_file(tiny, tmp_path):
    with pytest.raises(QexitError) as err:
        backbones.int8_backbone(tiny[0], tmp_path / "nope.qint")
    assert "does not exist" in str(err.value)


def test_int8_corrupt_intmodel_fails_at_once(tiny, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(QexitError, match="truncated or corrupt"):
        backbones.int8_backbone(tiny[0], bad)
