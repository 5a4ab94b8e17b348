"""Checks of the exit path in hardware against the fixed-point reference.

* ``verify_hls``: the hls4ml head (``hw.tools.hls``), one C-simulated project per candidate
  layer, on the golden model's real int8 tokens, against ``FixedHead.layer`` computed on the
  host from the same tokens (``model.exits.fixed.token_sums``).
* ``verify_comparator``: the whole test split's head outputs (saved by `qexit exits` in the
  exit path) replayed through the comparator RTL under cocotb, layer by layer per image until
  the comparator exits, as the layer sequencer feeds it. Every decision (exit bit, class,
  layer) is compared with ``model.exits.decision.decide``, and each image's exit layer and class
  with the evaluation's routing, so the report's numbers are the hardware's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from hw.rtl import comparator
from hw.rtl.head import head_design
from hw.tools import hls as head_hls
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.exits.decision import decide
from model.exits.exit_path import ExitPath
from model.exits.fixed import token_sums
from model.golden import Golden
from model.quantize import load_intmodel
from sim import simulator as runner, units as sim_units
from sim.packing import lanes_to_words
from sim.units import pack_fields, run_cases


def exit_tokens(im, ep: ExitPath, images: torch.Tensor, batch_size: int = 100) -> list[torch.Tensor]:
    """The golden model's int8 tokens (N, T, D) after each of the exit path's layers."""

    ep.check_width(im.config.width)
    if im.config.depth != ep.depth:
        raise QexitError(f"the exit path was made for a {ep.depth}-layer model but the IntModel has "
                         f"{im.config.depth} layers; rerun `qexit exits` on it")
    g = Golden(im)
    parts: list[list[torch.Tensor]] = [[] for _ in ep.layers]
    for i in range(0, len(images), batch_size):
        out = g.forward(images[i:i + batch_size])
        for j, lay in enumerate(ep.layers):
            parts[j].append(out.blocks[lay - 1])
    return [torch.cat(p) for p in parts]


@dataclass
class LayerCheck:
    layer: int
    sets: int = 0
    matched: int = 0
    total: int = 0
    first_mismatches: list = field(default_factory=list)
    compile_seconds: float = 0.0
    csim_seconds: float = 0.0
    evaluation_matched: int = 0      # hls: sets whose reference equals the exits' saved outputs

    def summary(self) -> dict:
        return {"layer": self.layer, "sets": self.sets, "matched": self.matched, "total": self.total,
                "mismatches": self.total - self.matched, "first_mismatches": self.first_mismatches[:3],
                "compile_seconds": round(self.compile_seconds, 2), "csim_seconds": round(self.csim_seconds, 3)}


def compare_head(layer: int, got: torch.Tensor, scores: torch.Tensor, gates: torch.Tensor) -> LayerCheck:
    """One layer's outputs (N, C + 1: scores, then the gate) against the reference."""
    want = torch.cat([scores, gates[:, None]], 1)
    res = LayerCheck(layer, len(want), total=want.numel())
    if got.shape != want.shape:
        res.first_mismatches = [{"error": f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"}]
        return res
    wrong = (got != want).nonzero().tolist()
    res.matched = res.total - len(wrong)
    res.first_mismatches = [{"set": i, "output": j, "got": int(got[i, j]), "expected": int(want[i, j])}
                            for i, j in wrong[:3]]
    return res


def verify_hls(ep: ExitPath, tokens: list[torch.Tensor], folder: Path, progress: bool = False,
               jobs: int | None = None) -> list[LayerCheck]:
    """Convert each layer's head into an hls4ml project under ``folder``, compile them
    (``jobs`` at a time), and C-simulate each on its tokens."""

    head_hls.check_gxx()
    models = [head_hls.build(ep.head, k, ep.tokens, folder / f"layer{lay:02d}", compile=False)
              for k, lay in enumerate(tqdm(ep.layers, desc="hls4ml convert", disable=not progress))]
    seconds = head_hls.compile_all(models, jobs)
    out = []
    for k, lay in enumerate(ep.layers):
        t = time.time()
        got = head_hls.predict(models[k], tokens[k])
        csim = time.time() - t
        scores, gates = ep.head.layer(k, *token_sums(tokens[k]))
        res = compare_head(lay, got, scores, gates)
        res.compile_seconds, res.csim_seconds = seconds[k], csim
        # the reference on these tokens against the head outputs `qexit exits` evaluated and
        # saved (the first images of the test split): fewer means another IntModel
        n = len(tokens[k])
        res.evaluation_matched = int(((scores == ep.test_scores[:n, k]).all(1) & (gates == ep.test_gates[:n, k])).sum())
        out.append(res)
    return out


def images_for(sets: int, layers: int) -> int:
    """Images whose tokens at every one of ``layers`` layers give at least ``sets`` token sets."""
    return max(1, math.ceil(sets / layers))


def test_tokens(ep: ExitPath, intmodel: Path, sets: int, layers: int) -> tuple[int, list[torch.Tensor]]:
    """(n, tokens): the golden model's tokens of the first n test images, n the fewest that give
    ``sets`` token sets over ``layers`` layers, at every exit layer (``exit_tokens``)."""

    if not Path(intmodel).is_file():
        raise QexitError(f"no IntModel at {intmodel}; write it with `qexit quantize` or pass --intmodel")
    n = images_for(sets, layers)
    if n > ep.test_scores.shape[0]:
        raise QexitError(f"--sets {sets} needs {n} test images; the exit path has {ep.test_scores.shape[0]}")
    im = load_intmodel(intmodel)
    return n, exit_tokens(im, ep, load_fashion_mnist("test").subset(n).images)


# --------------------------------------------------------------------------- the comparator

@dataclass
class ComparatorCheck:
    images: int
    decisions: int = 0
    matched: int = 0
    total: int = 0
    images_matched: int = 0          # exit layer and class equal the evaluation's
    passed: bool = False
    seconds: float = 0.0
    first_mismatches: list = field(default_factory=list)
    log: str = ""

    def summary(self) -> dict:
        return {"images": self.images, "decisions": self.decisions, "matched": self.matched, "total": self.total,
                "mismatches": self.total - self.matched, "images_matched": self.images_matched,
                "first_mismatches": self.first_mismatches[:5], "passed": self.passed,
                "sim_seconds": round(self.seconds, 1)}


def comparator_stream(ep: ExitPath, images: torch.Tensor) -> dict:
    """The decisions the sequencer feeds for ``images``: per image, the candidate layers in
    order up to and including the first exit (``decide``), all of them if none exits. Returns
    the decision rows (image, layer index, image by image) and their expected outputs."""
    k, c = len(ep.layers), ep.test_scores.shape[2]
    regs = torch.tensor([t for t, _ in ep.register_words()], dtype=torch.int64)
    cand = torch.tensor(ep.candidate)
    n = len(images)
    layer = torch.arange(k).repeat(n)
    exit_, cls = decide(ep.test_scores[images].reshape(-1, c), ep.test_gates[images].reshape(-1), layer, regs, cand)
    exit_, cls = exit_.reshape(n, k), cls.reshape(n, k)
    first = torch.where(exit_.any(1), exit_.int().argmax(1), k)
    img, lay = torch.nonzero(torch.arange(k)[None, :] <= first[:, None], as_tuple=True)
    return {"image": images[img], "layer": lay, "exit": exit_[img, lay], "class": cls[img, lay]}


def image_outcomes(stream: dict, ep: ExitPath, idx: torch.Tensor, exit_bits: torch.Tensor,
                   classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (``idx``): the exit index (K = full depth) and the class it leaves with, from a
    stream's decisions ``exit_bits`` and ``classes`` (the RTL's or the reference's)."""
    k = len(ep.layers)
    pos = {int(i): p for p, i in enumerate(idx.tolist())}
    exit_idx = torch.full((len(idx),), k, dtype=torch.int64)
    out_cls = ep.test_class[idx].clone()            # the full-depth class, for images that never exit
    for r in torch.nonzero(exit_bits).flatten().tolist():
        p = pos[int(stream["image"][r])]
        if exit_idx[p] == k:
            exit_idx[p] = int(stream["layer"][r])
            out_cls[p] = int(classes[r])
    return exit_idx, out_cls


def comparator_cases(ep: ExitPath, stream: dict, per_case: int = 2000) -> list[dict]:
    """The stream as ``sim.units`` cases: the threshold registers, then the decisions' beats."""

    k, c = len(ep.layers), ep.test_scores.shape[2]
    th = pack_fields([list(w) for w in ep.register_words()], comparator.THRESHOLD)
    cases = []
    rows = len(stream["image"])
    for a in range(0, rows, per_case):
        img, lay = stream["image"][a:a + per_case], stream["layer"][a:a + per_case]
        scores, gates = ep.test_scores[img, lay], ep.test_gates[img, lay]
        beats = [[int(scores[i, j]), int(gates[i]), int(lay[i]), int(j == c - 1)]
                 for i in range(len(img)) for j in range(c)]
        exit_, cls = stream["exit"][a:a + per_case], stream["class"][a:a + per_case]
        expected = exit_.long() | (cls << 1) | (lay << (1 + comparator.CLASS_BITS))
        cases.append({"ports": {"layers": k}, "rows": len(img), "loads": {"th_in": th},
                      "beats": pack_fields(beats, comparator.INP), "inputs": torch.tensor(beats),
                      "expected": expected.reshape(-1, 1)})
    return cases


def verify_comparator(ep: ExitPath, images: int | None = None, simulator: str | None = None,
                      folder: Path | None = None) -> ComparatorCheck:
    """Replay the first ``images`` test images (all by default) through the comparator RTL."""

    n = ep.test_scores.shape[0] if images is None else min(images, ep.test_scores.shape[0])
    if n < 1:
        raise QexitError(f"--images {images} must be at least 1")
    if len(ep.layers) > sim_units.COMPARATOR_MAX_LAYERS:
        raise QexitError(f"{len(ep.layers)} exit layers exceed the comparator's {sim_units.COMPARATOR_MAX_LAYERS}")
    idx = torch.arange(n)
    stream = comparator_stream(ep, idx)
    cases = comparator_cases(ep, stream)
    res = sim_units.run_unit("comparator", cases, simulator=simulator, folder=folder)
    out = ComparatorCheck(n, decisions=len(stream["image"]), matched=res.matched, total=res.total,
                          seconds=res.seconds, log=res.log)
    out.first_mismatches = res.mismatches
    if res.matched != res.total or not res.case_matched:
        return out
    # every decision word of the RTL equals the reference's, so the images' outcomes are the
    # reference's: check them against the evaluation's routing (what the exits report counted)
    exit_idx, cls = image_outcomes(stream, ep, idx, stream["exit"], stream["class"])
    same = (exit_idx == ep.test_exit[idx]) & (cls == ep.test_class[idx])
    out.images_matched = int(same.sum())
    out.passed = res.passed and out.images_matched == n
    if out.images_matched != n:
        bad = int(torch.nonzero(~same)[0])
        out.first_mismatches.append({"image": bad, "exit": int(exit_idx[bad]), "class": int(cls[bad]),
                                     "evaluation_exit": int(ep.test_exit[bad]),
                                     "evaluation_class": int(ep.test_class[bad])})
    return out


# --------------------------------------------------------------------------- the head as RTL

@dataclass
class HeadCheck(LayerCheck):
    cycles_predicted: int = 0
    cycles_measured: list = field(default_factory=list)       # per image without stalls
    dense_seconds: float = 0.0
    build_seconds: float = 0.0
    sim_seconds: float = 0.0
    log: str = ""

    @property
    def cycles_equal(self) -> bool:
        return bool(self.cycles_measured) and all(c == self.cycles_predicted for c in self.cycles_measured)

    def summary(self) -> dict:
        return {**super().summary(), "latency_cycles": self.cycles_predicted,
                "cycles_measured": sorted(set(self.cycles_measured)), "cycles_equal": self.cycles_equal,
                "dense_seconds": round(self.dense_seconds, 1), "build_seconds": round(self.build_seconds, 1),
                "sim_seconds": round(self.sim_seconds, 1)}


def head_cases(ep: ExitPath, k: int, tokens: torch.Tensor, lanes: int) -> list[dict]:
    """One case per image: its tokens as beats of ``lanes`` int8 for candidate ``k`` (the
    head's ``index`` port), and the expected output beats (score, gate, layer | last << 8) from
    ``FixedHead.layer`` on the host."""
    scores, gates = ep.head.layer(k, *token_sums(tokens))
    c = scores.shape[1]
    tail = torch.full((c,), k, dtype=torch.int64)
    tail[-1] |= 1 << 8
    return [{"ports": {"index": k}, "inputs": tokens[i].reshape(-1, lanes),
             "expected": torch.stack([scores[i], gates[i].expand(c), tail], 1)} for i in range(len(tokens))]


def verify_head(ep: ExitPath, tokens: list[torch.Tensor], layers: list[int], lanes: int = 8,
                simulator: str | None = None, folder: Path | None = None, progress: bool = False,
                macs: int | None = None) -> list[HeadCheck]:
    """Build the head RTL of the candidate indices in ``layers`` and run their tokens under
    cocotb: every output against the reference, and the cycles of every image without stalls
    (every other one) against ``head_cycles``. With ``macs`` one head (``MacDense``) serves
    them all, and the images take turns among the candidates; with ``macs`` None each
    candidate gets its own da4ml head."""

    out = {}
    groups = [[k] for k in layers] if macs is None else [sorted(set(layers))]
    for group in tqdm(groups, desc="head RTL", disable=not progress):
        dut, verilog, top, dense_s = head_design(ep, group, lanes, macs)
        b = runner.build(verilog, top, simulator=simulator)
        per_k = {k: head_cases(ep, k, tokens[k], lanes) for k in group}
        # the candidates take turns two images at a time (one without stalls, one with)
        order = [(k, i) for start in range(0, max(len(c) for c in per_k.values()), 2) for k in group
                 for i in (start, start + 1) if i < len(per_k[k])]
        cases = [per_k[k][i] for k, i in order]
        res = run_cases(b, top, cases, lambda c: lanes_to_words(c["inputs"], 8), 3, 32,
                        folder=None if folder is None else folder / top)
        for k in group:
            mine = [j for j, (kk, _) in enumerate(order) if kk == k]
            matched = sum(res.case_matched[j] for j in mine) if res.case_matched else 0
            chk = HeadCheck(ep.layers[k], len(mine), matched, sum(cases[j]["expected"].numel() for j in mine),
                            [x for x in res.mismatches if x["case"] in mine][:3],
                            cycles_predicted=dut.cycles, dense_seconds=dense_s, build_seconds=b.seconds,
                            sim_seconds=res.seconds, log=res.log)
            chk.cycles_measured = [res.cycles[j] for j in mine if j % 2 == 0 and j < len(res.cycles)]
            out[k] = chk
    return [out[k] for k in layers]
