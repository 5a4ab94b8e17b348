"""The exit comparator's RTL on the test split: the whole split's head outputs (saved by
`qexit exits` in the exit path) replayed through the comparator under cocotb, layer by layer
per image until the comparator exits, as the layer sequencer feeds it.

Every decision word the RTL writes (exit bit, class, layer) is compared with
``model.exits.decision.decide``; then each image's exit layer and class, read from the RTL's
own words, with the evaluation's routing, so the report's numbers are the hardware's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from hw.rtl import comparator
from model.errors import QexitError
from model.exits.decision import decide
from model.exits.exit_path import ExitPath
from sim import units as sim_units
from sim.result import Result
from sim.units import pack_fields


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
                   classes: torch.Tensor, layers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (``idx``): the exit index (K = full depth) and the class it leaves with, from a
    stream's decisions ``exit_bits``, ``classes`` and ``layers`` (candidate indices; default:
    the stream's own), the RTL's or the reference's."""
    k = len(ep.layers)
    layers = stream["layer"] if layers is None else layers
    pos = {int(i): p for p, i in enumerate(idx.tolist())}
    exit_idx = torch.full((len(idx),), k, dtype=torch.int64)
    out_cls = ep.test_class[idx].clone()            # the full-depth class, for images that never exit
    for r in torch.nonzero(exit_bits).flatten().tolist():
        p = pos[int(stream["image"][r])]
        if exit_idx[p] == k:
            exit_idx[p] = int(layers[r])
            out_cls[p] = int(classes[r])
    return exit_idx, out_cls


def decision_fields(words: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decision words (``comparator.OUT``: exit | class << 1 | layer << 1 + CLASS_BITS) → (exit
    bits, classes, layers)."""
    words = words & 0xFFFFFFFF
    return ((words & 1).bool(), (words >> 1) & ((1 << comparator.CLASS_BITS) - 1),
            words >> (1 + comparator.CLASS_BITS))


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
                      folder: Path | None = None) -> Result:
    """Replay the first ``images`` test images (all by default) through the comparator RTL:
    matched and total count decision words; the figures ``images``, ``decisions`` and
    ``images_matched`` (images whose exit layer and class, from the RTL's words, equal the
    evaluation's)."""
    n = ep.test_scores.shape[0] if images is None else min(images, ep.test_scores.shape[0])
    if n < 1:
        raise QexitError(f"--images {images} must be at least 1")
    if len(ep.layers) > sim_units.COMPARATOR_MAX_LAYERS:
        raise QexitError(f"{len(ep.layers)} exit layers exceed the comparator's {sim_units.COMPARATOR_MAX_LAYERS}")
    idx = torch.arange(n)
    stream = comparator_stream(ep, idx)
    cases = comparator_cases(ep, stream)
    unit = sim_units.UNITS["comparator"]
    out = sim_units.simulate(sim_units.build_unit("comparator", simulator), cases, unit.beats, unit.out_lanes,
                             unit.out_bits, folder=folder)
    res = sim_units.compare(cases, out, "comparator")
    images_matched = 0
    if out.values is not None:
        exit_bits, classes, layers = decision_fields(torch.cat([v.reshape(-1) for v in out.values]))
        exit_idx, cls = image_outcomes(stream, ep, idx, exit_bits, classes, layers)
        same = (exit_idx == ep.test_exit[idx]) & (cls == ep.test_class[idx])
        images_matched = int(same.sum())
        if images_matched != n:
            bad = int(torch.nonzero(~same)[0])
            res.first_mismatches.append({"image": bad, "exit": int(exit_idx[bad]), "class": int(cls[bad]),
                                         "evaluation_exit": int(ep.test_exit[bad]),
                                         "evaluation_class": int(ep.test_class[bad])})
    res.figures = {"images": n, "decisions": len(stream["image"]), "images_matched": images_matched}
    res.passed = res.passed and images_matched == n
    return res
