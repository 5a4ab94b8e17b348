"""qexit/commands/cost.py: `qexit cost` on a small IntModel and exit path, and its refusals."""
import argparse
import json

import pytest

from model.errors import QexitError
from qexit.commands import cost as cost_cmd
from tests.test_hw_cost import exits_json


def parse(*argv):
    p = argparse.ArgumentParser()
    cost_cmd.add_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture
def files(exit_path_files, tmp_path):
    ep, im, _ = exit_path_files
    (tmp_path / "dist.json").write_text(json.dumps(exits_json()))
    return ["--exit-path", str(ep), "--intmodel", str(im), "--exits", str(tmp_path / "dist.json"),
            "--out", str(tmp_path / "rep"), "--quiet", "--jobs", "1", "--synth", str(tmp_path / "synth.json")], tmp_path


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
    assert s["clock_mhz"] == 100.0 and "no synthesis result" in s["clock_source"]


def test_the_clock_comes_from_synthesis(files):
    argv, tmp = files
    (tmp / "synth.json").write_text(json.dumps({"device": "LFE5U-85F", "designs": [
        {"design": "layer engine 8x8", "fits": True, "fmax_mhz": 87.5}]}))
    assert cost_cmd.run(parse(*argv)) == 0
    s = json.loads((tmp / "rep" / "cost" / "summary.json").read_text())
    assert s["clock_mhz"] == 87.5 and "Fmax" in s["clock_source"]
    assert s["latency_us"] == pytest.approx(s["cycles_exit"] / 87.5)
    assert cost_cmd.run(parse(*argv, "--clock-mhz", "50")) == 0
    assert json.loads((tmp / "rep" / "cost" / "summary.json").read_text())["clock_mhz"] == 50.0


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
