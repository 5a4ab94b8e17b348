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
  ``Costs.route`` for the image's exit.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hw import cost, program
from hw.cost import tables
from hw.cost.schedule import IDEAL, WeightSource
from hw.rtl import comparator, emit
from hw.rtl.head import MacDense, dense_verilog, head_dense_plan
from hw.rtl.isa import desc_layout
from model.errors import QexitError
from model.exits.decision import decide
from model.exits.exit_path import ExitPath
from model.exits.fixed import token_sums
from model.golden import Golden
from model.quantize import IntModel
from sim import simulator as runner
from sim.block import harness_sizes, read_taps, segment_job
from sim.harness import RunHarness, source_ports
from sim.units import pack_fields

CLASS_BITS, LAYER_SHIFT = 15, 16          # comparator.OUT: exit | cls << 1 | layer << 16


@dataclass
class RunResult:
    images: int
    exit_layers: list[int]                # per image: the backbone layer it left at (depth = full)
    expected_layers: list[int]
    classes: list[int]
    expected_classes: list[int]
    decisions_matched: int
    decisions: int
    cycles_measured: list[int]
    cycles_predicted: list[int]
    build_seconds: float = 0.0
    sim_seconds: float = 0.0
    log: str = ""
    records: list = field(default_factory=list)

    @property
    def matched(self) -> int:
        return sum(a == b and c == d for a, b, c, d in zip(self.exit_layers, self.expected_layers, self.classes,
                                                           self.expected_classes))

    @property
    def passed(self) -> bool:
        return (len(self.exit_layers) == self.images and self.matched == self.images
                and self.decisions_matched == self.decisions and self.cycles_measured == self.cycles_predicted)

    def summary(self) -> dict:
        return {"images": self.images, "matched": self.matched, "total": self.images,
                "decisions_matched": self.decisions_matched, "decisions": self.decisions,
                "cycles_measured": sum(self.cycles_measured), "cycles_predicted": sum(self.cycles_predicted),
                "cycles_equal": self.cycles_measured == self.cycles_predicted,
                "exit_layers": self.exit_layers, "passed": self.passed,
                "build_seconds": round(self.build_seconds, 1), "sim_seconds": round(self.sim_seconds, 1)}


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
    dense layers): one ``hw.rtl.head.MacDense(macs)`` head for every enabled candidate, or with
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
    lanes: int
    source: WeightSource
    plan: object
    named: dict
    layout: object
    jobs: dict
    build: object
    costs: object
    on: list


def prepare(im: IntModel, ep: ExitPath, lanes: int = 8, source: WeightSource = IDEAL, simulator: str | None = None,
            macs: int | None = None) -> RunDesign:
    """Generate and build the run harness for ``im`` and ``ep`` (the heads' dense layers on
    ``macs`` multipliers, ``hw.rtl.head.MacDense``, or da4ml's when None)."""

    ep.check_width(im.config.width)
    im.require_uniform8("the early-exit RTL run")
    plan, named, cfg, layout, heads = run_design(im, ep, lanes, macs)
    jobs = {name: segment_job(name, seg, im, plan, layout, source) for name, seg in named.items()}
    harness = RunHarness(cfg, harness_sizes(list(jobs.values())), ep.head, heads, ep.tokens, len(ep.layers))
    top = f"qexit_run_{lanes}x{lanes}"
    verilog = emit.to_verilog(harness, top) + "\n" + dense_verilog(d for _, d in heads)
    b = runner.build(verilog, top, simulator=simulator)
    machine = cost.Machine(lanes, source.bandwidth, source.latency)
    costs = cost.build(im, machine, tables.load(), {ep.layers[k]: d for ks, d in heads for k in ks}, ep.head)
    return RunDesign(im, ep, lanes, source, plan, named, layout, jobs, b, costs, enabled(ep))


def verify_run(im: IntModel, ep: ExitPath, images: torch.Tensor, lanes: int = 8, source: WeightSource = IDEAL,
               simulator: str | None = None, folder: Path | None = None, macs: int | None = None) -> RunResult:
    """Run ``images`` through the early-exit RTL and check them (module docstring); the heads'
    dense layers on ``macs`` multipliers (``hw.rtl.head.MacDense``), or da4ml's when None."""
    if len(images) == 0:
        raise QexitError("no images to run; give --images >= 1")
    return run_images(prepare(im, ep, lanes, source, simulator, macs), images, folder)


def run_images(d: RunDesign, images: torch.Tensor, folder: Path | None = None) -> RunResult:
    """Run ``images`` through a prepared run and check them against the references."""

    im, ep, lanes, plan, jobs = d.im, d.ep, d.lanes, d.plan, d.jobs
    k_of = {ep.layers[k]: k for k in d.on}
    embeds = [segment_job("embed", d.named["embed"], im, plan, d.layout, d.source, img) for img in images]
    none = len(ep.layers)
    ports = source_ports(d.source)
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
    out = RunResult(len(images), [], exp_layers, [], exp_classes, 0, 0, [], [], d.build.seconds, sim_s)
    for n, g in enumerate(got):
        layer, cls = im.config.depth, None
        for dec in g["decisions"]:
            k = dec["sel"]
            ex, c = bool(dec["word"] & 1), (dec["word"] >> 1) & (2 ** CLASS_BITS - 1)
            out.decisions += 1
            out.decisions_matched += (ex, c) == exp_dec.get((n, k)) and (dec["word"] >> LAYER_SHIFT) == k
            if ex:
                layer, cls = ep.layers[k], c
        if cls is None and g["trace"]:
            taps = read_taps(jobs["head"], g["trace"], lanes)
            cls = int(taps["logits"].reshape(-1)[:plan.classes].argmax())
        out.exit_layers.append(layer)
        out.classes.append(-1 if cls is None else cls)
        measured = sum(s["cycles"] for s in g["segments"]) + sum(x["t_dec"] - x["t_done"] + 1 for x in g["decisions"])
        out.cycles_measured.append(measured)
        route = d.costs.route(None if layer == im.config.depth else layer, [ep.layers[k] for k in d.on])
        out.cycles_predicted.append(d.costs.cycles(route))
        out.records.append({"image": n, "segments": g["segments"], "decisions": g["decisions"]})
    out.log = log
    return out
