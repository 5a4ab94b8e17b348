"""The whole accelerator in simulation: build it for an IntModel and exit path
(``hw.program.accelerator``), compile its harness with the free-running main (``build``), write a memory image
of a batch of images, run it with one ``start`` and read back every result (``run_batch``).

Nothing in Python runs between ``start`` and ``done``: the C++ main loads the memory image,
writes the control registers, waits for ``busy`` to fall and reads the result records; the
harness counts control-bus writes taken while busy (``host_writes_while_busy``, 0 by design).
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from hw import cost, program
from hw.cost import Machine, tables
from hw.rtl import accelerator as acc
from hw.rtl import emit
from hw.rtl.dense import StreamDense
from hw.rtl.isa import bus_bits
from model.errors import QexitError
from model.quantize import IntModel
from sim import simulator as runner
from sim.harness import AcceleratorHarness, check_machine, source_ports
from sim.image import Layout, MemoryImage, memory_image, register_writes

CYCLE_LIMIT = 10 ** 10


def size(a: acc.Accelerator, verilog: str) -> dict:
    """Verilog lines and every bit ``a`` stores on chip (memories and registers, by block)."""
    bits = emit.storage_bits(a)
    total = {k: sum(v.values()) for k, v in bits.items()}
    return {"verilog_lines": verilog.count("\n"), "onchip_bits": total["memory"] + total["registers"],
            "memory_bits": total["memory"], "register_bits": total["registers"], "by_block": bits}


@dataclass(frozen=True)
class Built:
    exe: Path
    top: str
    words: int               # the harness memory's size in words
    lanes: int


def build(a: acc.Accelerator, words: int) -> Built:
    """Compile the harness of ``a`` with a memory of ``words`` words (cached)."""
    top = acc.top_name(a.cfg.lanes) + "_harness"
    h = AcceleratorHarness(a, words)
    verilog = emit.to_verilog(h, top)
    regs = {f"REG_{r.name}": r.value for r in (acc.Reg.STATUS, acc.Reg.ERROR, acc.Reg.IMAGES_DONE, acc.Reg.CYCLES)}
    return Built(runner.build_accelerator(verilog, top, {**regs, "TRACE_WORDS": h.trace_words}), top, words,
                 a.cfg.lanes)


MAX_BATCH = 1000          # images a batch's memory image holds (the harness memory is sized for it)


def build_for(im: IntModel, ep, lanes: int, images: int = MAX_BATCH) -> Built:
    """The harness of ``program.accelerator(im, ep, lanes)`` with a memory that holds ``images`` images (cached)."""
    c = im.config
    img, _ = memory_image(im, ep, lanes, torch.zeros(images, c.channels, c.image_size, c.image_size))
    return build(program.accelerator(im, ep, lanes), 1 << (img.words - 1).bit_length())


def memory_settings(machine: Machine) -> list[int]:
    """(ideal, bw_num, bw_den, latency) of the memory model, as ``source_ports`` gives them."""
    ports = source_ports(machine.source)
    return [ports[k] for k in ("ideal", "bw_num", "bw_den", "latency")]


def decode(word: int) -> dict:
    return {"cycles": word & 0xFFFFFFFF, "class": (word >> 32) & 0xFFFF, "layer": (word >> 48) & 0xFF,
            "candidate": (word >> 56) & 0xFF}


def run_image(b: Built, img: MemoryImage, layout: Layout, machine: Machine, limit: int = CYCLE_LIMIT,
              hang_after: int = 0) -> dict:
    """Run a memory image once: the main's JSON plus ``results`` (one decoded record per image);
    ``hang_after`` > 0: the memory stops answering after that many beats."""
    if img.words > b.words:
        raise QexitError(f"the memory image needs {img.words} words; the harness was built with {b.words}")
    step = img.word_bytes
    abits = max(1, (b.words - 1).bit_length())
    payloads = [addr | (w << abits) for base, words in img.regions.values()
                for addr, w in enumerate(words, start=base // step) if w]
    rec = acc.record_beats(b.lanes)
    lines = [f"{len(payloads):x}"] + [f"{p:x}" for p in payloads]
    lines += [f"{v:x}" for v in memory_settings(machine) + [hang_after]]
    writes = register_writes(layout)
    lines.append(f"{len(writes):x}")
    lines += [f"{int(r):x} {v:x}" for r, v in writes]
    lines += [f"{limit:x}", f"{layout.results // step:x}", f"{layout.count * rec:x}"]
    with tempfile.TemporaryDirectory(prefix="qexit-acc-") as tmp:
        path = Path(tmp) / "inputs.txt"
        path.write_text("\n".join(lines) + "\n")
        done = subprocess.run([str(b.exe), str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise QexitError(f"the accelerator simulation failed: {done.stderr.strip()[-400:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    words = [int(w, 16) for w in out.pop("records")]
    bits = bus_bits(b.lanes)
    out["results"] = [decode(sum(words[i * rec + j] << (bits * j) for j in range(rec)))
                      for i in range(layout.count)]
    out["cycles_per_second"] = out["cycles"] / max(out["seconds"], 1e-9)
    return out


def run_batch(im: IntModel, ep, images: torch.Tensor, machine: Machine, b: Built | None = None) -> dict:
    """Build (cached) and run ``images`` through the accelerator on ``machine``."""
    lanes = check_machine(machine, square=True).lanes
    img, layout = memory_image(im, ep, lanes, images)
    if b is None:
        b = build(program.accelerator(im, ep, lanes), img.words)
    out = run_image(b, img, layout, machine)
    out["image_digest"] = img.digest()
    return out


def predicted_cycles(im: IntModel, ep, machine: Machine, exit_layer: int | None) -> int:
    """An image's record cycles (its IMAGE state to its result's WRITE) from the cost model, for
    an image that exits at backbone layer ``exit_layer`` (None: full depth)."""
    on = program.enabled(ep)
    costs = cost.build(im, machine, tables.load(), {ep.layers[k]: StreamDense(machine.lanes) for k in on},
                       ep.head if on else None)
    return costs.record_cycles(costs.route(exit_layer, [ep.layers[k] for k in on]))


def build_axiram(a: acc.Accelerator, simulator: str | None = None):
    """The accelerator alone, built for cocotb (``run_axiram``; cached)."""
    top = acc.top_name(a.cfg.lanes)
    return runner.build(emit.to_verilog(a, top), top, simulator=simulator)


def run_axiram(b, img: MemoryImage, layout: Layout, limit: int = CYCLE_LIMIT, pause_after: int = 0) -> dict:
    """Run a memory image on the accelerator alone (``build_axiram``) under cocotb, with
    cocotbext-axi's ``AxiRam`` as its memory (``sim/tb/accelerator.py``): the status, the cycles
    from start to done (the accelerator's ``CYCLES``), ``timed_out`` (busy after ``limit``
    cycles) and the decoded result records. ``pause_after`` > 0: the RAM stops answering reads
    that many cycles after start."""
    rec = acc.record_bytes(img.lanes)
    spec = {"size": img.end, "regions": [(base, b"".join(w.to_bytes(img.word_bytes, "little") for w in words))
                                         for base, words in img.regions.values() if words],
            "writes": [(int(r), v) for r, v in register_writes(layout)],
            "reads": {"error": acc.Reg.ERROR, "images_done": acc.Reg.IMAGES_DONE, "cycles": acc.Reg.CYCLES},
            "results": layout.results, "record_bytes": rec, "count": layout.count,
            "limit_cycles": limit, "pause_after_cycles": pause_after}
    with tempfile.TemporaryDirectory(prefix="qexit-axiram-") as tmp:
        cases, results = Path(tmp) / "cases.pt", Path(tmp) / "results.pt"
        torch.save(spec, cases)
        run = runner.run(b, "sim.tb.accelerator", testcase="run", folder=Path(tmp) / "sim",
                         settings={"QEXIT_TB_CASES": str(cases), "QEXIT_TB_RESULTS": str(results)})
        if not results.exists():
            raise QexitError(f"the AxiRam run wrote no results:\n{runner.log_tail(run)}")
        out = torch.load(results, weights_only=False)
    raw = out.pop("records")
    out["results"] = [decode(int.from_bytes(raw[i * rec:i * rec + 8], "little")) for i in range(layout.count)]
    return out
