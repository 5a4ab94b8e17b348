"""The exit path handed from `qexit exits` to the hardware steps: ``exit_path.pt``.

`qexit exits` (int8 mode, seed 0) writes it beside its report. It holds everything the exit
hardware needs and everything its checks compare with:

* the fixed-point head and gate (``model.exits.fixed.FixedHead``), one per candidate layer;
* ``layers``: the candidate layers (1-based, after pathological pruning), one head and one
  threshold register each;
* ``registers``: the comparator's threshold registers (int32), ``None`` where LCT switched the
  layer off (its ``candidate`` mask bit is 0);
* the test split as the evaluation saw it: the head's class scores and gates per candidate
  layer, and per image the exit index it routed (``len(layers)`` = full depth) and the class.

`qexit hls`, `qexit verify head` and `qexit verify comparator` read it with ``load``, which
checks it whole before any work and names what is wrong in one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from model import intops
from model.errors import QexitError
from model.exits.fixed import FixedHead

FORMAT = 1
FILENAME = "exit_path.pt"


@dataclass
class ExitPath:
    head: FixedHead
    layers: list[int]               # 1-based candidate layers, one head each
    registers: list[int | None]     # threshold register per candidate; None = switched off
    depth: int                      # the backbone's layers (layer ``depth`` is full depth)
    tokens: int                     # tokens per image ([CLS] + patches)
    test_scores: torch.Tensor       # (N, K, C) int32 class scores
    test_gates: torch.Tensor        # (N, K) int32 gate pre-activations
    test_exit: torch.Tensor         # (N,) exit index (K = full depth)
    test_class: torch.Tensor        # (N,) the class the image leaves with
    intmodel_digest: str | None = None   # the IntModel file the tokens come from, when known

    @property
    def candidate(self) -> list[bool]:
        return [r is not None for r in self.registers]

    def register_words(self) -> list[tuple[int, bool]]:
        """(threshold, candidate) per layer, as the comparator's ``th_in`` takes them."""
        return [(0 if r is None else int(r), r is not None) for r in self.registers]

    def check_width(self, width: int, what: str = "the IntModel") -> None:
        if self.head.width != width:
            raise QexitError(f"the exit head was built for width {self.head.width} but {what} has width {width}; "
                             f"rerun `qexit exits` on this model")


def save(path: Path | str, ep: ExitPath) -> None:
    blob = {"format": FORMAT, "head": ep.head.state(), "layers": list(ep.layers), "registers": list(ep.registers),
            "depth": ep.depth, "tokens": ep.tokens, "test_scores": ep.test_scores.to(torch.int32),
            "test_gates": ep.test_gates.to(torch.int32),
            "test_exit": ep.test_exit, "test_class": ep.test_class, "intmodel_digest": ep.intmodel_digest}
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load(path: Path | str) -> ExitPath:
    """Read and check an exit path; any defect is one QexitError line."""
    path = Path(path)
    if not path.is_file():
        raise QexitError(f"no exit path at {path}; write one with `qexit exits` (int8 mode) or pass --exit-path")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"format {blob.get('format') if isinstance(blob, dict) else type(blob).__name__}")
        head = FixedHead.from_state(blob["head"])
        ep = ExitPath(head, [int(x) for x in blob["layers"]],
                      [None if r is None else int(r) for r in blob["registers"]], int(blob["depth"]),
                      int(blob["tokens"]), blob["test_scores"].long(), blob["test_gates"].long(), blob["test_exit"].long(),
                      blob["test_class"].long(), blob.get("intmodel_digest"))
    except QexitError:
        raise
    except Exception as err:
        raise QexitError(f"{path} is not a readable exit path ({type(err).__name__}: {err}); "
                         f"rewrite it with `qexit exits`") from None
    check(ep, str(path))
    return ep


def check(ep: ExitPath, name: str = "exit path") -> None:
    """Shapes and ranges: every layer exists, one head and one register per layer, and the
    head's constants fit the widths its kernels state."""
    k = len(ep.layers)
    bad = [lay for lay in ep.layers if not 1 <= lay < ep.depth]
    if bad:
        raise QexitError(f"{name}: exit layers {bad} do not exist in a {ep.depth}-layer model "
                         f"(candidates are 1..{ep.depth - 1}); rewrite it with `qexit exits`")
    if k == 0 or len(ep.head.layers) != k or len(ep.registers) != k:
        raise QexitError(f"{name}: {len(ep.head.layers)} heads and {len(ep.registers)} threshold registers for "
                         f"{k} exit layers; rewrite it with `qexit exits`")
    if sorted(set(ep.layers)) != ep.layers:
        raise QexitError(f"{name}: exit layers {ep.layers} must be distinct and in order")
    for r in ep.registers:
        if r is not None and not intops.INT32_MIN <= r <= intops.INT32_MAX:
            raise QexitError(f"{name}: threshold register {r} does not fit int32")
    d, h, e, c = ep.head.width, ep.head.hidden, ep.head.embed_dim, ep.head.classes
    for i, lay in enumerate(ep.head.layers):
        p = lay.params
        shapes = {"w1": (h, d), "b1": (h,), "w2": (e, h), "b2": (e,), "ln_g": (d,), "ln_b": (d,)}
        for key, shape in shapes.items():
            if tuple(p[key].shape) != shape:
                raise QexitError(f"{name}: layer {ep.layers[i]}'s {key} has shape {tuple(p[key].shape)}, expected "
                                 f"{shape} (a head from another model width?)")
        for key in ("w1", "w2"):
            intops.check_int8(p[key], f"{name}: {key}")
        for m, s in (("m_a", "sh_a"), ("m1", "sh1"), ("m2", "sh2"), ("m_z", "sh_z")):
            intops.check_multiplier(p[m], p[s], f"{name}: {m}")
        intops.check_layernorm_params(p["ln_g"], p["ln_b"], p["ln_shift"], p["ln_eps"], f"{name}: layernorm")
    intops.check_int8(ep.head.class_t, f"{name}: class embeddings")
    intops.check_softmax_params(**ep.head.softmax, name=f"{name}: softmax")
    n = ep.test_scores.shape[0]
    if tuple(ep.test_scores.shape) != (n, k, c) or tuple(ep.test_gates.shape) != (n, k) \
            or tuple(ep.test_exit.shape) != (n,) or tuple(ep.test_class.shape) != (n,):
        raise QexitError(f"{name}: the test split's scores {tuple(ep.test_scores.shape)}, gates "
                         f"{tuple(ep.test_gates.shape)} and exits do not match {k} layers and {c} classes")
