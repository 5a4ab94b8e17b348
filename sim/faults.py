"""Faults end in an error code, never a hang or a silent misalignment: each case below
breaks one thing in an otherwise good memory image (or in the memory), runs the accelerator
and reads back the code in ``ERROR`` and the cycles from ``start`` to the stop. A case passes
when the code is its own and the run stopped by itself (no cycle limit reached, no image done).

Two ways to run a case: under cocotb with cocotbext-axi's ``AxiRam`` as the memory
(``sim.accelerator.run_axiram``; the silent memory is the RAM's R channel paused ``hang_after``
cycles after start), or under Verilator's free-running main with the HDL memory model
(``sim.accelerator.run_image``; it stops after ``hang_after`` beats). The cycles differ as the
two memories' timings do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hw.cost import Machine
from hw.rtl import accelerator as acc
from model.exits.exit_path import ExitPath
from model.quantize import IntModel
from sim import accelerator
from sim.image import Layout, MemoryImage, memory_image
from sim.result import Result

CYCLE_LIMIT = 10 ** 7


def _entry(img: MemoryImage, lanes: int, segment: int) -> int:
    """The index of a run-table entry's first memory word (segment -1: the header)."""
    return (segment + 1) * acc.entry_beats(lanes)


def _field(img: MemoryImage, lanes: int, segment: int, field: int, value: int) -> None:
    """Set one 32-bit field of a run-table entry."""
    words, bits = img.regions["table"][1], 8 * lanes
    pos = _entry(img, lanes, segment) * bits + 32 * field
    w, off = divmod(pos, bits)
    words[w] = (words[w] & ~(0xFFFFFFFF << off)) | (value << off)


@dataclass(frozen=True)
class Case:
    name: str
    code: acc.Err
    breaks: Callable[[MemoryImage, Layout, int], None]    # (image, layout, lanes): the fault
    hang_after: int = 0                                     # the memory stops after this many beats (cycles)


def _opcode(img, layout, lanes):
    img.regions["program embed"][1][0] |= 0b111             # the first descriptor's op field: 7


def _address(img, layout, lanes):
    _field(img, lanes, 1, 3, layout.limit)                  # the first block's weights: past the image


def _table_end(img, layout, lanes):
    segments = len(img.regions["table"][1]) // acc.entry_beats(lanes) - 1
    _field(img, lanes, segments - 1, 0, 0)                  # the final entry's flags: not valid


def _layer(img, layout, lanes):
    _field(img, lanes, -1, 1, 0)                            # the header: no candidates, yet the table routes heads


def _magic(img, layout, lanes):
    _field(img, lanes, -1, 0, 0)


def _nothing(img, layout, lanes):
    pass


CASES = (
    Case("a program word with an unknown opcode", acc.Err.OPCODE, _opcode),
    Case("an address outside the model image", acc.Err.ADDRESS, _address),
    Case("a memory that stops answering", acc.Err.WATCHDOG, _nothing, hang_after=100),
    Case("a run table that ends early", acc.Err.TABLE_END, _table_end),
    Case("a head and threshold for a layer that does not exist", acc.Err.LAYER, _layer),
    Case("no run table at TABLE (wrong magic)", acc.Err.TABLE, _magic),
)


def run_case(case: Case, im: IntModel, ep: ExitPath, machine: Machine, images: torch.Tensor, build,
             axiram: bool = False) -> dict:
    """One case on ``build``: the cocotb build of ``sim.accelerator.build_axiram`` with ``axiram``,
    else the free-running one of ``sim.accelerator.build``."""
    img, layout = memory_image(im, ep, machine.lanes, images)
    case.breaks(img, layout, machine.lanes)
    if axiram:
        out = accelerator.run_axiram(build, img, layout, CYCLE_LIMIT, case.hang_after)
    else:
        out = accelerator.run_image(build, img, layout, machine, CYCLE_LIMIT, case.hang_after)
    got = acc.Err(out["error"]).name if out["error"] in acc.Err._value2member_map_ else str(out["error"])
    return {"case": case.name, "expected": case.code.name, "got": got, "code": out["error"],
            "cycles": out["cycles"], "timed_out": out["timed_out"], "images_done": out["images_done"],
            "passed": out["error"] == case.code and not out["timed_out"] and out["images_done"] == 0}


def verify_faults(im: IntModel, ep: ExitPath, machine: Machine, images: torch.Tensor, build, axiram: bool) -> Result:
    records = [run_case(c, im, ep, machine, images, build, axiram) for c in CASES]
    res = Result("faults", sum(r["passed"] for r in records), len(records), records=records)
    res.passed = res.matched == res.total
    return res
