"""sim/run.py: the early-exit run on the whole accelerator in RTL on a small model, one start for
the batch; exits, classes, every decision and every image's cycles against the golden model,
the fixed-point head and the cost model."""
import json

import pytest

from hw.cost import Machine
from model.errors import QexitError
from model.exits import exit_path
from qexit.cli import main
from sim import run as sim_run

IDEAL = Machine(4, None, 0)          # 4 lanes: the same build as tests/test_accelerator.py


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


class Prices:
    """A stand-in cost model: a route is its exit layer (None: full depth), priced 1000 + layer."""

    def route(self, layer, candidates):
        return layer

    def record_cycles(self, route):
        return 1000 + (99 if route is None else route)


def test_an_image_is_priced_on_the_references_route(small):
    """The RTL exits at candidate 0 (layer 1) where the reference goes on to full depth: the
    image's predicted cycles are the reference route's, so its cycles differ as its exit does."""
    _, ep, _ = small
    depth = ep.depth
    word = 1 | (2 << 1) | (0 << sim_run.LAYER_SHIFT)                 # exit, class 2, candidate 0
    got = {"layer": ep.layers[0], "class": 2, "cycles": 305}
    reference = (depth, 7, {(0, 0): (False, 2)})
    rec = sim_run.image_record(0, got, [word], reference, ep, depth, Prices(), ep.layers)
    assert rec["exit_layer"] == ep.layers[0] and rec["expected_layer"] == depth
    assert rec["cycles_measured"] == 305
    assert rec["cycles_predicted"] == 1000 + 99                      # the full-depth route, not layer 1's
    assert rec["decisions"] == 1 and rec["decisions_matched"] == 0
    res = sim_run.run_result([rec], 1)
    assert not res.passed and res.matched == 0 and res.total == 1


def test_the_trace_splits_at_each_images_exit():
    assert sim_run.split_decisions([0b10, 0b101, 1, 0b100, 0b11]) == [[0b10, 0b101], [1], [0b100, 0b11]]


@pytest.mark.simulator("verilator")
def test_early_exit_run_is_bit_and_cycle_exact(small):
    im, ep, images = small
    r = sim_run.verify_run(im, ep, images[:6], IDEAL)
    assert r.log == "", r.log
    s = sim_run.summary(r)
    assert s["sequencer"] == "rtl" and s["host_writes_while_busy"] == 0 and s["cycles_per_second"] > 0
    assert s["memory"] == {"protocol": "AXI4", "data_bits": 32, "bandwidth_bytes_per_cycle": None, "latency_cycles": 0}
    assert s["exit_layers"] == s["expected_layers"] and s["classes"] == s["expected_classes"]
    assert s["decisions"] == s["decisions_matched"] > 0
    assert s["cycles_per_image_measured"] == s["cycles_per_image_predicted"], s
    assert r.passed and len(set(s["exit_layers"])) > 1 and s["test_indices"] == list(range(6))


@pytest.mark.simulator("verilator")
def test_verify_run_command_writes_its_summary(exit_path_files, tmp_path, monkeypatch):
    ep_file, im_file, _ = exit_path_files
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "run", "--exit-path", str(ep_file), "--intmodel", str(im_file), "--images", "4",
                 "--seed", "-1", "--rows", "4", "--cols", "4"]) == 0
    s = json.loads((tmp_path / "reports" / "verify-run" / "summary.json").read_text())
    for key in ("images", "decisions_matched", "matched", "total", "cycles_measured", "cycles_predicted",
                "exit_layers", "sequencer", "host_writes_while_busy", "cycles_per_second", "memory"):
        assert key in s, key
    assert s["matched"] == s["total"] == 4 and s["cycles_measured"] == s["cycles_predicted"]
    assert s["test_indices"] == [0, 1, 2, 3]
    assert main(["verify", "run", "--exit-path", str(ep_file), "--intmodel", str(im_file), "--layers", "2"]) == 2
    assert main(["verify", "run", "--exit-path", str(ep_file), "--intmodel", str(im_file), "--model", "clip:x"]) == 2
