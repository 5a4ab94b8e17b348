"""model/exits/features.py: per-layer SSA/[CLS]/SAV features, the NSR profile and the cache."""
import pytest
import torch

from model.exits.backbones import dynamic_backbone, fp32_backbone
from model.exits.features import cached_features, extract_features, layer_features
from model.vit import CLIPViT, ViTConfig


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = CLIPViT(ViTConfig(width=16, depth=3, heads=2, embed_dim=24)).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (30, 1, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (30,), generator=g)
    return model, images, labels


def test_layer_features_by_hand():
    h = torch.zeros(2, 4, 3)  # N=2, T=4 (CLS + 3 patches), D=3
    h[:, 0] = 100.0           # a huge [CLS] must not leak into SSA or SAV
    h[0, 1:, 0] = torch.tensor([1.0, 2.0, 3.0])
    h[1, 1:, 2] = torch.tensor([-1.0, -1.0, -1.0])
    ssa, cls, sav = layer_features([h, 2 * h])
    assert ssa.shape == (2, 2, 3) and cls.shape == (2, 2, 3) and sav.shape == (2, 2)
    assert torch.allclose(ssa[0, 0], torch.tensor([2.0, 0.0, 0.0]))
    assert torch.allclose(ssa[1, 1], torch.tensor([0.0, 0.0, -2.0]))
    assert torch.allclose(cls[:, 1], torch.full((2, 3), 200.0))
    # patches 1,2,3 in one channel: squared deviations 1,0,1 over 3 patches × 3 channels
    assert sav[0, 0].item() == pytest.approx(2 / 9)
    assert sav[0, 1].item() == pytest.approx(8 / 9)
    assert sav[1, 0].item() == 0.0  # identical patches have no spatial variance


def test_extract_matches_full_tokens_and_is_batch_invariant(tiny):
    model, images, labels = tiny
    bb = fp32_backbone(model)
    a = extract_features(bb, images, labels, batch_size=7)
    b = extract_features(bb, images, labels, batch_size=30)
    with torch.no_grad():
        hs = model.hidden_states(images)
    assert torch.allclose(a.ssa[:, 2], hs[2][:, 1:].mean(1), atol=1e-6)
    assert torch.allclose(a.cls[:, 0], hs[0][:, 0])
    for name in ("ssa", "cls", "sav", "final_embedding", "final_logits"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5)
    assert a.nsr is None and a.depth == 3 and len(a) == 30


def test_noise_profile(tiny):
    model, images, labels = tiny
    same = extract_features(fp32_backbone(model), images, labels, reference=model)
    assert torch.all(same.nsr == 0)
    dyn = extract_features(dynamic_backbone(model), images, labels, reference=model)
    assert torch.all(dyn.nsr > 0) and torch.all(dyn.nsr < 1) and torch.all(dyn.mse > 0)
    assert set(dyn.noise()) == {"nsr", "mse"} and len(dyn.noise()["nsr"]) == 3
    sub = dyn.take(torch.tensor([0, 0, 5]))
    assert len(sub) == 3 and torch.equal(sub.ssa[1], dyn.ssa[0]) and torch.equal(sub.nsr, dyn.nsr)


def test_cache_hits_and_keys(tiny, tmp_path):
    model, images, labels = tiny
    fb, db = fp32_backbone(model), dynamic_backbone(model)
    a, hit_a = cached_features(fb, "test", images, labels, cache_dir=tmp_path)
    b, hit_b = cached_features(fb, "test", images, labels, cache_dir=tmp_path)
    assert (hit_a, hit_b) == (False, True)
    assert torch.equal(a.ssa, b.ssa) and torch.equal(a.final_logits, b.final_logits)
    _, hit_other_mode = cached_features(db, "test", images, labels, cache_dir=tmp_path)
    _, hit_other_images = cached_features(fb, "test", images[:20], labels[:20], cache_dir=tmp_path)
    assert not hit_other_mode and not hit_other_images
    assert len(list(tmp_path.glob("*.pt"))) == 3
    for f in tmp_path.glob("fp32-test-*.pt"):
        f.write_bytes(b"not a torch file")  # a corrupt cache entry is rebuilt, not trusted
    c, hit_c = cached_features(fb, "test", images, labels, cache_dir=tmp_path)
    assert not hit_c and torch.equal(a.ssa, c.ssa)
