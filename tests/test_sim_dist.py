"""sim/dist.py: the early-exit RTL run in shards, on one process or a local Dask cluster: the
merge is the same for any number of workers, finished shards are resumed, and bad input is one
line each."""
import json

import pytest

from hw.cost import Machine
from model.errors import QexitError
from sim import dist, run as sim_run
from sim.result import Result

INDICES = [5, 0, 3]                # not sorted: the merge keeps this order


@pytest.fixture(scope="module")
def spec(exit_path_files):
    ep_file, im_file, _ = exit_path_files
    return dist.RunSpec(str(im_file), str(ep_file), Machine(8, 8.0, 20))


def same(a: Result, b: Result) -> bool:
    return json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)


@pytest.mark.simulator
def test_one_and_two_workers_merge_the_same(spec, tmp_path):
    one, t1 = dist.run(spec, INDICES, 1, 1, work=tmp_path / "w1", progress=False)
    s = sim_run.summary(one)
    assert one.passed and s["test_indices"] == INDICES and s["decisions"] == s["decisions_matched"] > 0
    assert s["cycles_equal"] and t1["images_computed"] == 3
    # a shard file holds the shard's result as Result.to_dict wrote it
    shard = json.loads((tmp_path / "w1" / "shard-00000.json").read_text())
    assert Result.from_dict(shard["result"]).records == one.records[:1]
    pytest.importorskip("dask.distributed")
    two, t2 = dist.run(spec, INDICES, 1, 2, work=tmp_path / "w2", progress=False)
    assert same(one, two)
    assert t2["workers"] == 2 and t2["images_computed"] == 3

    # resume: a lost shard is the only one computed again
    (tmp_path / "w1" / "shard-00001.json").unlink()
    again, t3 = dist.run(spec, INDICES, 1, 1, work=tmp_path / "w1", resume=True, progress=False)
    assert t3["images_computed"] == 1 and same(again, one)
    # another configuration in the same folder is refused
    with pytest.raises(QexitError, match="another configuration .*shard_size"):
        dist.run(spec, INDICES, 2, 1, work=tmp_path / "w1", resume=True, progress=False)


def test_the_key_names_the_machine_that_decides_the_results(spec):
    key = spec.key(INDICES, 2)
    assert (key["lanes"], key["bandwidth"], key["latency"]) == (8, 8.0, 20)
    other = dist.RunSpec(spec.intmodel, spec.exit_path, Machine(8, 4.0, 20))
    assert other.key(INDICES, 2)["bandwidth"] == 4.0
    faster = dist.RunSpec(spec.intmodel, spec.exit_path, Machine(8, 8.0, 20, clock_mhz=200.0))
    assert faster.key(INDICES, 2) == key                 # the clock decides no cycle


def test_bad_input_is_one_line(spec, tmp_path):
    with pytest.raises(QexitError, match="at least 1 worker"):
        dist.run(spec, INDICES, 2, 0, work=tmp_path)
    with pytest.raises(QexitError, match="at least 1 image a shard"):
        dist.run(spec, INDICES, 0, 1, work=tmp_path)
    with pytest.raises(QexitError, match="no such file"):
        dist.run(dist.RunSpec("nope.pt", spec.exit_path), INDICES, 2, 1, work=tmp_path)
    pytest.importorskip("dask.distributed")
    with pytest.raises(QexitError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        dist.run(spec, INDICES, 2, 2, cluster="tcp://127.0.0.1:1", work=tmp_path / "c", progress=False)
