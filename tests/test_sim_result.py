"""sim/result.py: the one result type of every verify: JSON round trip, figures as attributes,
merging results of parts of one check."""
import json

import pytest

from sim.result import Result


def _part(images: list[int], ok: bool = True) -> Result:
    records = [{"image": i, "exit_layer": 3, "cycles_measured": 10 + i} for i in images]
    return Result("run", len(images) if ok else 0, len(images), ok, sum(10 + i for i in images),
                  sum(10 + i for i in images), records, figures={"lanes": 8}, simulator="verilator",
                  sim_seconds=1.5, log="" if ok else "a failure")


def test_a_result_survives_json():
    r = _part([4, 1])
    again = Result.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r and again.lanes == 8 and again.mismatches == 0
    with pytest.raises(ValueError, match="not fields"):
        Result.from_dict({**r.to_dict(), "extra": 1})
    with pytest.raises(AttributeError, match="no field or figure 'nope'"):
        r.nope


def test_summary_has_the_headline_keys():
    s = _part([0, 1]).summary()
    for key in ("matched", "total", "mismatches", "passed", "cycles_measured", "cycles_predicted", "lanes"):
        assert key in s, key
    assert "cycles_measured" not in Result("unit", 3, 3, True).summary()


def test_merge_joins_parts_in_order():
    m = Result.merge([_part([5, 0]), _part([7], ok=False), _part([3, 2])])
    assert [r["image"] for r in m.records] == [5, 0, 7, 3, 2]
    assert (m.matched, m.total, m.passed) == (4, 5, False)
    assert m.cycles_measured == sum(10 + i for i in (5, 0, 7, 3, 2)) and m.sim_seconds == 4.5
    assert m.log == "a failure" and m.lanes == 8
    with pytest.raises(ValueError, match="same check"):
        Result.merge([_part([1]), Result("gemm")])
    with pytest.raises(ValueError, match="no results"):
        Result.merge([])
