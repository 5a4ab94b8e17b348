"""The `qexit` command: help texts, one-line errors, and the FP32 steps end to end on tiny inputs."""
import argparse
import json
import subprocess
import sys

import pytest
import torch

from hw.cost import Machine
from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.quantize import load_intmodel
from qexit.cli import COMMANDS, main
from qexit.commands.common import add_machine_args, clock_from_args, machine_from_args
from sim import simulator as runner


def run_cli(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "qexit.cli", *argv], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: qexit " + name in capsys.readouterr().out


def test_the_machine_options_make_one_machine(tmp_path):
    """add_machine_args declares --rows --cols --bandwidth --latency --clock-mhz once, with the
    step's defaults; machine_from_args turns them into the one hw.cost.Machine."""
    p = argparse.ArgumentParser()
    add_machine_args(p, bandwidth=4.0, latency=10)
    assert machine_from_args(p.parse_args([])) == Machine(8, 4.0, 10, 100.0)
    m = machine_from_args(p.parse_args(["--rows", "4", "--cols", "4", "--bandwidth", "2.5", "--clock-mhz", "50"]),
                          scalable=True)
    assert m == Machine(4, 2.5, 10, 50.0, True) and (m.rows, m.cols) == (4, 4)
    for argv, words in ((["--rows", "8", "--cols", "4"], "square"), (["--bandwidth", "0"], "bandwidth 0.0"),
                        (["--latency", "-2"], "latency -2"), (["--clock-mhz", "-1"], "clock -1.0 MHz")):
        with pytest.raises(QexitError, match=words):
            machine_from_args(p.parse_args(argv))
    gemm = argparse.ArgumentParser()                  # the GEMM engine: any R x C, an ideal stream by default
    add_machine_args(gemm, rows=4, bandwidth=None, latency=0, square=False, options=("rows", "cols", "bandwidth"))
    m = machine_from_args(gemm.parse_args(["--cols", "6"]))
    assert (m.rows, m.cols, m.bandwidth, m.latency) == (4, 6, None, 0) and "--latency" not in gemm.format_help()
    synth = argparse.ArgumentParser()                 # the clock from the accelerator's synthesized Fmax
    add_machine_args(synth, clock_mhz=None, synth=True)
    summary = tmp_path / "synth.json"
    summary.write_text(json.dumps({"device": "LFE5U-85F", "accelerator": [
        {"rows": 4, "cols": 4, "fits": True, "fmax_mhz": 61.5, "luts": 1, "ffs": 1, "dsps": 1, "brams": 1},
        {"rows": 8, "cols": 8, "fits": False, "fmax_mhz": None, "luts": 1, "ffs": 1, "dsps": 200, "brams": 1}]}))
    args = synth.parse_args(["--rows", "4", "--cols", "4", "--synth", str(summary)])
    mhz, clock = clock_from_args(args)
    assert machine_from_args(args).clock_mhz == mhz == 61.5 and clock["clock_source"] == "synth"
    assert clock_from_args(synth.parse_args(["--rows", "8", "--clock-mhz", "75"])) == (75.0, {"clock_source": "user"})
    for argv, words in ((["--rows", "8"], "8x8 accelerator does not fit the LFE5U-85F"),
                        (["--rows", "16"], "no synthesis result for the 16x16 accelerator")):
        with pytest.raises(QexitError, match=words + ".*--clock-mhz"):
            clock_from_args(synth.parse_args(argv + ["--synth", str(summary)]))


def test_missing_checkpoint_is_one_line(tmp_path):
    r = run_cli("eval", "--checkpoint", str(tmp_path / "nope.pt"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_wrong_data_folder_is_one_line(tiny_trained, tmp_path):
    _, ckpt = tiny_trained
    r = run_cli("eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "nothere"), cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_mismatched_checkpoint_is_one_line(tiny_trained, tmp_path):
    _, ckpt = tiny_trained
    blob = torch.load(ckpt, weights_only=False)
    blob["config"]["width"] = 32
    torch.save(blob, tmp_path / "bad.pt")
    r = run_cli("eval", "--checkpoint", str(tmp_path / "bad.pt"), cwd=tmp_path)
    assert r.returncode == 2 and "does not match" in r.stderr and "Traceback" not in r.stderr


def test_train_then_eval_writes_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--width", "16", "--depth", "1", "--heads", "2", "--epochs", "1",
                 "--train-images", "256", "--out", "m.pt"]) == 0
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["params"] > 0 and 0 <= info["top1_test"] <= 1
    assert main(["eval", "--checkpoint", "m.pt", "--images", "200"]) == 0
    s = json.loads((tmp_path / "reports" / "eval" / "summary.json").read_text())
    # recomputed here, outside the eval command: the checkpoint's own forward pass on the same images
    model, _ = load_checkpoint(tmp_path / "m.pt")
    test = load_fashion_mnist("test").subset(200)
    with torch.no_grad():
        correct = (model(test.images).argmax(-1) == test.labels).sum().item()
    assert s["images"] == 200 and s["top1"] == correct / 200
    assert s["params"] == sum(p.numel() for p in model.parameters())
    assert (tmp_path / "reports" / "eval" / "README.md").exists()


def test_quantize_step_writes_intmodel_and_qirc(tiny_trained, tmp_path, monkeypatch):
    _, ckpt = tiny_trained
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "--checkpoint", str(ckpt), "--calib-images", "64", "--test-images", "100",
                 "--qirc-images", "32"]) == 0
    d = tmp_path / "reports" / "quantize"
    s = json.loads((d / "summary.json").read_text())
    for key in ("top1_fp32", "top1_int8", "top1_dynamic_int8", "nsr_per_layer", "cos_per_layer"):
        assert key in s
    assert len(s["nsr_per_layer"]) == 2
    assert (d / "intmodel.pt").stat().st_size > 0 and (d / "qirc.png").exists()
    assert s["widths"] == [[8, 8], [8, 8]]


