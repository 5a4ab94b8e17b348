import pytest
import torch

from model.checkpoint import new_model
from model.errors import QexitError
from model.vit import PIXEL_MEAN, PIXEL_STD, CLIPViT, ViTConfig, normalize_pixels, patchify
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


def test_config_new_fields_round_trip_and_default_to_the_old_model():
    cfg = ViTConfig(channels=3, pre_ln=True, act="quick_gelu", ln_eps=1e-6,
                    pixel_mean=[0.1, 0.2, 0.3], pixel_std=[0.5, 0.5, 0.5])
    assert cfg.pixel_mean == (0.1, 0.2, 0.3)  # lists (from a file) become tuples; the config stays hashable
    assert ViTConfig.from_dict(cfg.to_dict()) == cfg and hash(cfg) == hash(ViTConfig.from_dict(cfg.to_dict()))
    old = {k: v for k, v in ViTConfig().to_dict().items()
           if k not in ("pre_ln", "act", "ln_eps", "pixel_mean", "pixel_std")}  # a config from before them
    assert ViTConfig.from_dict(old) == ViTConfig()
    assert set(new_model(TINY).state_dict()) == set(new_model(ViTConfig(**{**TINY.to_dict(), "act": "quick_gelu"})).state_dict())


def test_default_normalisation_is_bit_for_bit_the_old_one():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(normalize_pixels(x), (x.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD)
    assert "ln_pre.weight" not in new_model(TINY).state_dict()


def test_clip_style_options_change_the_model():
    cfg = ViTConfig(**{**TINY.to_dict(), "channels": 3, "pre_ln": True, "act": "quick_gelu", "ln_eps": 1e-3,
                       "pixel_mean": (0.4, 0.5, 0.6), "pixel_std": (0.2, 0.25, 0.3)})
    m = CLIPViT(cfg).eval()
    assert m.ln_pre.eps == m.blocks[0].ln1.eps == m.ln_post.eps == 1e-3 and "ln_pre.weight" in m.state_dict()
    x = torch.randint(0, 256, (2, 3, 28, 28), dtype=torch.uint8)
    pixels = (x.float() / 255 - torch.tensor([0.4, 0.5, 0.6])[:, None, None]) / torch.tensor([0.2, 0.25, 0.3])[:, None, None]
    assert torch.allclose(m.normalized(x), pixels)
    assert torch.allclose(m(x), m.cosine_logits(m.encode_image(pixels)), atol=1e-5)
    h = torch.randn(4, 8)
    assert torch.allclose(m.blocks[0].act(h), h * torch.sigmoid(1.702 * h))


@pytest.mark.parametrize("field, value, text", [
    ("pre_ln", 1, "pre_ln=1 must be true or false"),
    ("act", "relu", "act='relu' is not supported"),
    ("ln_eps", 0.0, "ln_eps=0.0 must be a number between 0 and 1"),
    ("ln_eps", "1e-5", "must be a number"),
    ("pixel_mean", (0.1, 0.2), "pixel_mean=(0.1, 0.2) must hold one number per channel"),
    ("pixel_std", (0.0,), "pixel_std=(0.0,) must be positive"),
    ("pixel_std", 0.3, "must hold one number per channel"),
    ("depth", True, "positive integer"),
])
def test_bad_new_config_fields_are_one_line(field, value, text):
    with pytest.raises(QexitError) as e:
        ViTConfig(**{field: value})
    assert text in str(e.value) and "\n" not in str(e.value)
