"""sim/head.py: the head's figures (the distinct integers an image's output carries, the
cycles of every image), and the hls4ml check through `qexit hls` with its bad-input errors."""
import json

import pytest
import torch

from model.quantize import random_intmodel
from model.vit import ViTConfig
from qexit.cli import main
from sim import head as sim_head, simulator as runner, units as sim_units


def _case(classes: int = 4) -> dict:
    scores = torch.arange(classes) * 7 - 5
    tail = torch.full((classes,), 1)
    tail[-1] |= 1 << 8
    return {"expected": torch.stack([scores, torch.full((classes,), 42), tail], 1)}


def test_an_image_checks_its_scores_and_one_gate():
    case = _case()
    want = case["expected"]
    assert sim_head.head_integers(want, want) == (5, 5)                # 4 scores + 1 gate, not 12 words
    wrong_gate = want.clone()
    wrong_gate[2, 1] += 1                                             # one copy of the gate off
    assert sim_head.head_integers(wrong_gate, want) == (4, 5)
    wrong_score = want.clone()
    wrong_score[0, 0] -= 1
    assert sim_head.head_integers(wrong_score, want) == (4, 5)


def test_every_image_keeps_its_cycles(tmp_path):
    """Per image, in image order, with or without back-pressure: the odd images (stalled) keep
    theirs too; only the unstalled ones are compared with the latency. A wrong layer tag is a
    mismatch, though not one of the counted integers."""
    out = sim_units.Outputs(None, [], [], runner.Run(1, 0, tmp_path, 0.0), "verilator", 0.0)
    want = _case()["expected"]
    tagged = want.clone()
    tagged[1, 2] = 0
    images = [(1, _case(), want, 55, True), (0, _case(), want, 30, False), (3, _case(), tagged, 61, True),
              (2, _case(), want, 30, False)]
    res = sim_head.head_result(3, images, 30, out)
    assert [r["image"] for r in res.records] == [0, 1, 2, 3]
    assert [r["cycles"] for r in res.records] == [30, 55, 30, 61]
    assert [r["stalled"] for r in res.records] == [False, True, False, True]
    assert res.cycles_equal and res.cycles_measured == res.cycles_predicted == 60
    assert res.matched == res.total == 4 * 5 and res.sets == 4 and res.latency_cycles == 30
    assert not res.passed and res.first_mismatches == [{"image": 3, "beat": 1, "field": "tag", "got": 0,
                                                        "expected": 1}]
    late = sim_head.head_result(3, [(0, _case(), want, 31, False)], 30, out)
    assert not late.cycles_equal and not late.passed


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
    assert main(argv + ["--sets", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err
