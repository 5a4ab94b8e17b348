"""qexit/commands/cost.py: `qexit cost` on a small IntModel and exit path, and its refusals."""
import argparse
import json

import pytest

from hw import cost
from hw.cost import tables
from hw.rtl.dense import StreamDense
from model.errors import QexitError
from model.exits import exit_path
from qexit.commands import cost as cost_cmd
from tests.conftest import exits_json, parse_command


def parse(*argv):
    return parse_command(cost_cmd, *argv)


@pytest.fixture
def files(exit_argv, tmp_path):
    return exit_argv + ["--out", str(tmp_path / "rep"), "--quiet", "--jobs", "1", "--clock-mhz", "100"], tmp_path


def test_help_explains_the_options():
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cost_cmd.add_arguments(p)
    text = p.format_help()
    for opt in ("--exits", "--seed", "--bandwidth", "--clock-mhz", "--batch", "--energy-table", "--rows"):
        assert opt in text


def test_writes_the_headline_summary_keys(files, capsys):
    argv, tmp = files
    assert cost_cmd.run(parse(*argv, "--bandwidth", "2")) == 0
    out = tmp / "rep" / "cost"
    s = json.loads((out / "summary.json").read_text())
    for key in ("cycles_full", "cycles_exit", "cycle_saving", "energy_full_pj", "energy_exit_pj", "energy_saving",
                "latency_us", "throughput_ips", "clock_mhz"):
        assert key in s, key
    assert s["cycles_exit"] < s["cycles_full"] and 0 < s["energy_saving"] < 1
    assert s["latency_us"] == pytest.approx(s["cycles_exit"] / 100.0)
    assert s["distribution"]["candidates"] == [1, 3] and s["flops_exit"] == 0.3 * 10 + 0.2 * 30 + 0.5 * 45
    assert (out / "cost.png").stat().st_size > 10_000 and "ATHEENA" in (out / "README.md").read_text()
    assert [p["budget"] for p in s["pareto"]] == [0.5, 1.0] and (out / "pareto.png").stat().st_size > 10_000
    assert "early exit" in capsys.readouterr().out
    assert s["clock_mhz"] == 100.0 and s["clock_source"] == "user"
    assert "a what-if" in (out / "README.md").read_text()


def test_the_clock_comes_from_synthesis(files):
    argv, tmp = files
    argv = argv[:-2]                                  # no --clock-mhz
    (tmp / "synth.json").write_text(json.dumps({"device": "LFE5U-85F", "accelerator": [
        {"rows": 4, "cols": 4, "fits": True, "fmax_mhz": 87.5, "luts": 9, "ffs": 8, "dsps": 7, "brams": 6}]}))
    assert cost_cmd.run(parse(*argv, "--synth", str(tmp / "synth.json"))) == 0
    s = json.loads((tmp / "rep" / "cost" / "summary.json").read_text())
    assert s["clock_mhz"] == 87.5 and s["clock_source"] == "synth" and s["synthesis"]["dsps"] == 7
    assert "the Fmax nextpnr-ecp5 reached" in (tmp / "rep" / "cost" / "README.md").read_text()
    assert s["latency_us"] == pytest.approx(s["cycles_exit"] / 87.5)
    assert cost_cmd.run(parse(*argv, "--clock-mhz", "50")) == 0
    assert json.loads((tmp / "rep" / "cost" / "summary.json").read_text())["clock_mhz"] == 50.0
    # this small model's accelerator was never synthesized: no shipped result, so no clock
    with pytest.raises(QexitError, match="no synthesis result for the 4x4 accelerator.*--clock-mhz"):
        cost_cmd.run(parse(*argv))


@pytest.mark.parametrize("extra,words", [
    (["--seed", "3"], "seed 3 is not in"),
    (["--rows", "8", "--cols", "4"], "square"),
    (["--bandwidth", "0"], "bandwidth 0.0 must be > 0"),
    (["--latency", "-1"], "latency -1 must be an integer >= 0"),
    (["--rows", "0", "--cols", "0"], "rows = 0"),
])
def test_bad_input_is_one_line(files, extra, words):
    argv, tmp = files
    with pytest.raises(QexitError, match=words):
        cost_cmd.run(parse(*argv, *extra))
    assert not (tmp / "rep" / "cost").exists()


