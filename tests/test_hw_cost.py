"""hw/cost/: the cost model's cycles equal those the RTL measured, its counts agree with MACs
and weight bytes computed from the model's shapes on their own, and bad input is one line."""
import json
from pathlib import Path

import pytest

from hw import cost, program
from hw.cost import tables, timeline
from hw.cost.schedule import WeightSource
from hw.rtl.isa import Op, Src, param_beats
from hw.rtl.dense import MacDense
from hw.rtl.head import head_cycles
from hw.rtl.timing import READ_LATENCY
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import random_intmodel
from model.vit import ViTConfig
from tests.conftest import exits_json

CFG = ViTConfig(width=16, depth=4, heads=2, embed_dim=24)
LAT = (3, 3, 5)
ROOT = Path(__file__).resolve().parents[1]
VERIFY_BLOCK = ROOT / "reports" / "example" / "verify-block" / "summary.json"
SHIPPED_CONFIG = ROOT / "model" / "weights" / "vit_fmnist.json"


@pytest.fixture(scope="module")
def im():
    return random_intmodel(CFG, seed=1)


@pytest.fixture(scope="module")
def ep(exit_path_files):
    return exit_path.load(exit_path_files[0])


@pytest.fixture(scope="module")
def costs(im, ep):
    return cost.build(im, cost.Machine(8, 2.0, 20, 200.0), tables.load(), {1: LAT, 3: LAT}, ep.head)


def test_the_engine_timeline_is_the_cycles_the_rtl_measured():
    """The layer engine's timeline against the RTL, not against itself: `qexit verify block`
    ran the shipped model's whole program on the 8x8 layer engine (its parameters from a stream
    that always has the next word) with the weights at 4 B/cycle after 20 cycles and counted
    every segment's cycles (reports/example/verify-block, committed). Cycles depend on the
    shapes alone, so a random IntModel of the shipped config has the same program. The
    accelerator adds its sequencer to these (tests/test_accelerator.py checks that in RTL)."""
    rtl = json.loads(VERIFY_BLOCK.read_text())
    assert (rtl["rows"], rtl["cols"], rtl["bandwidth"], rtl["latency"], rtl["passed"]) == (8, 8, 4.0, 20, True)
    measured = {name: seg["cycles_measured"] for name, seg in rtl["segments"].items()}
    cfg = ViTConfig(**json.loads(SHIPPED_CONFIG.read_text())["config"])
    im = random_intmodel(cfg, seed=0)
    plan, segs = program.model_program(im, 8)
    src = WeightSource(4.0, 20)
    names = ["embed"] + [f"b{i}" for i in range(cfg.depth)] + ["head"]
    assert [sum(timeline.predict(seg, 8, src)) for seg in segs] == [measured[n] for n in names]


def test_a_segment_costs_its_program_its_engine_and_the_sequencer(im, costs):
    """Each part is ``timeline.segment_cycles``: the program's fetch, the engine with weights and
    parameters through the memory port, the sequencer's states; the embedding adds its IMAGE
    state and the image's words, the final head its logits into the comparator."""
    port, db = costs.machine.port, costs.prog_beats
    seg = costs.plain[2].seg
    engine = sum(timeline.predict(seg, 8, port=port))
    assert costs.plain[2].cycles == 4 + port.beat(len(seg) * db - 1) + engine
    images = CFG.num_patches * CFG.patch_dim // 8
    e = costs.embed.seg
    assert costs.embed.cycles == 1 + 4 + port.beat(len(e) * db - 1) + sum(timeline.predict(e, 8, port=port)) \
        + port.beat(images - 1) + 1
    f = costs.final.seg
    assert costs.final.cycles == 4 + port.beat(len(f) * db - 1) + sum(timeline.predict(f, 8, port=port)) + 10 + 2
    assert costs.result.cycles == 5                         # AW, the record's beat, B, back to IMAGE


def test_an_exit_costs_its_layers_taps_and_decisions(im, ep, costs):
    tokens, w = CFG.num_patches + 1, CFG.width // 8
    decision = head_cycles(ep.head, tokens, 8, LAT) - tokens * w + 2 + 1 - 3 - 1   # less the END after the tap
    assert costs.decision[1].cycles == decision
    tap, plain = costs.layers, costs.plain
    assert costs.cycles(costs.route(3)) == costs.embed.cycles + tap[1].cycles + plain[2].cycles + tap[3].cycles \
        + 2 * decision + costs.result.cycles
    port, n, db = costs.machine.port, len(plain[2].seg), costs.prog_beats
    more_program = port.beat((n + 1) * db - 1) - port.beat(n * db - 1)      # the tap's descriptor
    assert tap[1].cycles == plain[2].cycles + tokens * w + 3 + READ_LATENCY + more_program   # T W words, fetch, start, read
    full = costs.cycles(costs.route(None))
    assert full == costs.cycles(costs.route_full()) + 2 * (tokens * w + 3 + READ_LATENCY + more_program) + 2 * decision
    assert costs.record_cycles(costs.route(None)) == full - costs.result.cycles


