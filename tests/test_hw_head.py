"""hw/rtl/head.py: the exit head as RTL (da4ml dense layers + Amaranth), under cocotb against the
fixed-point head on real tokens, to the integer and to the cycle; its da4ml layers; and its
refusals."""
import gc
import json
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from hw.rtl import dense, head as hw_head
from hw.rtl.gemm import Requantizer
from model.errors import QexitError
from model.exits import exit_path
from qexit.cli import main
from sim import head as sim_head, simulator as runner, units as sim_units
from sim.packing import lanes_to_words
from sim.result import Result


@pytest.fixture(scope="module")
def real(exit_path_files, fmnist_test):
    path, _, im = exit_path_files
    ep = exit_path.load(path)
    return ep, sim_head.exit_tokens(im, ep, fmnist_test.images[:10])


def test_dense_layers_are_cached_and_sized(real, tmp_path):
    ep, _ = real
    p = ep.head.layers[0].params
    d = dense.dense_rtl("qx_t_fc1", p["w1"], p["b1"], cache_dir=tmp_path)
    assert (d.n_in, d.n_out) == (ep.head.width, ep.head.hidden) and d.latency >= 1
    assert d.module == "qx_t_fc1_wrapper" and "module qx_t_fc1_wrapper" in dense.verilog_sources([d])
    # the widest output fits: |W x + b| over int8 x
    bound = int((p["w1"].abs().sum(1) * 128 + p["b1"].abs()).max())
    assert 2 ** (d.out_bits - 1) > bound >> d.lsb
    again = dense.dense_rtl("qx_t_fc1", p["w1"], p["b1"], cache_dir=tmp_path)
    assert again == d


@pytest.mark.simulator()
def test_head_rtl_is_bit_and_cycle_exact(real, tmp_path):
    ep, tokens = real
    res = sim_head.verify_head(ep, tokens, [0], lanes=8, folder=tmp_path)[0]
    assert res.passed and res.matched == res.total == 10 * (ep.head.classes + 1), res.first_mismatches
    assert res.cycles_equal and [r["image"] for r in res.records] == list(range(10))
    assert [r["stalled"] for r in res.records] == [i % 2 == 1 for i in range(10)]
    assert all(r["cycles"] == res.latency_cycles for r in res.records if not r["stalled"]), res.records
    # the comparison can fail: the same RTL against expectations whose gate is one higher
    cases = sim_head.head_cases(ep, 0, tokens[0], 8)
    for c in cases:
        c["expected"][:, 1] += 1
    dut, verilog, top, _ = hw_head.head_design(ep, [0], 8)
    raw = sim_units.simulate(runner.build(verilog, top), cases, lambda c: lanes_to_words(c["inputs"], 8), 3, 32)
    bad = sim_units.compare(cases, raw)
    assert bad.matched == bad.total - 10 * ep.head.classes            # every output word
    images = [(i, *x) for i, x in enumerate(zip(cases, raw.values, raw.cycles, raw.stalled))]
    head = sim_head.head_result(ep.layers[0], images, dut.cycles, raw)
    assert head.matched == head.total - 10 and not head.passed       # the distinct integers: one gate an image


@pytest.mark.simulator()
def test_mac_head_rtl_is_bit_and_cycle_exact(real, tmp_path):
    """One head for both candidates, its dense layers on 5 multipliers (rows of 16, 32 and 24
    inputs: chunks that do not divide them, padded with zeros), the images taking turns between
    the candidates, against the fixed-point head, to the integer and to the cycle."""
    ep, tokens = real
    for res in sim_head.verify_head(ep, tokens, [0, 1], lanes=8, folder=tmp_path, macs=5):
        assert res.passed and res.matched == res.total == 10 * (ep.head.classes + 1), res.first_mismatches
        assert res.cycles_equal and len(res.records) == 10, res.records
    h = ep.head
    rows = h.hidden * -(-h.width // 5) + h.embed_dim * -(-h.hidden // 5) + h.classes * -(-h.embed_dim // 5)
    # each of the two hidden layers drains the row pipeline and the requantizer, then a write
    assert dense.dense_cycles(h, 8, dense.MacDense(5)) == rows + 2 * (dense.MAC_PIPE + Requantizer.LATENCY + 1) + 3


def test_bad_sizes_are_refused(real):
    ep, _ = real
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(QexitError, match="multiple of lanes"):
            hw_head.ExitHead(ep.head, [0], ep.tokens, {}, lanes=3)
        with pytest.raises(QexitError, match="multipliers"):
            dense.MacDense(0)
        with pytest.raises(QexitError, match="da4ml layer 'fc1'"):
            hw_head.ExitHead(ep.head, [0], ep.tokens, {}, lanes=8)
        with pytest.raises(QexitError, match="one head per candidate"):
            hw_head.ExitHead(ep.head, [0, 1], ep.tokens, {}, lanes=8)
        with pytest.raises(QexitError, match="must be indices"):
            hw_head.ExitHead(ep.head, [2], ep.tokens, dense.MacDense(4), lanes=8)
        gc.collect()


@pytest.mark.parametrize("argv,words", [
    (["--layers", "2"], "not among the exit path's candidate layers [1, 3]"),
    (["--layers", "x"], "must be 'all' or comma-separated backbone layers"),
    (["--lanes", "3"], "must divide the head's width 16"),
])
def test_verify_head_bad_input_is_one_line(exit_path_files, capsys, argv, words):
    path, intmodel, _ = exit_path_files
    assert main(["verify", "head", "--exit-path", str(path), "--intmodel", str(intmodel)] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_verify_head_defaults_to_the_middle_layer(exit_path_files, tmp_path, monkeypatch):
    """The command's plumbing (the RTL run itself is test_head_rtl_is_bit_and_cycle_exact)."""
    path, intmodel, _ = exit_path_files
    seen = {}

    def fake(ep, tokens, layers, lanes, simulator, folder, progress, macs):
        seen["layers"], seen["macs"] = layers, macs
        per_image = [{"image": 0, "matched": 5, "total": 5, "cycles": 7, "stalled": False}]
        return [Result("head", 5, 5, True, 7, 7, per_image,
                       figures={"layer": ep.layers[k], "sets": len(tokens[k]), "latency_cycles": 7,
                                "cycles_equal": True, "dense_seconds": 0.0})
                for k in layers]
    monkeypatch.setattr(sim_head, "verify_head", fake)
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "head", "--exit-path", str(path), "--intmodel", str(intmodel), "--sets", "4"]) == 0
    assert seen["layers"] == [1]                       # layers [1, 3]: the middle one is index 1
    assert seen["macs"] == 64                          # the MAC head, an 8x8 array's multipliers
    s = json.loads((tmp_path / "reports" / "verify-head" / "summary.json").read_text())
    assert s["latency_cycles"] == 7 and s["token_sets"] == 4 and s["layers"][0]["layer"] == 3
    assert s["layers"][0]["per_image"] == [{"image": 0, "matched": 5, "total": 5, "cycles": 7, "stalled": False}]
