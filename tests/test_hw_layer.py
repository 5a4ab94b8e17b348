"""The layer engine (hw/rtl/layer.py) running hw/program.py's program: bit-exact against the golden
model and cycle-exact against the program's cycle model, in Amaranth's simulator and under
cocotb; and the bad inputs it refuses before any simulation."""
from dataclasses import replace

import pytest
import torch

from hw import program
from hw.cost import Machine, timeline
from hw.cost.schedule import WeightSource
from hw.rtl.isa import LayerConfig
from model.errors import QexitError
from model.quantize import random_intmodel
from model.vit import ViTConfig
from sim import block as layer

TINY = ViTConfig(image_size=8, patch=4, channels=1, width=16, depth=2, heads=2, mlp_ratio=2, embed_dim=8, num_classes=3)


@pytest.fixture(scope="module")
def tiny():
    return random_intmodel(TINY, seed=3)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)


def check_pixels_to_logits(im, images, machine=Machine(4, None, 0)):
    """Every tap of every image bit-exact against the golden model, every segment's cycles as predicted."""
    runs = layer.run_in_amaranth(im, images, machine)
    plan, _ = program.model_program(im, 4)
    assert [r["cycles"] for r in runs] == [r["predicted"] for r in runs]
    for n, image in enumerate(images):
        exp = layer.expected_taps(im, image, plan, im.config.depth)
        got = {k: v for r in runs if r["image"] == n for k, v in r["taps"].items()}
        assert set(got) == set(exp)
        for name, (matched, total) in layer.compare(got, exp, plan).items():
            assert matched == total, name


@pytest.mark.parametrize("machine", [Machine(4, None, 0), Machine(4, 1.5, 7)], ids=["ideal", "slow"])
def test_pixels_to_logits_in_amaranth(tiny, machine):
    check_pixels_to_logits(tiny, _images(2), machine)


@pytest.mark.parametrize("act", [pytest.param("gelu", marks=pytest.mark.slow), "quick_gelu"])   # CLIP's own: quick_gelu
def test_a_clip_layout_runs_bit_and_cycle_exact(act):
    """CLIP's pre-LN (a LayerNorm on the embedded tokens, in place in x) and the MLP activation,
    i-GELU or quick_gelu, as a 256-entry table loaded per layer into the TableUnit (no computed
    GELU unit in the engine), through the engine."""
    im = random_intmodel(replace(TINY, pre_ln=True, act=act), seed=4)
    plan, segs = program.model_program(im, 4)
    assert "pre.ln" in [d.name for d in segs[0]]
    cfg = program.engine_config(plan, segs)
    assert cfg.table and not cfg.gelu
    check_pixels_to_logits(im, _images(2, seed=1))


def test_a_wrong_weight_changes_the_tokens(tiny):
    """The check can fail: the engine run with one changed weight no longer matches."""
    bad = random_intmodel(TINY, seed=3)
    w = bad.params["b0.fc2.w"]
    w[0, 0] = 127 if int(w[0, 0]) != 127 else -128
    image = _images(1)
    runs = layer.run_in_amaranth(bad, image, Machine(4, None, 0), layers=1)
    plan, _ = program.model_program(tiny, 4, 1)
    exp = layer.expected_taps(tiny, image[0], plan, 1)
    got = {k: v for r in runs for k, v in r["taps"].items()}
    matched, total = layer.compare(got, exp, plan)["b0 tokens"]
    assert matched < total


@pytest.mark.simulator
@pytest.mark.parametrize("clip", [False, True], ids=["fmnist", "clip-layout"])
def test_verify_block_under_cocotb(tiny, tmp_path, clip):
    """Under cocotb and Verilator; the CLIP layout (pre-LN, quick_gelu on the TableUnit) too."""
    im = random_intmodel(replace(TINY, pre_ln=True, act="quick_gelu"), seed=4) if clip else tiny
    res = layer.verify_block(im, _images(1, seed=5), Machine(4, 3, 5))
    assert res.passed, res.log
    assert res.matched == res.total == 2 * 80 + 8 + 3
    assert res.cycles_measured == res.cycles_predicted
    assert res.predictions_matched


def test_cycle_shares_add_up(tiny):
    plan, segs = program.model_program(tiny, 4)
    seg = segs[1]
    src = WeightSource(2, 20)
    assert sum(timeline.shares(seg, 4, src).values()) == sum(timeline.predict(seg, 4, src))
    assert sum(timeline.predict(seg, 4, WeightSource(1, 20))) > sum(timeline.predict(seg, 4, src))


def test_bad_inputs(tiny):
    with pytest.raises(QexitError, match="not a multiple of the array's 3 lanes"):
        program.make_plan(TINY, 3)
    with pytest.raises(QexitError, match="must be > 0"):
        WeightSource(0, 5)
    with pytest.raises(QexitError, match="square number"):
        layer.random_block_model(64, 4, 256, 48, 1)
    with pytest.raises(QexitError, match="not a multiple of --heads"):
        layer.random_block_model(64, 5, 256, 50, 1)
    with pytest.raises(QexitError, match="LayerNorm"):
        LayerConfig(lanes=4, max_d=8192)
    with pytest.raises(QexitError, match="square array"):
        layer.run_in_amaranth(tiny, _images(1), Machine(4, None, 0, cols=8))


@pytest.mark.simulator("verilator")
def test_free_running_layer_takes_the_predicted_cycles(tiny):
    """The free-running harness (the speed baseline, no cocotb) runs a layer in the predicted cycles."""
    out = layer.free_running(tiny, Machine(4, 3, 5))
    assert out["cycles"] == out["counter"] == out["predicted"]
