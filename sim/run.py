"""The early-exit run in RTL: the layer engine runs the model layer by layer on
real test images; after each candidate layer whose exit is on, its exit head (``ExitHead``)
takes the layer's tokens from the engine's tap and the exit comparator decides; on ``exit`` the
sequencer (the cocotb testbench, ``sim/tb/run.py``) ends the image. Harness:
``sim.harness.RunHarness``.

Checked per image, against references computed on the host on their own:

* the exit layer and class: the golden model's tokens, ``FixedHead.layer`` and
  ``model.exits.decision.decide`` with the exit path's threshold registers (an image that never
  exits takes the golden model's logits' class; the RTL's comes from its final head);
* every decision word (exit, class, layer) at every candidate the image reached;
* the total cycles, pixels to decision, against ``hw.cost``: the sum of the segments' start to
  done counts, plus, after each candidate, the cycles from its segment's ``done`` to the
  sequencer acting on the decision (read from the RTL's own counters), must equal
  ``Costs.route`` for the reference's exit.

``run_images`` returns a ``sim.result.Result`` with one record per image (``image_record``);
``summary`` lists its figures for a report.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hw import cost, program
from hw.cost import Machine, tables
from hw.rtl import comparator, emit
from hw.rtl.dense import MacDense, dense_verilog, head_dense_plan
from hw.rtl.isa import desc_layout
from model.errors import QexitError
from model.exits.decision import decide
from model.exits.exit_path import ExitPath
from model.exits.fixed import token_sums
from model.golden import Golden
from model.quantize import IntModel
from sim import simulator as runner
from sim.block import harness_sizes, read_taps, segment_job
from sim.harness import RunHarness, check_machine, source_ports
from sim.result import Result
from sim.units import pack_fields

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


def enabled(ep: ExitPath) -> list[int]:
    """Candidate indices whose exit is on (their heads run)."""
    return [k for k, r in enumerate(ep.registers) if r is not None]


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


def run_design(im: IntModel, ep: ExitPath, lanes: int, macs: int | None):
    """(plan, segments by name, engine config, layout, heads): the heads as (candidate indices,
    dense layers): one ``hw.rtl.dense.MacDense(macs)`` head for every enabled candidate, or with
    ``macs`` None one da4ml head each."""
    plan, segs = program.model_program(im, lanes, tap=False)
    on = enabled(ep)
    taps = {ep.layers[k] for k in on}
    named = {"embed": segs[0]}
    for i in range(1, im.config.depth + 1):
        named[f"b{i - 1}"] = program.layer_segment(plan, im, i - 1, tap=True) if i in taps else segs[i]
    named["head"] = segs[-1]
    cfg = program.engine_config(plan, list(named.values()))
    heads = [(on, MacDense(macs))] if macs is not None else [([k], head_dense_plan(ep, k, None)) for k in on]
    return plan, named, cfg, desc_layout(cfg), heads


@dataclass
class RunDesign:
    """A built early-exit run: the program's segment jobs, the simulator build of the harness
    and the cost model that predicts its cycles. ``run_images`` runs images through it; build
    it once (``prepare``) and run as many batches as needed."""
    im: IntModel
    ep: ExitPath
    machine: Machine
    plan: object
    named: dict
    layout: object
    jobs: dict
    build: object
    costs: object
    on: list


def prepare(im: IntModel, ep: ExitPath, machine: Machine, simulator: str | None = None,
            macs: int | None = None) -> RunDesign:
    """Generate and build the run harness for ``im`` and ``ep`` on ``machine`` (its L x L array,
    its weight stream), the heads' dense layers on ``macs`` multipliers
    (``hw.rtl.dense.MacDense``), or da4ml's when None."""
    lanes = check_machine(machine, square=True).lanes
    ep.check_width(im.config.width)
    im.require_uniform8("the early-exit RTL run")
    plan, named, cfg, layout, heads = run_design(im, ep, lanes, macs)
    jobs = {name: segment_job(name, seg, im, plan, layout, machine.source) for name, seg in named.items()}
    harness = RunHarness(cfg, harness_sizes(list(jobs.values())), ep.head, heads, ep.tokens, len(ep.layers))
    top = f"qexit_run_{lanes}x{lanes}"
    verilog = emit.to_verilog(harness, top) + "\n" + dense_verilog(d for _, d in heads)
    b = runner.build(verilog, top, simulator=simulator)
    costs = cost.build(im, machine, tables.load(), {ep.layers[k]: d for ks, d in heads for k in ks}, ep.head)
    return RunDesign(im, ep, machine, plan, named, layout, jobs, b, costs, enabled(ep))


def verify_run(im: IntModel, ep: ExitPath, images: torch.Tensor, machine: Machine, simulator: str | None = None,
               folder: Path | None = None, macs: int | None = None) -> Result:
    """Run ``images`` through the early-exit RTL on ``machine`` and check them (module
    docstring); the heads' dense layers on ``macs`` multipliers (``hw.rtl.dense.MacDense``), or
    da4ml's when None."""
    if len(images) == 0:
        raise QexitError("no images to run; give --images >= 1")
    return run_images(prepare(im, ep, machine, simulator, macs), images, folder)


