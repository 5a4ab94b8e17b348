"""sim/exit.py and its commands: the comparator replay of the test split under cocotb, the
hls4ml check through `qexit hls`, and their bad-input errors."""
import json

import pytest
import torch

from model.exits import exit_path
from model.quantize import random_intmodel
from model.vit import ViTConfig
from qexit.cli import main
from sim import exit as sim_exit


def test_the_stream_stops_at_the_first_exit(exit_path_files):
    ep = exit_path.load(exit_path_files[0])
    idx = torch.arange(len(ep.test_exit))
    st = sim_exit.comparator_stream(ep, idx)
    k = len(ep.layers)
    fed = torch.bincount(st["image"], minlength=len(idx))
    assert torch.equal(fed, ep.test_exit.clamp(max=k - 1) + 1)         # up to the exit, or every layer
    ex, cls = sim_exit.image_outcomes(st, ep, idx, st["exit"], st["class"])
    assert torch.equal(ex, ep.test_exit) and torch.equal(cls, ep.test_class)
    assert 0 < int((ep.test_exit == 0).sum()) < len(idx)               # the fixture exits some images early


@pytest.mark.simulator()
def test_comparator_replay_matches_and_can_fail(exit_path_files, tmp_path):
    ep = exit_path.load(exit_path_files[0])
    res = sim_exit.verify_comparator(ep, 120, folder=tmp_path / "sim")
    assert res.passed and res.matched == res.total == res.decisions > 120, res.summary()
    assert res.images_matched == 120
    ep.test_exit[7] = (ep.test_exit[7] + 1) % (len(ep.layers) + 1)       # an evaluation that routed otherwise
    bad = sim_exit.verify_comparator(ep, 120, folder=tmp_path / "sim2")
    assert not bad.passed and bad.images_matched == 119 and bad.first_mismatches[-1]["image"] == 7


@pytest.mark.simulator()
def test_verify_comparator_command(exit_path_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "comparator", "--exit-path", str(exit_path_files[0]), "--images", "50"]) == 0
    s = json.loads((tmp_path / "reports" / "verify-comparator" / "summary.json").read_text())
    assert s["matched"] == s["total"] > 0 and s["images"] == s["images_matched"] == 50
    assert "threshold register" in (tmp_path / "reports" / "verify-comparator" / "README.md").read_text()


def test_hls_command(exit_path_files, tmp_path, capsys):
    path, intmodel, _ = exit_path_files
    assert main(["hls", "--exit-path", str(path), "--intmodel", str(intmodel), "--sets", "30",
                 "--out", str(tmp_path), "--quiet"]) == 0
    s = json.loads((tmp_path / "hls" / "summary.json").read_text())
    assert s["matched"] == s["total"] == 30 * 11 and s["token_sets"] == 30 and s["mismatches"] == 0
    assert [lay["layer"] for lay in s["layers"]] == [1, 3] and s["sets_equal_to_evaluation"] == 30
    for lay in ("layer01", "layer03"):
        assert (tmp_path / "hls" / lay / "build_prj.tcl").is_file()
    assert "ap_fixed<32,32,AP_TRN,AP_SAT>" in (tmp_path / "hls" / "README.md").read_text()


@pytest.mark.parametrize("argv,words", [
    (["hls", "--exit-path", "{tmp}/none.pt"], "no exit path at"),
    (["verify", "comparator", "--exit-path", "{tmp}/none.pt"], "no exit path at"),
    (["hls", "--exit-path", "{ep}", "--intmodel", "{tmp}/none.pt"], "no IntModel at"),
    (["hls", "--exit-path", "{ep}", "--intmodel", "{other}"], "built for width 16 but the IntModel has width 8"),
    (["hls", "--exit-path", "{ep}", "--intmodel", "{im}", "--out", "{tmp}/file"], "cannot write the report folder"),
])
def test_bad_input_is_one_line(exit_path_files, tmp_path, capsys, argv, words):

    path, intmodel, _ = exit_path_files
    (tmp_path / "file").write_text("")
    other = tmp_path / "other.pt"
    if "{other}" in argv:
        random_intmodel(ViTConfig(width=8, depth=4, heads=2, embed_dim=24)).save(other)
    argv = [a.format(tmp=tmp_path, ep=path, im=intmodel, other=other) for a in argv]
    assert main(argv + ["--sets", "4"] if argv[0] == "hls" else argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
