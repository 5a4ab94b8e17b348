"""model/flops.py: FLOPs per part of the ViT, checked against torch's own FLOP counter."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from model.flops import (block_flops, block_flops_breakdown, early_exit_flops, exit_head_flops,
                         final_head_flops, full_depth_flops, patch_embed_flops)
from model.vit import CLIPViT, ViTConfig

CFGS = [ViTConfig(width=16, depth=2, heads=2, embed_dim=32), ViTConfig(width=24, depth=3, heads=3, embed_dim=20,
                                                                         mlp_ratio=2)]


@pytest.mark.parametrize("cfg", CFGS)
def test_gemm_flops_match_torch_counter(cfg):
    """The matrix-multiply part of our count equals what torch counts for one image's forward."""
    model = CLIPViT(cfg).eval()
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    with FlopCounterMode(display=False) as counter:
        model(x)
    t, d, h, p = cfg.tokens, cfg.width, cfg.hidden, cfg.num_patches
    b = block_flops_breakdown(cfg)
    # strip the bias adds and the scale from our GEMM entries: what is left is 2·MACs
    block_gemm = (b["qkv"] - t * 3 * d) + (b["scores"] - cfg.heads * t * t) + b["context"] \
        + (b["proj"] - t * d) + (b["fc1"] - t * h) + (b["fc2"] - t * d)
    ours = (patch_embed_flops(cfg) - p * d - t * d) + cfg.depth * block_gemm \
        + 2 * d * cfg.embed_dim + 2 * cfg.embed_dim * cfg.num_classes
    assert ours == counter.get_total_flops()


def test_block_dominated_by_gemms_and_totals_add_up():
    cfg = ViTConfig()
    b = block_flops_breakdown(cfg)
    gemms = sum(b[k] for k in ("qkv", "scores", "context", "proj", "fc1", "fc2"))
    assert 0.9 < gemms / block_flops(cfg) < 1.0
    assert full_depth_flops(cfg) == patch_embed_flops(cfg) + 12 * block_flops(cfg) + final_head_flops(cfg)
    # an exit head is a few percent of a block
    assert 0 < exit_head_flops(cfg, 128) < 0.1 * block_flops(cfg)
    assert exit_head_flops(cfg, 128, pooled=False) < exit_head_flops(cfg, 128)


def test_early_exit_flops():
    cfg = ViTConfig()
    head = exit_head_flops(cfg, 128)
    f = early_exit_flops(cfg, [4, 8, 10], 128)
    assert len(f) == 4 and f == sorted(f)
    assert f[0] == patch_embed_flops(cfg) + 4 * block_flops(cfg) + head
    assert f[2] == patch_embed_flops(cfg) + 10 * block_flops(cfg) + 3 * head  # every head run on the way
    assert f[3] == full_depth_flops(cfg) + 3 * head
    for bad in ([8, 4], [0, 3], [13], [4, 4]):
        with pytest.raises(ValueError):
            early_exit_flops(cfg, bad, 128)
