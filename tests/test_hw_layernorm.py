"""hw/rtl/layernorm.py: the LayerNorm unit against model.intops.layernorm, in Amaranth's simulator
(short rows) and under cocotb (rows of 1 to 768 values, random valid constants, constant and
extreme rows, back-pressure) through sim/units.py."""
import pytest
import torch

from hw.rtl import layernorm
from model import intops
from model.errors import QexitError
from sim import units as sim_units


def test_layernorm_in_amaranth_sim():
    unit = sim_units.UNITS["layernorm"]
    for case in sim_units.layernorm_cases(20, 4)[:1] + sim_units.layernorm_cases(220, 5)[2:3]:
        got = sim_units.run_in_amaranth(unit, case)
        assert torch.equal(got, case["expected"])


@pytest.mark.simulator()
def test_layernorm_runner():
    res = sim_units.verify_unit("layernorm", 1100, seed=2)    # every width up to 768 once
    assert res.passed and res.matched == res.total, res.summary()


@pytest.mark.slow
@pytest.mark.simulator()
def test_layernorm_runner_10k_rows():
    res = sim_units.verify_unit("layernorm", 10_000, seed=0)
    assert res.passed and res.rows == 10_000, res.summary()


def test_row_cycles_are_measured():
    """One row with no stalls takes row_cycles(d) from its first input beat to its last output."""
    unit = sim_units.UNITS["layernorm"]
    g = torch.Generator().manual_seed(9)
    for d in (sim_units.LANES, 7 * sim_units.LANES, 64):
        x = torch.randint(-128, 128, (1, d), generator=g)
        p = intops.layernorm_params(torch.rand(d, generator=g) + 0.5, torch.randn(d, generator=g), 0.05, 0.02)
        case = sim_units.layernorm_case(x, p)
        timing = {}
        assert torch.equal(sim_units.run_in_amaranth(unit, case, timing), case["expected"])
        assert timing["cycles"] == layernorm.row_cycles(d, sim_units.LANES)


def test_bad_size():
    with pytest.raises(QexitError, match="max_d"):
        layernorm.LayerNormUnit(intops.LN_MAX_D + 1)