def test_quantize_an_assignment(tiny_trained, tmp_path, monkeypatch):
    """`qexit quantize --assignment`: a mixed IntModel, evaluated and QIRC'd like the 8-bit one."""
    _, ckpt = tiny_trained
    monkeypatch.chdir(tmp_path)
    assert main(["quantize", "--checkpoint", str(ckpt), "--calib-images", "64", "--test-images", "100",
                 "--qirc-images", "32", "--assignment", "8:8,4:3"]) == 0
    d = tmp_path / "reports" / "quantize"
    s = json.loads((d / "summary.json").read_text())
    assert s["widths"] == [[8, 8], [4, 3]] and len(s["nsr_per_layer"]) == 2
    assert load_intmodel(d / "intmodel.pt").widths == ((8, 8), (4, 3))
    assert "4/3" in (d / "README.md").read_text()
    assert main(["quantize", "--checkpoint", str(ckpt), "--assignment", "8:8,4:9"]) == 2


@pytest.mark.parametrize("argv,message", [
    (["verify", "gemm", "--rows", "0"], "rows = 0"),
    (["verify", "gemm", "--shapes", "50x0x13"], "K = 0"),
    (["verify", "gemm", "--shapes", "300x768x768"], "exceeds"),
    (["verify", "gemm", "--shapes", "50by7"], "MxKxN"),
    (["verify", "gemm", "--bandwidth", "0"], "bandwidth"),
    (["verify", "gemm", "--shapes", "4x4x300", "--int32"], "max-raw-n"),
    (["verify", "units", "--units", "relu"], "unknown --units"),
    (["verify", "units", "--vectors", "0"], "at least 1"),
    (["verify", "model", "--bandwidth", "-1"], "bandwidth"),
    (["verify", "block", "--bandwidth", "0"], "bandwidth"),
    (["verify", "block", "--rows", "8", "--cols", "16"], "square array"),
    (["verify", "block", "--random", "--tokens", "48"], "square number"),
    (["verify", "block", "--random", "--width", "64", "--heads", "5", "--mlp", "256"], "not a multiple of --heads"),
    (["verify", "block", "--random", "--width", "40", "--heads", "4", "--mlp", "160", "--tokens", "5",
      "--rows", "16", "--cols", "16"], "not a multiple of the array's 16 lanes"),
    (["verify", "run", "--bandwidth", "0"], "bandwidth"),
    (["verify", "run", "--rows", "8", "--cols", "16"], "square array"),
    (["verify", "run", "--exit-path", "none.pt"], "none.pt"),
])
def test_verify_bad_input_is_one_line_before_any_simulation(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(runner, "build", lambda *a, **k: pytest.fail("simulation started"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


@pytest.mark.parametrize("argv", [["gemm", "--rows", "4", "--cols", "4", "--out", "/proc/qexit/g.v"],
                                  ["accelerator", "--rows", "4", "--cols", "4", "--out", "/proc/qexit/acc"],
                                  ["image", "--rows", "4", "--cols", "4", "--out", "/proc/qexit/img"]])
def test_rtl_into_an_unwritable_folder_is_one_line(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["rtl", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write" in err and "/proc/qexit" in err and err.count("\n") == 0
    assert not (tmp_path / "reports" / "rtl-gemm").exists()         # nothing that looks complete


@pytest.mark.parametrize("block", ["gemm", "units", "model", "block", "run"])
def test_each_verify_block_has_its_own_help(block, capsys):
    with pytest.raises(SystemExit) as e:
        main(["verify", block, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"`qexit verify {block}" in out and "(default:" in out
    assert all(f"`qexit verify {other}" not in out for other in {"gemm", "units", "model", "block"} - {block})
