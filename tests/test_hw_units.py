"""hw/rtl/units.py: the requantizer, residual-add and i-GELU units against model.intops, in
Amaranth's simulator (a few rows) and under cocotb (thousands of rows with random constants,
corner rows and back-pressure) through sim/units.py."""
import json

import pytest
import torch

from hw.rtl import gemm, units
from model.errors import QexitError
from qexit.cli import main as cli_main
from sim import packing as host, units as sim_units

ELEMENTWISE = ("requant", "add", "gelu", "table")


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_unit_in_amaranth_sim(name):
    unit = sim_units.UNITS[name]
    case = unit.cases(1, 3)[0]
    case = dict(case, inputs=case["inputs"][:64], expected=case["expected"][:64])
    assert torch.equal(sim_units.run_in_amaranth(unit, case), case["expected"])


@pytest.mark.simulator()
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_unit_runner(name):
    res = sim_units.verify_unit(name, 2000, seed=7)
    assert res.passed and res.matched == res.total == 2000 * sim_units.LANES, res.summary()


@pytest.mark.simulator()
def test_runner_catches_a_broken_unit(monkeypatch):
    """The check can fail: a requantizer whose int8 saturation wraps is caught."""
    monkeypatch.setattr(gemm, "clamp", lambda value, lo, hi: value)
    res = sim_units.verify_unit("requant", 500, seed=1)
    assert not res.passed and res.matched < res.total


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(QexitError, match="lanes"):
        units.GeluUnit(0)
    with pytest.raises(QexitError, match="unknown unit"):
        sim_units.verify_unit("nope", 10, 0)
    with pytest.raises(QexitError, match="at least 1"):
        sim_units.verify_unit("gelu", 0, 0)


def test_pack_unpack_round_trip():
    x = torch.tensor([[-128, 127, 0, -1], [5, -6, 7, -8]])
    assert torch.equal(host.words_to_lanes(host.lanes_to_words(x, 8), 4, 8), x)
    acc = torch.tensor([[-2 ** 31, 2 ** 31 - 1]])
    assert torch.equal(host.words_to_lanes(host.lanes_to_words(acc, 32), 2, 32), acc)


@pytest.mark.simulator()
def test_verify_units_command(tmp_path, monkeypatch, capsys):

    monkeypatch.chdir(tmp_path)
    assert cli_main(["verify", "units", "--vectors", "200", "--units", "requant,add", "--seed", "2"]) == 0
    assert "bit-exact: 1600/1600" in capsys.readouterr().out
    s = json.loads((tmp_path / "reports" / "verify-units" / "summary.json").read_text())
    assert s["matched"] == s["total"] == 1600 and s["mismatches"] == 0 and set(s["units"]) == {"requant", "add"}