def test_bad_files_are_refused(files):
    argv, tmp = files
    bad = exits_json()
    bad["modes"]["int8"]["seeds"][0]["fraction"] = [0.5, 0.5, 0.5]
    (tmp / "dist.json").write_text(json.dumps(bad))
    with pytest.raises(QexitError, match="sum to 1"):
        cost_cmd.run(parse(*argv))
    with pytest.raises(QexitError, match="no exit distribution"):
        cost_cmd.run(parse(*argv, "--exits", str(tmp / "none.json")))
    (tmp / "t.json").write_text(json.dumps({"source": "x", "unit": "pJ"}))
    with pytest.raises(QexitError, match="misses int8_add"):
        cost_cmd.run(parse(*argv, "--exits", str(tmp / "none.json"), "--energy-table", str(tmp / "t.json")))
    with pytest.raises(QexitError, match="clock 0.0 MHz must be > 0"):
        cost_cmd.run(parse(*argv, "--clock-mhz", "0"))


def test_energy_is_labelled_and_priced_under_both_tables(files, exit_path_files, capsys):
    argv, tmp = files
    assert cost_cmd.run(parse(*argv)) == 0
    out = tmp / "rep" / "cost"
    s = json.loads((out / "summary.json").read_text())
    assert s["energy_table"]["name"] == "horowitz_45nm" and s["energy_table"]["kind"] == "45 nm ASIC"
    assert "ISSCC 2014" in s["energy_table"]["source"]
    assert s["energy_table_fpga"]["name"] == "fpga_ecp5_scaled" and "Kuon" in s["energy_table_fpga"]["source"]
    # DRAM energy from the counts on its own: every weight and parameter byte the route streams, at
    # the table's 64-bit DRAM read per 8 bytes; the same bytes under both tables
    # (a tapped layer's program has one more descriptor to fetch; each decision reads its head's block)
    ep = exit_path.load(exit_path_files[0])
    c = cost.build(exit_path_files[2], cost.Machine(4), tables.load(), {1: StreamDense(4), 3: StreamDense(4)}, ep.head)
    dram_pj = 1950.0 / 8
    full = sum(p.counts["dram_bytes"] for p in c.route_full()) * dram_pj
    layers, fraction = s["distribution"]["layers"], s["distribution"]["fraction"]
    exit_ = sum(f * sum(p.counts["dram_bytes"] for p in c.route(None if k == 4 else k, (1, 3)))
                for k, f in zip(layers, fraction)) * dram_pj
    for suffix in ("", "_fpga"):
        assert s[f"dram_share_full{suffix}"] == pytest.approx(full / s[f"energy_full_pj{suffix}"])
        assert s[f"dram_share_exit{suffix}"] == pytest.approx(exit_ / s[f"energy_exit_pj{suffix}"])
        assert 0 < s[f"dram_share_full{suffix}"] <= 1 and 0 < s[f"dram_share_exit{suffix}"] <= 1
        assert 0 < s[f"energy_saving{suffix}"] < 1
    # the FPGA table: on-chip energy x 14, DRAM the same
    assert s["energy_full_pj_fpga"] == pytest.approx(14 * (s["energy_full_pj"] - full) + full)
    assert s["energy_exit_pj_fpga"] == pytest.approx(14 * (s["energy_exit_pj"] - exit_) + exit_)
    text = (out / "README.md").read_text()
    console = capsys.readouterr().out
    for words in ("energy per image (uJ, Horowitz 45 nm ASIC)", "energy per image (uJ, FPGA estimate",
                  "of which DRAM (Horowitz 45 nm ASIC)", f"{100 * s['dram_share_full']:.1f}%"):
        assert words in text and words in console, words
    assert "DRAM share" in text and "Kuon" in text and "ISSCC 2014" in text


def test_a_bad_energy_table_is_one_line(files):
    argv, tmp = files
    values = {**json.loads(tables.DEFAULT.read_text()), "kind": ""}
    (tmp / "t.json").write_text(json.dumps(values))
    with pytest.raises(QexitError, match="kind must be one line") as err:
        cost_cmd.run(parse(*argv, "--energy-table", str(tmp / "t.json")))
    assert "\n" not in str(err.value) and not (tmp / "rep" / "cost").exists()
