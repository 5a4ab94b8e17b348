"""The exit head in hardware against the fixed-point reference (``model.exits.fixed``).

* ``verify_hls``: the hls4ml head (``hw.tools.hls``), one C-simulated project per candidate
  layer, on the golden model's real int8 tokens, against ``FixedHead.layer`` computed on the
  host from the same tokens (``model.exits.fixed.token_sums``).
* ``verify_head``: the head as RTL (``hw.rtl.head``) under cocotb on the same tokens, one
  image a case. An image's output is C beats (score, gate, layer | last << 8): every beat must
  equal the reference's, and the figures count the distinct integers it checks, its C class
  scores and its gate (the gate rides on every beat, the layer and last flag are the stream's
  framing). Every image without random back-pressure (every other one) must take the head's
  cycle count (``hw.rtl.head.head_cycles``) from its first token beat to its last output
  beat; each image's cycles are kept, with or without back-pressure.

Both return one ``sim.result.Result`` per candidate layer.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from hw.rtl.head import head_design
from hw.tools import hls as head_hls
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.exits.exit_path import ExitPath
from model.exits.fixed import token_sums
from model.golden import Golden
from model.quantize import load_intmodel
from sim import simulator as runner, units as sim_units
from sim.packing import lanes_to_words
from sim.result import Result

FIELDS = ("score", "gate", "tag")          # the fields of one output beat of the RTL head


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


# --------------------------------------------------------------------------- hls4ml

def compare_head(layer: int, got: torch.Tensor, scores: torch.Tensor, gates: torch.Tensor) -> Result:
    """One layer's hls4ml outputs (N, C + 1: scores, then the gate) against the reference."""
    want = torch.cat([scores, gates[:, None]], 1)
    res = Result("hls", total=want.numel(), figures={"layer": layer, "sets": len(want)})
    if got.shape != want.shape:
        res.first_mismatches = [{"error": f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"}]
        return res
    wrong = (got != want).nonzero().tolist()
    res.matched = res.total - len(wrong)
    res.passed = not wrong
    res.first_mismatches = [{"set": i, "output": j, "got": int(got[i, j]), "expected": int(want[i, j])}
                            for i, j in wrong[:3]]
    return res


def verify_hls(ep: ExitPath, tokens: list[torch.Tensor], folder: Path, progress: bool = False,
               jobs: int | None = None) -> list[Result]:
    """Convert each layer's head into an hls4ml project under ``folder``, compile them
    (``jobs`` at a time), and C-simulate each on its tokens. Figures: ``layer``, ``sets``,
    ``compile_seconds``, ``csim_seconds`` and ``evaluation_matched`` (the sets whose reference
    equals the head outputs `qexit exits` evaluated and saved, for the first images of the test
    split: fewer means another IntModel)."""
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
        n = len(tokens[k])
        same = (scores == ep.test_scores[:n, k]).all(1) & (gates == ep.test_gates[:n, k])
        res.figures.update(compile_seconds=round(seconds[k], 2), csim_seconds=round(csim, 3),
                           evaluation_matched=int(same.sum()))
        out.append(res)
    return out


# --------------------------------------------------------------------------- the head as RTL

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


def head_integers(got: torch.Tensor, expected: torch.Tensor) -> tuple[int, int]:
    """(matched, total) of the distinct integers one image's C output beats carry: its C class
    scores, and its gate, which is matched when every beat carries it right."""
    scores = int((got[:, 0] == expected[:, 0]).sum())
    gate = int(bool((got[:, 1] == expected[:, 1]).all()))
    return scores + gate, expected.shape[0] + 1


def head_result(layer: int, images: list[tuple[int, dict, torch.Tensor | None, int | None, bool]],
                latency: int, out: sim_units.Outputs, **figures) -> Result:
    """One candidate layer's images, each (image, case, its output values or None, its cycles,
    whether it ran with random back-pressure), as a result with one record per image: its
    distinct integers matched (``head_integers``), whether every output beat matched, its
    cycles. The cycles of the images without back-pressure are compared with ``latency``."""
    res = Result("head", simulator=out.simulator, build_seconds=out.build_seconds, sim_seconds=out.run.seconds)
    exact = True
    for image, case, got, cycles, stalled in sorted(images, key=lambda x: x[0]):
        want = case["expected"]
        if got is None:
            matched, total = 0, head_integers(want, want)[1]
            exact = False
        else:
            matched, total = head_integers(got, want)
            wrong = (got != want).nonzero().tolist()
            exact = exact and not wrong
            res.first_mismatches += [{"image": image, "beat": b, "field": FIELDS[f], "got": int(got[b, f]),
                                      "expected": int(want[b, f])} for b, f in wrong[:3]]
        res.matched += matched
        res.total += total
        res.records.append({"image": image, "matched": matched, "total": total, "cycles": cycles,
                            "stalled": stalled})
    timed = [r["cycles"] for r in res.records if not r["stalled"]]
    measured = [c for c in timed if c is not None]
    res.cycles_measured, res.cycles_predicted = sum(measured), latency * len(timed)
    cycles_equal = bool(timed) and all(c == latency for c in timed)
    res.figures = {"layer": layer, "sets": len(images), "latency_cycles": latency, "cycles_equal": cycles_equal,
                   **figures}
    res.passed = out.run.passed and exact and res.matched == res.total and cycles_equal
    res.log = "" if res.passed else runner.log_tail(out.run)
    return res


def verify_head(ep: ExitPath, tokens: list[torch.Tensor], layers: list[int], lanes: int = 8,
                simulator: str | None = None, folder: Path | None = None, progress: bool = False,
                macs: int | None = None) -> list[Result]:
    """Build the head RTL of the candidate indices in ``layers`` and run their tokens under
    cocotb (module docstring): one result per candidate, in the order of ``layers``. With
    ``macs`` one head (``MacDense``) serves them all, and the images take turns among the
    candidates; with ``macs`` None each candidate gets its own da4ml head."""
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
        res = sim_units.simulate(b, cases, lambda c: lanes_to_words(c["inputs"], 8), 3, 32,
                                 folder=None if folder is None else folder / top)
        for k in group:
            images = [(i, cases[j], None if res.values is None else res.values[j], res.cycles[j], res.stalled[j])
                      for j, (kk, i) in enumerate(order) if kk == k]
            out[k] = head_result(ep.layers[k], images, dut.cycles, res, dense_seconds=round(dense_s, 1))
    return [out[k] for k in layers]
