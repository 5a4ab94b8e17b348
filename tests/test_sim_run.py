"""sim/run.py: the early-exit run in RTL on a small model: the layer engine, the exit heads and
the comparator, sequenced image by image; exits, classes, every decision and every image's
cycles against the golden model, the fixed-point head and the cost model."""
import json

import pytest

from model.errors import QexitError
from model.exits import exit_path
from qexit.cli import main
from sim import run as sim_run


@pytest.fixture(scope="module")
def small(exit_path_files, fmnist_test):
    ep_file, _, im = exit_path_files
    return im, exit_path.load(ep_file), fmnist_test.images


def test_reference_routes_like_the_evaluation(small):
    """The host reference (golden tokens, FixedHead, decide) agrees with the exit path's own
    routing of the same test images."""
    im, ep, images = small
    layers, classes, _ = sim_run.reference(im, ep, images[:64])
    want = [ep.layers[int(k)] if int(k) < len(ep.layers) else im.config.depth for k in ep.test_exit[:64]]
    assert layers == want and classes == ep.test_class[:64].tolist()
    assert len(set(layers)) > 1                        # some images exit, some do not


def test_only_switches_the_other_exits_off(small):
    _, ep, _ = small
    one = sim_run.only(ep, [3])
    assert one.registers == [None, ep.registers[1]] and sim_run.enabled(one) == [1]
    with pytest.raises(QexitError, match="no exit is on"):
        sim_run.only(ep, [2])


@pytest.mark.simulator
@pytest.mark.parametrize("macs", [8, None], ids=["mac-head", "da4ml-head"])
def test_early_exit_run_is_bit_and_cycle_exact(small, tmp_path, macs):
    im, ep, images = small
    r = sim_run.verify_run(im, ep, images[:6], lanes=8, folder=tmp_path, macs=macs)
    assert r.log == "", r.log
    assert r.exit_layers == r.expected_layers and r.classes == r.expected_classes
    assert r.decisions == r.decisions_matched > 0
    assert r.cycles_measured == r.cycles_predicted, (r.cycles_measured, r.cycles_predicted)
    assert r.passed and len(set(r.exit_layers)) > 1


@pytest.mark.simulator
def test_verify_run_command_writes_its_summary(exit_path_files, tmp_path, monkeypatch):

    ep_file, im_file, _ = exit_path_files
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "run", "--exit-path", str(ep_file), "--intmodel", str(im_file), "--images", "4",
                 "--seed", "-1"]) == 0
    s = json.loads((tmp_path / "reports" / "verify-run" / "summary.json").read_text())
    for key in ("images", "decisions_matched", "matched", "total", "cycles_measured", "cycles_predicted",
                "exit_layers"):
        assert key in s, key
    assert s["matched"] == s["total"] == 4 and s["cycles_measured"] == s["cycles_predicted"]
    assert s["test_indices"] == [0, 1, 2, 3]
    assert main(["verify", "run", "--exit-path", str(ep_file), "--intmodel", str(im_file), "--layers", "2"]) == 2
