"""hw/cost/tables: the energy tables the cost model reads, and their refusals."""
import json

import pytest

from hw.cost import tables
from model.errors import QexitError


def test_default_table_is_horowitz():
    t = tables.load()
    assert "ISSCC 2014" in t.source and t.name == "horowitz_45nm"
    assert t.int8_mac == pytest.approx(0.3)
    assert t.sram_read(8192) == 10.0 and t.sram_read(32768) == 20.0 and t.sram_read(1 << 20) == 100.0
    assert t.sram_read(16384) == pytest.approx(15.0)          # halfway on log2(size)
    assert t.sram_read(512) == 10.0 and t.sram_read(1 << 30) == 100.0     # flat outside
    assert t.sram_read(8192, bits=8) == pytest.approx(1.25)
    assert t.dram_bytes(8) == 1950.0


def test_missing_keys_are_named(tmp_path):
    values = json.loads(tables.DEFAULT.read_text())
    del values["int8_mult"], values["dram_read_64b"]
    (tmp_path / "t.json").write_text(json.dumps(values))
    with pytest.raises(QexitError, match="misses int8_mult, dram_read_64b"):
        tables.load(tmp_path / "t.json")


@pytest.mark.parametrize("change,words", [
    ({"int8_add": -1}, "int8_add must be positive"),
    ({"sram_read_64b": {}}, "sram_read_64b must be positive"),
    ({"unit": "nJ"}, "give its energies in pJ"),
])
def test_bad_values_are_refused(tmp_path, change, words):
    values = {**json.loads(tables.DEFAULT.read_text()), **change}
    (tmp_path / "t.json").write_text(json.dumps(values))
    with pytest.raises(QexitError, match=words):
        tables.load(tmp_path / "t.json")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(QexitError, match="no energy table"):
        tables.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(QexitError, match="not readable JSON"):
        tables.load(tmp_path / "bad.json")


def test_tables_say_what_they_price():
    t = tables.load()
    assert t.kind == "45 nm ASIC" and t.label == "Horowitz 45 nm ASIC"
    assert t.describe() == {"name": "horowitz_45nm", "kind": "45 nm ASIC", "label": "Horowitz 45 nm ASIC",
                            "source": t.source}


def test_fpga_table_is_the_45nm_table_times_14_on_chip():
    asic, fpga = tables.load(), tables.load(tables.FPGA)
    for key in ("int8_add", "int32_add", "int8_mult", "int32_mult"):
        assert fpga[key] == pytest.approx(14 * asic[key]), key
    assert fpga.values["sram_read_64b"].keys() == asic.values["sram_read_64b"].keys()
    for size, e in asic.values["sram_read_64b"].items():
        assert fpga.values["sram_read_64b"][size] == pytest.approx(14 * e), size
    for size in (512, 8192, 20000, 1 << 20, 1 << 30):                 # interpolation scales with the points
        assert fpga.sram_read(size, 32) == pytest.approx(14 * asic.sram_read(size, 32))
    assert fpga["dram_read_64b"] == asic["dram_read_64b"] and fpga.dram_bytes(64) == asic.dram_bytes(64)
    assert fpga.int8_mac == pytest.approx(14 * asic.int8_mac)
    assert fpga.name == "fpga_ecp5_scaled" and "FPGA" in fpga.kind and "FPGA" in fpga.label
    assert fpga.values["derived_from"] == asic.name and fpga.values["on_chip_scale"] == 14
    for words in ("Kuon", "Rose", "Measuring the Gap Between FPGAs and ASICs", "TCAD 26(2)", "14", "approximation",
                  "not a measurement", "DRAM", "off-chip", "ISSCC 2014"):
        assert words in fpga.source, words


@pytest.mark.parametrize("change,words", [
    ({"kind": ""}, "kind must be one line"),
    ({"kind": 45}, "kind must be one line"),
    ({"label": "two\nlines"}, "label must be one line"),
    ({"source": ""}, "source must cite"),
    ({"sram_read_64b": {"8192": "ten"}}, "sram_read_64b must be positive"),
])
def test_bad_labels_are_one_line(tmp_path, change, words):
    values = {**json.loads(tables.DEFAULT.read_text()), **change}
    (tmp_path / "t.json").write_text(json.dumps(values))
    with pytest.raises(QexitError, match=words) as err:
        tables.load(tmp_path / "t.json")
    assert "\n" not in str(err.value)


def test_a_table_must_say_its_kind(tmp_path):
    values = json.loads(tables.DEFAULT.read_text())
    del values["kind"], values["label"]
    (tmp_path / "t.json").write_text(json.dumps(values))
    with pytest.raises(QexitError, match="misses kind;") as err:
        tables.load(tmp_path / "t.json")
    assert "\n" not in str(err.value)
    values["kind"] = "7 nm ASIC"                                     # no label: name and kind
    (tmp_path / "t.json").write_text(json.dumps(values))
    assert tables.load(tmp_path / "t.json").label == "horowitz_45nm, 7 nm ASIC"
