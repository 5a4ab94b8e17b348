import pytest
import torch

from model.checkpoint import new_model
from model.errors import QexitError
from model.vit import CLIPViT, ViTConfig, patchify
from tests.conftest import TINY


def test_default_config_matches_vit_b32_token_count_and_depth():
    cfg = ViTConfig()
    assert cfg.tokens == 50 and cfg.depth == 12 and cfg.num_patches == 49


def test_patchify_row_major():
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    p = patchify(img, 2)
    assert p.shape == (1, 4, 4)
    assert p[0, 0].tolist() == [0, 1, 4, 5] and p[0, 1].tolist() == [2, 3, 6, 7]


def test_forward_shapes_and_hidden_states():
    m = new_model(TINY)
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    logits = m(x)
    assert logits.shape == (3, 10)
    hs = m.hidden_states(x)
    assert len(hs) == TINY.depth and hs[-1].shape == (3, 50, 16)
    assert torch.allclose(m.cosine_logits(m.image_embedding(hs[-1])), logits, atol=1e-5)


def test_logits_are_scaled_cosines():
    m = new_model(TINY)
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert m(x).abs().max() <= m.logit_scale.exp() + 1e-4


def test_bad_config_and_shapes():
    with pytest.raises(QexitError, match="multiple of patch"):
        ViTConfig(image_size=28, patch=5)
    with pytest.raises(QexitError, match="multiple of heads"):
        ViTConfig(width=30, heads=4)
    with pytest.raises(QexitError, match="positive integer"):
        ViTConfig(depth=0)
    with pytest.raises(QexitError, match="images have shape"):
        new_model(TINY)(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))
    with pytest.raises(QexitError, match="class embeddings"):
        CLIPViT(TINY, torch.zeros(5, 7))
