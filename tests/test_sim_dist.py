"""sim/dist.py: the early-exit RTL run in shards, on one process or a local Dask cluster: the
merge is the same for any number of workers, finished shards are resumed, and bad input is one
line each."""
import json

import pytest

from model.errors import QexitError
from sim import dist

INDICES = [5, 0, 7, 3, 2]          # not sorted: the merge keeps this order


@pytest.fixture(scope="module")
def spec(exit_path_files):
    ep_file, im_file, _ = exit_path_files
    return dist.RunSpec(str(im_file), str(ep_file), 8, 8.0, 20, 8)


@pytest.mark.simulator
def test_one_and_two_workers_merge_the_same(spec, tmp_path):
    one = dist.run(spec, INDICES, 2, 1, work=tmp_path / "w1", progress=False)
    assert one["passed"] and one["test_indices"] == INDICES and one["decisions"] == one["decisions_matched"] > 0
    assert one["cycles_equal"] and one["timing"]["images_computed"] == 5
    pytest.importorskip("dask.distributed")
    two = dist.run(spec, INDICES, 2, 2, work=tmp_path / "w2", progress=False)
    one.pop("timing")
    t2 = two.pop("timing")
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    assert t2["workers"] == 2 and t2["images_computed"] == 5

    # resume: a lost shard is the only one computed again
    (tmp_path / "w1" / "shard-00001.json").unlink()
    again = dist.run(spec, INDICES, 2, 1, work=tmp_path / "w1", resume=True, progress=False)
    assert again.pop("timing")["images_computed"] == 2 and again == one
    # another configuration in the same folder is refused
    with pytest.raises(QexitError, match="another configuration .*shard_size"):
        dist.run(spec, INDICES, 3, 1, work=tmp_path / "w1", resume=True, progress=False)


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