def test_a_mac_head_costs_its_rows_and_rom_reads(im, ep):
    """With the MAC head (one for both candidates), a decision takes the head's rows, one ROM
    word a cycle, and reads every word of one candidate's fc1 and fc2 and the class embeddings."""
    h, mac = ep.head, MacDense(4)
    c = cost.build(im, cost.Machine(8, 2.0, 20, 200.0), tables.load(), {1: mac, 3: mac}, h)
    with_lat = cost.build(im, cost.Machine(8, 2.0, 20, 200.0), tables.load(), {1: LAT, 3: LAT}, h)
    rows = h.hidden * (h.width // 4) + h.embed_dim * (h.hidden // 4) + h.classes * (h.embed_dim // 4)
    da4ml = sum(lat + 1 for lat in LAT) + h.hidden // 8 + 3 + h.embed_dim // 8 + 3
    assert c.decision[1].cycles - with_lat.decision[1].cycles == rows + 7 + 7 + 3 - da4ml
    assert c.decision[3].counts["head.rom:r"] == rows
    fc_words = h.hidden * (h.width // 4) + h.embed_dim * (h.hidden // 4)
    assert c.mems["head.rom"] == (2 * fc_words + h.classes * (h.embed_dim // 4), 32)
    assert c.decision[1].energy(c.table, c.mems)["sram"] > with_lat.decision[1].energy(c.table, c.mems)["sram"]


def test_counts_match_the_models_shapes(im, costs):
    """MACs and memory bytes per layer, from the ViT's shapes alone (8 divides every dim): the
    weights, the parameter words (``param_beats`` beats each) and the program's descriptors."""
    t, d, f = CFG.tokens, CFG.width, CFG.hidden
    layer = costs.plain[2]
    assert layer.counts["mac8"] == layer.macs == t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * f
    weights = sum(im.p(f"b1.{n}.w").numel() for n in ("qkv", "proj", "fc1", "fc2"))
    params = sum(x["words"] for x in layer.seg if x["op"] == Op.MOVE and x["src"] == Src.PARAM)
    assert params > 0 and costs.prog_beats > 0
    assert layer.counts["dram_bytes"] == weights + 8 * (params * param_beats(8) + len(layer.seg) * costs.prog_beats)
    assert costs.embed.counts["mac8"] == CFG.num_patches * CFG.patch_dim * d


def test_energy_is_counts_times_the_table(costs, tmp_path):
    base = costs.energy_pj(costs.route_full())
    values = json.loads(tables.DEFAULT.read_text())
    doubled = {k: (v * 2 if isinstance(v, (int, float)) else {s: e * 2 for s, e in v.items()} if isinstance(v, dict) else v)
               for k, v in values.items()}
    (tmp_path / "x2.json").write_text(json.dumps(doubled))
    twice = cost.Costs(**{**costs.__dict__, "table": tables.load(tmp_path / "x2.json")})
    assert twice.energy_pj(twice.route_full()) == pytest.approx(2 * base)
    e = costs.embed.energy(costs.table, costs.mems)
    assert e["dram"] == pytest.approx(costs.embed.counts["dram_bytes"] * 1950 / 8)
    assert e["mac"] == pytest.approx(costs.embed.counts["mac8"] * 0.3)


def test_expectation_weighs_routes(costs):
    dist = cost.Distribution((1, 3, 4), (0.25, 0.25, 0.5), (1, 3))
    ex = cost.expected(costs, dist)
    want = 0.25 * costs.cycles(costs.route(1)) + 0.25 * costs.cycles(costs.route(3)) + 0.5 * costs.cycles(costs.route(None))
    assert ex["cycles"] == pytest.approx(want)
    assert dist.reach(2) == 0.75 and dist.reach(4) == 0.5


def test_throughput_mode(costs):
    dist = cost.Distribution((1, 3, 4), (0.25, 0.25, 0.5), (1, 3))
    one = cost.throughput(costs, dist, 1)
    ex = cost.expected(costs, dist)
    assert one["cycles_per_batch"] == pytest.approx(ex["cycles"])        # batch 1 = latency mode
    assert one["energy_pj"] == pytest.approx(ex["energy_pj"])
    full1, full16 = cost.throughput(costs, None, 1), cost.throughput(costs, None, 16)
    assert full1["cycles_per_batch"] == costs.cycles(costs.route_full())
    assert full16["energy_pj"] < full1["energy_pj"]                       # weights shared by the batch
    assert full16["throughput_ips"] > full1["throughput_ips"]             # at 2 B/cycle the stream limits batch 1


def test_atheena_two_stages(costs):
    two = cost.Costs(**{**costs.__dict__, "decision": {2: costs.decision[1]},
                        "layers": {2: costs.layers[1]}})
    dist = cost.Distribution((2, 4), (0.4, 0.6), (2,))
    a = cost.atheena(two, dist)
    f = two.machine.clock_mhz * 1e6
    t1 = f / two.cycles([two.embed, two.plain[1], two.layers[2], two.decision[2], two.result])
    t2 = f / two.cycles([two.plain[3], two.plain[4], two.final, two.result])
    assert a["engines"] == 2 and a["throughput_ips"] == pytest.approx(min(t1, t2 / 0.6))


@pytest.mark.parametrize("dist,words", [
    (((1, 4), (0.5, 0.6), (1,)), "sum to 1"),
    (((0, 4), (0.5, 0.5), (1,)), "must rise within 1..4"),
    (((2, 4), (0.5, 0.5), (1,)), "whose exits are off"),
    (((4,), (0.5, 0.5), ()), "1 layers but 2 fractions"),
])
def test_bad_distributions(costs, dist, words):
    with pytest.raises(QexitError, match=words):
        cost.expected(costs, cost.Distribution(*dist))


def test_bad_machines_and_candidates(im, ep):
    with pytest.raises(QexitError, match="clock 0 MHz must be > 0"):
        cost.Machine(8, 8.0, 20, 0)
    with pytest.raises(QexitError, match="bandwidth -1"):
        cost.Machine(8, -1, 20, 100)
    with pytest.raises(QexitError, match="outside 1..3"):
        cost.build(im, cost.Machine(), tables.load(), {4: LAT}, ep.head)
    with pytest.raises(QexitError, match="batch 0"):
        cost.throughput(cost.build(im, cost.Machine(), tables.load(), {}, None), None, 0)


def test_load_distribution():
    dist, flops = cost.load_distribution(exits_json(), 0, 4)
    assert dist.candidates == (1, 3) and flops["per_layer"] == {1: 10, 3: 30, 4: 45}
    mean, _ = cost.load_distribution(exits_json(), None, 4)
    assert mean.layers == (1, 2, 3, 4) and mean.candidates == (1, 3)
    with pytest.raises(QexitError, match="seed 2 is not in"):
        cost.load_distribution(exits_json(), 2, 4)
    with pytest.raises(QexitError, match="depth 4, the IntModel has 12"):
        cost.load_distribution(exits_json(), 0, 12)
    with pytest.raises(QexitError, match="rerun `qexit exits`"):
        cost.load_distribution({"x": 1}, 0, 4)


def test_pareto_prices_every_budget(costs):
    pts = cost.pareto(costs, exits_json()["modes"]["int8"]["seeds"][0]["pareto"])
    dist = cost.Distribution((1, 3, 4), (0.3, 0.2, 0.5), (1, 3))
    full = costs.cycles(costs.route_full())
    assert pts[0]["cycle_saving"] == pytest.approx(1 - cost.expected(costs, dist)["cycles"] / full)
    assert pts[1]["cycle_saving"] == 0 and pts[1]["energy_saving"] == 0 and pts[1]["top1"] == 0.9


def test_summary_prices_under_both_tables_with_dram_shares(costs, tmp_path):
    dist = cost.Distribution((1, 3, 4), (0.3, 0.2, 0.5), (1, 3))
    values = json.loads(tables.DEFAULT.read_text())
    doubled = {k: (v * 2 if isinstance(v, (int, float)) else {s: e * 2 for s, e in v.items()} if isinstance(v, dict) else v)
               for k, v in {**values, "kind": "twice", "name": "x2"}.items()}
    (tmp_path / "x2.json").write_text(json.dumps(doubled))
    s = cost.summary(costs, dist, 4, fpga=tables.load(tmp_path / "x2.json"))
    assert s["energy_full_pj_fpga"] == pytest.approx(2 * s["energy_full_pj"])
    assert s["energy_exit_pj_fpga"] == pytest.approx(2 * s["energy_exit_pj"])
    assert s["energy_saving_fpga"] == pytest.approx(s["energy_saving"])
    assert s["energy_table"]["kind"] == "45 nm ASIC" and s["energy_table_fpga"]["name"] == "x2"
    # DRAM share from the counts: the weight and parameter bytes of the route, at 1950 pJ a 64-bit read
    full_bytes = sum(p.counts["dram_bytes"] for p in costs.route_full())
    exit_bytes = sum(f * sum(p.counts["dram_bytes"] for p in costs.route(None if k == 4 else k, (1, 3)))
                     for k, f in zip(dist.layers, dist.fraction))
    assert s["dram_share_full"] == pytest.approx(full_bytes * 1950 / 8 / s["energy_full_pj"])
    assert s["dram_share_exit"] == pytest.approx(exit_bytes * 1950 / 8 / s["energy_exit_pj"])
    assert 0 < s["dram_share_exit"] <= 1 and s["dram_share_full_fpga"] == pytest.approx(s["dram_share_full"])
    # the shipped FPGA table by default: on-chip energy x 14, DRAM the same
    d = cost.summary(costs, dist, 4)
    dram_full = d["dram_share_full"] * d["energy_full_pj"]
    assert d["energy_full_pj_fpga"] == pytest.approx(14 * (d["energy_full_pj"] - dram_full) + dram_full)
    assert d["energy_by_category_full_pj_fpga"]["dram"] == pytest.approx(dram_full)
    assert 0 < d["dram_share_full_fpga"] < d["dram_share_full"] <= 1
    assert d["energy_table_fpga"]["name"] == "fpga_ecp5_scaled"
