"""The whole accelerator (hw.rtl.accelerator) under Verilator with the free-running main: one
start runs a batch of images by itself; every class and exit layer equals the golden model's
and the fixed-point head's, computed on the host on their own, and every image's cycles equal
the cost model's."""
import json

import pytest
import torch

from hw import program
from hw.cost import Machine, memories
from hw.rtl import accelerator as acc
from hw.rtl import axi
from model.exits import exit_path
from model.data import load_fashion_mnist
from model.golden import Golden
from model.quantize import random_intmodel
from model.vit import ViTConfig
from qexit.cli import main
from sim import accelerator as sa
from sim import faults
from sim.image import memory_image, save_image
from sim.run import prepare, reference

pytestmark = pytest.mark.simulator("verilator")
LANES = 4
MACHINE = Machine(lanes=LANES, bandwidth=3.0, latency=7)


@pytest.fixture(scope="module")
def built(exit_path_files):
    """The build `verify run` makes (tests/test_sim_run.py shares it)."""
    path, _, im = exit_path_files
    ep = exit_path.load(path)
    return im, ep, prepare(im, ep, MACHINE).build


def test_one_start_runs_every_image_to_the_reference_exit(built, fmnist_test):
    im, ep, b = built
    images = fmnist_test.images[:6]
    img, layout = memory_image(im, ep, LANES, images)
    out = sa.run_image(b, img, layout, MACHINE)
    layers, classes, _ = reference(im, ep, images)
    assert out["error"] == 0 and out["images_done"] == 6 and out["host_writes_while_busy"] == 0
    got = out["results"]
    assert [r["layer"] for r in got] == layers
    assert [r["class"] for r in got] == classes
    assert len(set(layers)) > 1                        # some exit early, some run to full depth
    predicted = [sa.predicted_cycles(im, ep, MACHINE, None if lay == im.config.depth else lay) for lay in layers]
    assert [r["cycles"] for r in got] == predicted


def test_without_exits_every_image_runs_to_the_golden_class(exit_path_files, fmnist_test):
    _, _, im = exit_path_files
    images = fmnist_test.images[:3]
    out = sa.run_batch(im, None, images, MACHINE)
    assert [r["class"] for r in out["results"]] == Golden(im).forward(images).logits.argmax(-1).tolist()
    assert {r["layer"] for r in out["results"]} == {im.config.depth}
    assert [r["cycles"] for r in out["results"]] == [sa.predicted_cycles(im, None, MACHINE, None)] * 3


def test_rtl_accelerator_writes_the_verilog_the_register_map_and_the_layout(exit_path_files, tmp_path):
    path, im_file, im = exit_path_files
    common = ["--rows", "4", "--cols", "4", "--exit-path", str(path), "--intmodel", str(im_file)]
    assert main(["rtl", "accelerator", *common, "--out", str(tmp_path / "acc")]) == 0
    assert "module qexit_accelerator_4x4" in (tmp_path / "acc" / "qexit_accelerator_4x4.v").read_text()
    assert json.loads((tmp_path / "acc" / "registers.json").read_text()) == json.loads(json.dumps(acc.register_map(4)))
    assert f"#define QEXIT_REG_LIMIT 0x{4 * acc.Reg.LIMIT:02X}u" in (tmp_path / "acc" / "qexit_accelerator.h").read_text()
    assert "| thresholds |" in (tmp_path / "acc" / "README.md").read_text()
    summary = json.loads((tmp_path / "acc" / "summary.json").read_text())
    engine = sum(words * bits for words, bits in memories(program.accelerator(im, exit_path.load(path), 4).cfg).values())
    assert summary["by_block"]["memory"]["engine"] >= engine > 0        # every buffer the cost model knows of
    assert summary["onchip_bits"] == summary["memory_bits"] + summary["register_bits"]
    assert main(["rtl", "image", *common, "--images", "2", "--out", str(tmp_path / "img")]) == 0
    info = json.loads((tmp_path / "img" / "memory.json").read_text())
    img, _ = memory_image(im, exit_path.load(path), LANES, load_fashion_mnist("test").images[:2])
    assert info["sha256"] == img.digest() and info["registers"]["CTRL"] == 1
    words = {int(a, 16): int(w, 16) for a, w in (line.split() for line in (tmp_path / "img" / "memory.hex").open())}
    assert (words[0], words[1]) == (acc.MAGIC, 2)      # the table's header: magic, two candidates (32-bit words)
    assert main(["rtl", "run", *common, "--image", str(tmp_path / "img"), "--bandwidth", "3", "--latency", "7",
                 "--out", str(tmp_path / "run")]) == 0
    got = json.loads((tmp_path / "run" / "summary.json").read_text())
    layers, classes, _ = reference(im, exit_path.load(path), load_fashion_mnist("test").images[:2])
    assert got["error"] == 0 and [(r["layer"], r["class"]) for r in got["results"]] == list(zip(layers, classes))


