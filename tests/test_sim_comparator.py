"""sim/comparator.py and `qexit verify comparator`: the comparator replay of the test split under
cocotb; each image's outcome is read from the RTL's decision words."""
import json

import pytest
import torch

from model.exits import exit_path
from qexit.cli import main
from sim import comparator as sim_comparator, simulator as runner, units as sim_units
from sim.result import Result


def test_the_stream_stops_at_the_first_exit(exit_path_files):
    ep = exit_path.load(exit_path_files[0])
    idx = torch.arange(len(ep.test_exit))
    st = sim_comparator.comparator_stream(ep, idx)
    k = len(ep.layers)
    fed = torch.bincount(st["image"], minlength=len(idx))
    assert torch.equal(fed, ep.test_exit.clamp(max=k - 1) + 1)         # up to the exit, or every layer
    ex, cls = sim_comparator.image_outcomes(st, ep, idx, st["exit"], st["class"])
    assert torch.equal(ex, ep.test_exit) and torch.equal(cls, ep.test_class)
    assert 0 < int((ep.test_exit == 0).sum()) < len(idx)               # the fixture exits some images early


def test_images_matched_reads_the_rtl_decision_words(exit_path_files, monkeypatch, tmp_path):
    """An RTL whose decision for image 7's last candidate has its exit bit flipped: one
    decision word wrong, and image 7 leaves elsewhere than the evaluation counted, by the RTL's
    words (the reference's own bits would match every image). No simulator: the RTL's words are
    the expected ones with that bit flipped."""
    ep = exit_path.load(exit_path_files[0])
    run = runner.Run(1, 0, tmp_path, 0.0)

    def rtl(b, cases, beats, out_lanes, out_bits, seed=0, *, stall=True, folder=None):
        values = [c["expected"].clone() for c in cases]
        st = sim_comparator.comparator_stream(ep, torch.arange(120))
        last = int(torch.nonzero(st["image"] == 7).flatten()[-1])
        values[0][last, 0] ^= 1
        return sim_units.Outputs(values, [None] * len(cases), [False] * len(cases), run, "verilator", 0.0)
    monkeypatch.setattr(sim_units, "build_unit", lambda name, simulator=None: None)
    monkeypatch.setattr(sim_units, "simulate", rtl)
    res = sim_comparator.verify_comparator(ep, 120)
    assert res.matched == res.total - 1 and res.images_matched == 119 and not res.passed
    assert res.first_mismatches[-1]["image"] == 7


def test_decision_fields_split_a_word():
    word = torch.tensor([1 | (5 << 1) | (3 << 16), 0 | (2 << 1)])
    ex, cls, lay = sim_comparator.decision_fields(word)
    assert ex.tolist() == [True, False] and cls.tolist() == [5, 2] and lay.tolist() == [3, 0]


@pytest.mark.simulator()
def test_comparator_replay_matches_and_can_fail(exit_path_files, tmp_path):
    ep = exit_path.load(exit_path_files[0])
    res = sim_comparator.verify_comparator(ep, 120, folder=tmp_path / "sim")
    assert isinstance(res, Result)
    assert res.passed and res.matched == res.total == res.decisions > 120, res.summary()
    assert res.images_matched == 120
    ep.test_exit[7] = (ep.test_exit[7] + 1) % (len(ep.layers) + 1)       # an evaluation that routed otherwise
    bad = sim_comparator.verify_comparator(ep, 120, folder=tmp_path / "sim2")
    assert not bad.passed and bad.images_matched == 119 and bad.first_mismatches[-1]["image"] == 7


@pytest.mark.simulator()
def test_verify_comparator_command(exit_path_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "comparator", "--exit-path", str(exit_path_files[0]), "--images", "50"]) == 0
    s = json.loads((tmp_path / "reports" / "verify-comparator" / "summary.json").read_text())
    assert s["matched"] == s["total"] > 0 and s["images"] == s["images_matched"] == 50
    assert "threshold register" in (tmp_path / "reports" / "verify-comparator" / "README.md").read_text()


def test_missing_exit_path_is_one_line(tmp_path, capsys):
    assert main(["verify", "comparator", "--exit-path", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no exit path at" in err and "\n" not in err
