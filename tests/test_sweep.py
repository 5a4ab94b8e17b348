"""studies/sweep.py and `qexit sweep`: the grid's points are the cost model's, the front is
non-dominated, the result does not depend on the worker count, and bad grids are one line."""
import csv
import json

import pytest

from hw import cost
from hw.cost import tables
from hw.rtl.dense import StreamDense
from model.errors import QexitError
from model.exits import exit_path
from qexit.commands import sweep as sweep_cmd
from studies import sweep
from tests.conftest import exits_json, parse_command


def parse(*argv):
    return parse_command(sweep_cmd, *argv)


@pytest.fixture
def argv(exit_argv, tmp_path):
    return exit_argv + ["--quiet", "--clock-mhz", "100", "--arrays", "4,8", "--bandwidths", "2,8"]


def test_every_point_is_the_cost_models(argv, tmp_path, exit_path_files):
    assert sweep_cmd.run(parse(*argv, "--out", str(tmp_path / "r1"))) == 0
    s = json.loads((tmp_path / "r1" / "sweep" / "summary.json").read_text())
    assert s["points"] == 2 * 2 * 4 and s["machines"] == 4          # operating point, 2 budgets, full depth
    with open(tmp_path / "r1" / "sweep" / "points.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and {r["budget"] for r in rows} == {"operating point", "0.5", "1.0", "full depth"}
    # one point priced on its own
    _, _, im = exit_path_files
    ep = exit_path.load(exit_path_files[0])
    c = cost.build(im, cost.Machine(4, 8.0, 20, 100.0), tables.load(), {1: StreamDense(4), 3: StreamDense(4)}, ep.head)
    dist, _ = cost.load_distribution(exits_json(), 0, 4)
    p = next(p for p in s["all_points"] if p["rows"] == 4 and p["bandwidth"] == 8.0 and p["budget"] == "operating point")
    assert p["cycles"] == pytest.approx(cost.expected(c, dist)["cycles"])
    full = next(p for p in s["all_points"] if p["rows"] == 4 and p["bandwidth"] == 8.0 and p["budget"] == "full depth")
    assert full["cycles"] == c.cycles(c.route_full()) and full["energy_saving"] == 0
    # energy is labelled with its table, and each point says how much of it is DRAM (from the counts)
    assert s["energy_table"]["name"] == "horowitz_45nm" and s["energy_table"]["kind"] == "45 nm ASIC"
    dram = sum(q.counts["dram_bytes"] for q in c.route_full()) * 1950 / 8
    assert full["dram_share"] == pytest.approx(dram / (full["energy_uj"] * 1e6))
    assert all(0 < q["dram_share"] <= 1 for q in s["all_points"]) and all(r["dram_share"] for r in rows)
    text = (tmp_path / "r1" / "sweep" / "README.md").read_text()
    assert "energy (uJ, Horowitz 45 nm ASIC)" in text and "DRAM share" in text and "ISSCC 2014" in text
    # the front: nothing in it is beaten on all three, and everything outside is
    front, ranked = s["front"], [p for p in s["all_points"] if p["top1"] is not None]
    key = lambda p: (p["energy_uj"], p["latency_us"], -p["top1"])
    beats = lambda a, b: all(x <= y for x, y in zip(key(a), key(b))) and key(a) != key(b)
    assert front and all(not any(beats(q, f) for q in ranked) for f in front)
    assert all(any(beats(q, p) for q in ranked) for p in ranked if p not in front)
    assert (tmp_path / "r1" / "sweep" / "pareto.png").stat().st_size > 10_000
    pytest.importorskip("dask.distributed")
    assert sweep_cmd.run(parse(*argv, "--out", str(tmp_path / "r2"), "--workers", "2")) == 0
    s2 = json.loads((tmp_path / "r2" / "sweep" / "summary.json").read_text())
    assert s2["all_points"] == s["all_points"] and s2["front"] == front


def test_bad_grids_are_one_line(argv, tmp_path):
    with pytest.raises(QexitError, match="arrays axis is empty"):
        sweep.Grid((), (8.0,))
    with pytest.raises(QexitError, match="bandwidths axis is empty"):
        sweep_cmd.run(parse(*argv, "--bandwidths", ","))
    with pytest.raises(QexitError, match=r"budgets \[0.25\] are not in the exits' Pareto sweep"):
        sweep_cmd.run(parse(*argv, "--budgets", "0.25", "--out", str(tmp_path)))
    (tmp_path / "g.toml").write_text("arrays = [4]\nbanwidths = [8]\n")
    with pytest.raises(QexitError, match=r"unknown keys \['banwidths'\]"):
        sweep.load_grid(tmp_path / "g.toml")
    (tmp_path / "g.toml").write_text("arrays = [4]\nbandwidths = [2, 8]\nlatency = 10\n")
    assert sweep.load_grid(tmp_path / "g.toml") == sweep.Grid((4,), (2.0, 8.0), "all", 10)
    with pytest.raises(QexitError, match="at least 1 worker"):
        sweep_cmd.run(parse(*argv, "--workers", "0"))


@pytest.mark.simulator
def test_confirm_runs_the_front_machines_in_rtl(argv, tmp_path):
    """--confirm: the front's machine (here the grid's only one, the design `verify run` builds
    by default, so the build is shared) runs test images in RTL, cycles equal to the cost model."""
    args = [a for a in argv] + ["--out", str(tmp_path / "r"), "--confirm", "1"]
    args[args.index("--arrays") + 1], args[args.index("--bandwidths") + 1] = "8", "8"
    assert sweep_cmd.run(parse(*args)) == 0
    s = json.loads((tmp_path / "r" / "sweep" / "summary.json").read_text())
    (c,) = s["confirmations"]
    assert (c["rows"], c["bandwidth"], c["images"]) == (8, 8.0, 1)
    assert c["passed"] and c["cycles_equal"] and c["cycles_measured"] == c["cycles_predicted"] > 0
    assert c["decisions"] == c["decisions_matched"] > 0
    assert "RTL confirmation" in (tmp_path / "r" / "sweep" / "README.md").read_text()
    with pytest.raises(QexitError, match="--confirm -1"):
        sweep_cmd.run(parse(*argv, "--confirm", "-1"))


def test_a_machine_that_does_not_fit_stays_off_the_front(argv, tmp_path):
    """With a synthesis summary where the 4x4 accelerator fits at 29.23 MHz and the 8x8 does not,
    the 4x4 points take that clock (clock_source synth), the 8x8 points are marked, have no clock
    and are kept off the front, whatever their cost; a size never synthesized has no clock either."""
    synth = tmp_path / "synth.json"
    row = {"luts": 1, "ffs": 1, "dsps": 1, "brams": 1}
    synth.write_text(json.dumps({"device": "LFE5U-85F", "accelerator": [
        {"rows": 4, "cols": 4, "fits": True, "fmax_mhz": 29.23, **row},
        {"rows": 8, "cols": 8, "fits": False, "fmax_mhz": None, **row}]}))
    args = [a for a in argv if a not in ("--clock-mhz", "100")] + ["--synth", str(synth)]
    assert sweep_cmd.run(parse(*args, "--out", str(tmp_path / "r"))) == 0
    s = json.loads((tmp_path / "r" / "sweep" / "summary.json").read_text())
    four = [p for p in s["all_points"] if p["rows"] == 4]
    eight = [p for p in s["all_points"] if p["rows"] == 8]
    assert four and all(p["fits"] is True and p["clock_source"] == "synth" and p["clock_mhz"] == 29.23 for p in four)
    assert eight and all(p["fits"] is False and p["clock_source"] == "none" and p["clock_mhz"] is None
                         and p["latency_us"] is None and p["energy_uj"] > 0 for p in eight)
    assert s["front"] and all(p["rows"] == 4 for p in s["front"]) and s["arrays_not_fitting"] == [8]
    assert "8x8 does not fit the device" in (tmp_path / "r" / "sweep" / "README.md").read_text()
    # no size fits: every point keeps its cycles and energy, the front is empty, the plot says why
    synth.write_text(json.dumps({"device": "LFE5U-85F", "accelerator": [
        {"rows": n, "cols": n, "fits": False, "fmax_mhz": None, **row} for n in (4, 8)]}))
    assert sweep_cmd.run(parse(*args, "--out", str(tmp_path / "none"))) == 0
    s = json.loads((tmp_path / "none" / "sweep" / "summary.json").read_text())
    assert s["front"] == [] and all(p["latency_us"] is None and p["cycles"] > 0 for p in s["all_points"])
    assert (tmp_path / "none" / "sweep" / "pareto.png").stat().st_size > 5_000