def test_a_memory_image_for_another_model_is_one_line_before_any_simulation(exit_path_files, tmp_path, monkeypatch,
                                                                            capsys):
    path, im_file, im = exit_path_files
    ep = exit_path.load(path)
    monkeypatch.setattr(sa, "build", lambda *a, **k: pytest.fail("simulation started"))
    images = load_fashion_mnist("test").images[:1]
    img, layout = memory_image(im, ep, LANES, images)
    good = tmp_path / "good"
    good.mkdir()
    save_image(good, img, layout, im, ep)
    other = tmp_path / "table"                     # a consistent image whose run table is another model's
    other.mkdir()
    base, words = img.regions["table"]
    img.regions["table"] = (base, [words[0] + 1] + words[1:])
    save_image(other, img, layout, im, ep)
    hexed = tmp_path / "changed"
    hexed.mkdir()
    save_image(hexed, *memory_image(im, ep, LANES, images), im, ep)
    lines = (hexed / "memory.hex").read_text().splitlines()
    (hexed / "memory.hex").write_text("\n".join(lines[:-1]) + "\n")
    common = ["rtl", "run", "--rows", "4", "--cols", "4", "--intmodel", str(im_file), "--exit-path", str(path)]
    for argv, message in (([*common, "--image", str(other)], "its table region"),
                          ([*common, "--image", str(hexed)], "does not match the SHA-256"),
                          ([*common[:3], "8", "--cols", "8", *common[6:], "--image", str(good)], "another array"),
                          ([*common[:-2], "--exit-path", str(tmp_path / "none.pt"), "--image", str(good)], "none.pt"),
                          ([*common, "--image", str(tmp_path)], "not a memory image")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, (argv, err)


@pytest.mark.parametrize("case", faults.CASES, ids=[c.code.name for c in faults.CASES])
def test_every_fault_stops_with_its_error_code(built, fmnist_test, case):
    im, ep, b = built
    r = faults.run_case(case, im, ep, MACHINE, fmnist_test.images[:1], b)
    assert r["passed"] and r["got"] == case.code.name, r
    assert r["cycles"] < axi.WATCHDOG + 10_000                # stopped by itself, within the watchdog's count


def test_verify_faults_reports_each_code_and_its_cycles(exit_path_files, tmp_path, monkeypatch):
    path, im_file, _ = exit_path_files
    monkeypatch.chdir(tmp_path)
    assert main(["verify", "faults", "--exit-path", str(path), "--intmodel", str(im_file), "--rows", "4",
                 "--cols", "4", "--bandwidth", "3", "--latency", "7"]) == 0
    s = json.loads((tmp_path / "reports" / "verify-faults" / "summary.json").read_text())
    assert s["matched"] == s["total"] == len(faults.CASES)
    assert [c["got"] for c in s["cases"]] == [c.code.name for c in faults.CASES] and all(c["cycles"] > 0 for c in s["cases"])


def test_the_memory_port_speaks_axi4_to_cocotbext_axis_ram(built, fmnist_test):
    """The same memory image in cocotbext-axi's AxiRam instead of the HDL memory model: the
    same classes and exit layers (the reference's); only the cycles differ, as the RAM's
    timing does."""
    im, ep, b = built
    images = fmnist_test.images[:3]
    img, layout = memory_image(im, ep, LANES, images)
    got = sa.run_axiram(sa.build_axiram(program.accelerator(im, ep, LANES)), img, layout)
    layers, classes, _ = reference(im, ep, images)
    assert got["error"] == 0 and got["images_done"] == 3 and got["cycles"] > 0
    assert [r["layer"] for r in got["results"]] == layers and [r["class"] for r in got["results"]] == classes


def test_a_clip_layout_model_runs_through_the_accelerator():
    """CLIP's layout (a LayerNorm before the first block, quick_gelu on the activation table,
    3-channel images, 8-pixel patches) on a random IntModel: every class the golden model's,
    every image's cycles the cost model's. With more classes than tokens, the int32 buffer is
    sized by its largest GEMM (M x N tiles), not by the largest M times the largest N."""
    cfg = ViTConfig(image_size=32, patch=8, channels=3, width=32, depth=2, heads=2, pre_ln=True, act="quick_gelu",
                    embed_dim=16, num_classes=40)
    im = random_intmodel(cfg, seed=2)
    g = program.accelerator(im, None, MACHINE.lanes).cfg.gemm
    assert g.raw_words < g.max_m * -(-g.max_raw_n // g.cols)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = sa.run_batch(im, None, images, MACHINE)
    assert out["error"] == 0 and [r["class"] for r in out["results"]] == Golden(im).forward(images).logits.argmax(-1).tolist()
    assert [r["cycles"] for r in out["results"]] == [sa.predicted_cycles(im, None, MACHINE, None)] * 2