def image_record(n: int, got: dict, reference: tuple[int, int, dict], ep: ExitPath, depth: int, on: list[int],
                 costs, final_class) -> dict:
    """Image ``n``'s record: what the RTL did (``got``: its segments, its decision words, the
    trace of its final head) against the ``reference`` (exit layer, class, every decision (n,
    k) -> (exit, class)). Its cycles, from the RTL's counters, against the cost model's for the
    reference's route (``costs.route`` of the reference's exit layer, the candidate layers
    ``on``), so an image the RTL routes otherwise shows in its cycles as well; ``final_class``
    reads the class from the final head's trace."""
    exp_layer, exp_class, exp_dec = reference
    layer, cls, decisions, matched = depth, None, 0, 0
    for dec in got["decisions"]:
        k = dec["sel"]
        ex, c = bool(dec["word"] & 1), (dec["word"] >> 1) & (2 ** CLASS_BITS - 1)
        decisions += 1
        matched += int((ex, c) == exp_dec.get((n, k)) and (dec["word"] >> LAYER_SHIFT) == k)
        if ex:
            layer, cls = ep.layers[k], c
    if cls is None and got["trace"]:
        cls = final_class(got["trace"])
    measured = sum(s["cycles"] for s in got["segments"]) + sum(x["t_dec"] - x["t_done"] + 1 for x in got["decisions"])
    route = costs.route(None if exp_layer == depth else exp_layer, on)
    return {"image": n, "exit_layer": layer, "expected_layer": exp_layer, "class": -1 if cls is None else cls,
            "expected_class": exp_class, "decisions": decisions, "decisions_matched": matched,
            "cycles_measured": measured, "cycles_predicted": costs.cycles(route)}


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
                  and all(r["cycles_measured"] == r["cycles_predicted"] for r in records))
    return res


def summary(result: Result) -> dict:
    """A run's headline figures (``qexit verify run``'s summary.json), from its per-image records:
    the counts, the decisions, the cycles summed and image by image, and per image its test
    index, exit layer and class, and the reference's."""
    r = result.records
    return {"images": result.total, "matched": result.matched, "total": result.total,
            "decisions_matched": sum(x["decisions_matched"] for x in r), "decisions": sum(x["decisions"] for x in r),
            "cycles_measured": result.cycles_measured, "cycles_predicted": result.cycles_predicted,
            "cycles_equal": all(x["cycles_measured"] == x["cycles_predicted"] for x in r),
            "exit_layers": [x["exit_layer"] for x in r], "passed": result.passed,
            "test_indices": [x["image"] for x in r], "expected_layers": [x["expected_layer"] for x in r],
            "classes": [x["class"] for x in r], "expected_classes": [x["expected_class"] for x in r],
            "cycles_per_image_measured": [x["cycles_measured"] for x in r],
            "cycles_per_image_predicted": [x["cycles_predicted"] for x in r],
            "logs": [result.log] if result.log else []}


def run_images(d: RunDesign, images: torch.Tensor, folder: Path | None = None) -> Result:
    """Run ``images`` through a prepared run and check them against the references: a result
    with one record per image (``image_record``; ``image`` is its position in ``images``)."""
    im, ep, plan, jobs = d.im, d.ep, d.plan, d.jobs
    lanes, source = d.machine.lanes, d.machine.source
    k_of = {ep.layers[k]: k for k in d.on}
    embeds = [segment_job("embed", d.named["embed"], im, plan, d.layout, source, img) for img in images]
    none = len(ep.layers)
    ports = source_ports(source)
    spec = {"layers": none, "thresholds": pack_fields([list(w) for w in ep.register_words()], comparator.THRESHOLD),
            "images": []}
    for e in embeds:
        seq = [e.case("embed", ports, sel=none, decide=False, final=False)]
        for i in range(1, im.config.depth + 1):
            k = k_of.get(i)
            seq.append(jobs[f"b{i - 1}"].case(f"b{i - 1}", ports, sel=none if k is None else k, decide=k is not None,
                                              final=False))
        seq.append(jobs["head"].case("head", ports, sel=none, decide=False, final=True))
        spec["images"].append(seq)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="qexit-run-") as tmp:     # runs of one build may overlap
        cases, results = Path(tmp) / "run.pt", Path(tmp) / "results.pt"
        torch.save(spec, cases)
        res = runner.run(d.build, "sim.tb.run", testcase="run", folder=folder or Path(tmp) / "sim",
                         settings={"QEXIT_TB_CASES": str(cases), "QEXIT_TB_RESULTS": str(results)})
        got = torch.load(results, weights_only=False) if results.exists() else []
        log = runner.log_tail(res) if not res.passed or len(got) != len(images) else ""
    sim_s = time.time() - t0

    exp_layers, exp_classes, exp_dec = reference(im, ep, images)
    on = [ep.layers[k] for k in d.on]

    def final_class(trace: list[int]) -> int:
        return int(read_taps(jobs["head"], trace, lanes)["logits"].reshape(-1)[:plan.classes].argmax())

    records = [image_record(n, g, (exp_layers[n], exp_classes[n], exp_dec), ep, im.config.depth, on, d.costs,
                            final_class) for n, g in enumerate(got)]
    out = run_result(records, len(images))
    out.simulator, out.build_seconds, out.sim_seconds, out.log = d.build.simulator, d.build.seconds, sim_s, log
    return out
