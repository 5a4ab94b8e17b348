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
