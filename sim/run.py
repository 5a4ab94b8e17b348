"""The early-exit run in RTL, on the whole accelerator (``hw.rtl.accelerator``): one ``start``
runs a batch of real test images; the RTL sequencer runs the model segment by segment, after
each candidate layer whose exit is on the exit head takes the layer's tokens and the exit
comparator decides, and on ``exit`` the sequencer writes the image's result and starts the
next. ``sim.accelerator`` builds it under Verilator's free-running main: no Python runs
between ``start`` and ``done``.

Checked per image, against references computed on the host on their own:

* the exit layer and class: the golden model's tokens, ``FixedHead.layer`` and
  ``model.exits.decision.decide`` with the exit path's threshold registers (an image that never
  exits takes the golden model's logits' class);
* every decision word (exit, class, layer) the sequencer took, read from the harness's trace;
* the cycles in the image's result record (its start to its result's write) against
  ``hw.cost``: ``Costs.record_cycles`` of the reference's route;
* the control-bus writes while busy, counted in the harness's HDL: 0.

``run_images`` returns a ``sim.result.Result`` with one record per image (``image_record``);
``summary`` lists its figures for a report.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from hw import cost
from hw.cost import Machine, tables
from hw.rtl import comparator
from hw.rtl.dense import StreamDense
from model.errors import QexitError
from model.exits.decision import decide
from model.exits.exit_path import ExitPath
from model.exits.fixed import token_sums
from model.golden import Golden
from model.quantize import IntModel
from sim import accelerator
from hw.program import enabled
from sim.accelerator import MAX_BATCH
from sim.harness import check_machine
from sim.image import memory_image
from sim.result import Result

CLASS_BITS = comparator.CLASS_BITS         # comparator.OUT: exit | cls << 1 | layer << LAYER_SHIFT
LAYER_SHIFT = 1 + CLASS_BITS


def only(ep: ExitPath, layers: list[int]) -> ExitPath:
    """The exit path with the exits of every candidate outside ``layers`` switched off (their
    threshold registers off, as the comparator's candidate bit 0 does)."""
    regs = [r if lay in layers else None for lay, r in zip(ep.layers, ep.registers)]
    if all(r is None for r in regs):
        raise QexitError(f"no exit is on at layers {layers} in this exit path (on: "
                         f"{[lay for lay, r in zip(ep.layers, ep.registers) if r is not None]})")
    return dataclasses.replace(ep, registers=regs)


def reference(im: IntModel, ep: ExitPath, images: torch.Tensor) -> tuple[list[int], list[int], dict]:
    """(exit layer, class) per image and every decision (image, k) -> (exit, class), from the
    golden model's tokens and the fixed-point head, computed on the host."""
    out = Golden(im).forward(images)
    regs = torch.tensor([t for t, _ in ep.register_words()], dtype=torch.int64)
    cand = torch.tensor(ep.candidate)
    layers, classes, decisions = [], [], {}
    per_k = {}
    for k in enabled(ep):
        s, v = token_sums(out.blocks[ep.layers[k] - 1])
        scores, gates = ep.head.layer(k, s, v)
        per_k[k] = decide(scores, gates, torch.full((len(images),), k), regs, cand)
    for n in range(len(images)):
        layer, cls = im.config.depth, int(out.logits[n].argmax())
        for k in enabled(ep):
            ex, c = bool(per_k[k][0][n]), int(per_k[k][1][n])
            decisions[n, k] = (ex, c)
            if ex:
                layer, cls = ep.layers[k], c
                break
        layers.append(layer)
        classes.append(cls)
    return layers, classes, decisions


@dataclass
class RunDesign:
    """A built early-exit run: the accelerator's simulation build (``sim.accelerator.Built``)
    and the cost model that predicts its cycles. ``run_images`` runs images through it; build
    it once (``prepare``) and run as many batches as needed (up to ``MAX_BATCH`` images each)."""
    im: IntModel
    ep: ExitPath
    machine: Machine
    build: accelerator.Built
    costs: object
    on: list




def prepare(im: IntModel, ep: ExitPath, machine: Machine, simulator: str | None = None) -> RunDesign:
    """Generate and build the accelerator for ``im`` and ``ep`` on ``machine`` (its L x L array,
    its memory's bandwidth and latency; one streamed exit head of L multipliers serves every exit
    that is on), with its memory sized for ``MAX_BATCH`` images."""
    lanes = check_machine(machine, square=True).lanes
    if simulator not in (None, "verilator"):
        raise QexitError(f"the accelerator runs under Verilator's free-running main, not {simulator}; "
                         f"leave --simulator out or give --simulator verilator")
    ep.check_width(im.config.width)
    im.require_uniform8("the early-exit RTL run")
    b = accelerator.build_for(im, ep, lanes)
    on = enabled(ep)
    costs = cost.build(im, machine, tables.load(), {ep.layers[k]: StreamDense(lanes) for k in on}, ep.head)
    return RunDesign(im, ep, machine, b, costs, on)


def verify_run(im: IntModel, ep: ExitPath, images: torch.Tensor, machine: Machine,
               simulator: str | None = None) -> Result:
    """Run ``images`` through the accelerator on ``machine`` and check them (module docstring)."""
    if len(images) == 0:
        raise QexitError("no images to run; give --images >= 1")
    return run_images(prepare(im, ep, machine, simulator), images)


def image_record(n: int, got: dict, decisions: list[int], reference: tuple[int, int, dict], ep: ExitPath,
                 depth: int, costs, on: list[int]) -> dict:
    """Image ``n``'s record: what the accelerator wrote (``got``: its result record) and every
    decision word it took for the image (``decisions``), against the ``reference`` (exit layer,
    class, every decision (n, k) -> (exit, class); the final decision, after full depth, exits with
    the golden model's class). Its cycles, from the record, against the cost model's for the
    reference's route (``costs.route`` of the reference's exit layer, the candidate layers
    ``on``), so an image the RTL routes otherwise shows in its cycles as well."""
    exp_layer, exp_class, exp_dec = reference
    final = len(ep.layers)
    matched = 0
    for w in decisions:
        ex, c, k = bool(w & 1), (w >> 1) & (2 ** CLASS_BITS - 1), w >> LAYER_SHIFT
        want = (True, exp_class) if k == final else exp_dec.get((n, k))
        matched += int((ex, c) == want)
    route = costs.route(None if exp_layer == depth else exp_layer, on)
    return {"image": n, "exit_layer": got["layer"], "expected_layer": exp_layer, "class": got["class"],
            "expected_class": exp_class, "decisions": len(decisions), "decisions_matched": matched,
            "cycles_measured": got["cycles"], "cycles_predicted": costs.record_cycles(route)}


def run_result(records: list[dict], images: int) -> Result:
    """Per image records (``image_record``) of a run of ``images`` images as a result: matched
    and total count images (exit layer and class equal to the reference's); passed when every
    image ran and matched, every decision word matched and every image took its predicted
    cycles."""
    res = Result("run", sum(r["exit_layer"] == r["expected_layer"] and r["class"] == r["expected_class"]
                            for r in records), images,
                 cycles_measured=sum(r["cycles_measured"] for r in records),
                 cycles_predicted=sum(r["cycles_predicted"] for r in records), records=records)
    res.passed = (len(records) == images and res.matched == images
                  and all(r["decisions_matched"] == r["decisions"] for r in records)
                  and all(r["cycles_measured"] == r["cycles_predicted"] for r in records)
                  and not any(r.get("host_writes_while_busy") for r in records))
    return res


def summary(result: Result, sim_seconds: float | None = None) -> dict:
    """A run's headline figures (``qexit verify run``'s summary.json), from its per-image records:
    the counts, the decisions, the cycles summed and image by image, and per image its test
    index, exit layer and class, and the reference's; ``cycles_per_second`` over
    ``sim_seconds`` of simulation (default the result's)."""
    r = result.records
    seconds = result.sim_seconds if sim_seconds is None else sim_seconds
    return {"images": result.total, "matched": result.matched, "total": result.total,
            "decisions_matched": sum(x["decisions_matched"] for x in r), "decisions": sum(x["decisions"] for x in r),
            "cycles_measured": result.cycles_measured, "cycles_predicted": result.cycles_predicted,
            "cycles_equal": all(x["cycles_measured"] == x["cycles_predicted"] for x in r),
            "exit_layers": [x["exit_layer"] for x in r], "passed": result.passed,
            "test_indices": [x["image"] for x in r], "expected_layers": [x["expected_layer"] for x in r],
            "classes": [x["class"] for x in r], "expected_classes": [x["expected_class"] for x in r],
            "cycles_per_image_measured": [x["cycles_measured"] for x in r],
            "cycles_per_image_predicted": [x["cycles_predicted"] for x in r],
            "sequencer": result.figures.get("sequencer"), "memory": result.figures.get("memory"),
            "host_writes_while_busy": sum(x.get("host_writes_while_busy", 0) for x in r),
            # simulated cycles per wall second of the simulations (each batch on one worker)
            "cycles_per_second": round(sum(x.get("batch_cycles", 0) for x in r) / seconds) if seconds else None,
            "logs": [result.log] if result.log else []}


def split_decisions(words: list[int]) -> list[list[int]]:
    """The trace of decision words cut into images: each image's ends with its exit."""
    out, cur = [], []
    for w in words:
        cur.append(w)
        if w & 1:
            out.append(cur)
            cur = []
    return out


def run_images(d: RunDesign, images: torch.Tensor) -> Result:
    """Run ``images`` (in batches of up to ``MAX_BATCH``, one ``start`` each) through a prepared
    accelerator and check them against the references: a result with one record per image
    (``image_record``; ``image`` is its position in ``images``). The first record of a batch also
    carries the batch's host writes while busy and its cycles from start to done."""
    im, ep = d.im, d.ep
    lanes = d.machine.lanes
    exp_layers, exp_classes, exp_dec = reference(im, ep, images)
    on = [ep.layers[k] for k in d.on]
    records, sim_s, logs = [], 0.0, []
    for b0 in range(0, len(images), MAX_BATCH):
        batch = images[b0:b0 + MAX_BATCH]
        img, layout = memory_image(im, ep, lanes, batch)
        out = accelerator.run_image(d.build, img, layout, d.machine)
        sim_s += out["seconds"]
        if out["error"] or out["timed_out"] or out["images_done"] != len(batch):
            logs.append(f"batch at image {b0}: error code {out['error']}, {out['images_done']}/{len(batch)} images "
                        f"done{', timed out' if out['timed_out'] else ''}")
        decisions = split_decisions(out["decisions"])
        for i in range(out["images_done"]):
            n = b0 + i
            rec = image_record(n, out["results"][i], decisions[i], (exp_layers[n], exp_classes[n], exp_dec), ep,
                               im.config.depth, d.costs, on)
            rec["host_writes_while_busy"] = out["host_writes_while_busy"] if i == 0 else 0
            rec["batch_cycles"] = out["cycles"] if i == 0 else 0
            records.append(rec)
    res = run_result(records, len(images))
    res.figures = {"sequencer": "rtl", "memory": memory_figures(d.machine)}
    res.simulator, res.build_seconds, res.sim_seconds, res.log = "verilator", 0.0, sim_s, "\n".join(logs)
    return res


def memory_figures(machine: Machine) -> dict:
    return {"protocol": "AXI4", "data_bits": 8 * machine.lanes, "bandwidth_bytes_per_cycle": machine.bandwidth,
            "latency_cycles": machine.latency}
