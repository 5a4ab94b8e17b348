"""hw/rtl/comparator.py: the exit comparator against model.exits.decision.decide, in Amaranth's
simulator and under cocotb (random scores with ties, gates at and around the thresholds,
random candidate masks, back-pressure)."""
import gc
import warnings

import pytest
import torch
from amaranth.hdl import UnusedElaboratable

from hw.rtl import comparator
from model.errors import QexitError
from model.exits.decision import decide
from sim import units as sim_units


def test_decide_reference():
    scores = torch.tensor([[1, 5, 5], [7, 2, 7], [-3, -3, -3]])
    exit_, cls = decide(scores, torch.tensor([10, 9, 10]), torch.tensor([0, 0, 1]), torch.tensor([10, 0]),
                        torch.tensor([True, False]))
    assert cls.tolist() == [1, 0, 0]                  # the first maximum
    assert exit_.tolist() == [True, False, False]     # gate >= threshold; layer 1 is pruned


def test_comparator_in_amaranth_sim():
    unit = sim_units.UNITS["comparator"]
    cases = sim_units.comparator_cases(150, seed=4, per_case=25)
    assert {c["inputs"].shape[0] // c["rows"] for c in cases[:4]} == {1, 2, 10, 1000}
    for case in cases:
        assert torch.equal(sim_units.run_in_amaranth(unit, case), case["expected"]), case["ports"]


def test_decision_latency():
    """A decision leaves LATENCY cycles after its last score when nothing stalls."""
    unit = sim_units.UNITS["comparator"]
    case = sim_units.comparator_cases(1, seed=0, per_case=1)[0]    # one decision on one class
    timing = {}
    assert torch.equal(sim_units.run_in_amaranth(unit, case, timing), case["expected"])
    assert timing["cycles"] == comparator.ExitComparator.LATENCY + 1


def test_bad_size():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the refused, never elaborated object
        with pytest.raises(QexitError, match="max_layers"):
            comparator.ExitComparator(0)
        gc.collect()


@pytest.mark.simulator()
def test_comparator_under_cocotb():
    res = sim_units.verify_unit("comparator", 2000, seed=1)
    assert res.passed and res.matched == res.total == 2000, res.summary()
