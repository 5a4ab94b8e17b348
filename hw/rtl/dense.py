"""The exit head's dense layers (fc1, fc2 and the class scores), built one of two ways:

* ``MacDense(macs)``: ``macs`` int8 multipliers and an adder tree, the weights in a ROM, one
  word of ``macs`` weights a cycle (N ceil(K / macs) cycles a layer, plus a short pipeline);
* da4ml constant-matrix adder graphs (``dense_rtl``): da4ml traces ``x @ W + b`` on int8
  inputs, in blocks of ``DENSE_BLOCK`` output columns, and writes pipelined Verilog; solved
  layers are cached under ``CACHE_DIR``.

``hw.rtl.head.ExitHead`` instantiates them; ``dense_cycles`` gives their cycles to the head's
cycle count and the cost model.
"""
from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import da4ml
import numpy as np
import torch
from da4ml.codegen import VerilogModel
from da4ml.trace import FixedVariableArrayInput, comb_trace
from da4ml.trace.ops import quantize

from hw.rtl.gemm import Requantizer
from model import intops
from model.errors import QexitError
from model.exits.fixed import FixedHead

DENSE_BLOCK = 8                     # output columns per da4ml solve (its solver is superlinear)
SOLVER = {"search_all_decompose_dc": False}
LATENCY_CUTOFF = 8                  # adder levels per pipeline stage of a dense layer
CACHE_DIR = Path(".cache/qexit/da4ml")


# --------------------------------------------------------------------------- da4ml dense layers

@dataclass(frozen=True)
class DenseRTL:
    """One da4ml constant-matrix layer: ``module`` (the wrapper's name) maps int8 inputs packed
    LSB first (``model_inp``) to outputs of ``out_bits`` bits each (``model_out``), two's
    complement, in units of 2**``lsb``, ``latency`` clock edges after the input."""
    module: str
    n_in: int
    n_out: int
    out_bits: int
    lsb: int
    latency: int
    sources: dict            # file name -> Verilog text


def dense_rtl(name: str, w: torch.Tensor, b: torch.Tensor | None, cache_dir: Path | None = CACHE_DIR) -> DenseRTL:
    """da4ml Verilog of y = W x + b for int8 x: ``w`` (N, K) int8, ``b`` (N,) int or None.
    Cached on disk by the weights, the options and the da4ml version (a solve takes seconds)."""

    w_np = w.to(torch.int64).numpy()
    b_np = None if b is None else b.to(torch.int64).numpy()
    key = hashlib.sha256(json.dumps([name, w_np.tolist(), None if b_np is None else b_np.tolist(), SOLVER,
                                     DENSE_BLOCK, LATENCY_CUTOFF, da4ml.__version__]).encode()).hexdigest()[:16]
    folder = None if cache_dir is None else Path(cache_dir) / f"{name}-{key}"
    if folder is not None and (folder / "dense.json").is_file():
        meta = json.loads((folder / "dense.json").read_text())
        return DenseRTL(**{**meta, "sources": {f: (folder / f).read_text() for f in meta["sources"]}})
    out = _solve_dense(name, w_np, b_np)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for f, text in out.sources.items():
            (folder / f).write_text(text)
        meta = {k: getattr(out, k) for k in ("module", "n_in", "n_out", "out_bits", "lsb", "latency")}
        (folder / "dense.json").write_text(json.dumps({**meta, "sources": sorted(out.sources)}))
    return out


def _solve_dense(name: str, w: np.ndarray, b: np.ndarray | None) -> DenseRTL:

    n_out, n_in = w.shape
    kernel = w.T.astype(np.float32)                                   # (in, out), as da4ml takes it
    inp = FixedVariableArrayInput(n_in, solver_options=dict(SOLVER))
    x = quantize(inp, 1, 7, 0)                                        # signed, 7 integer bits: int8
    y = np.concatenate([x @ kernel[:, j:j + DENSE_BLOCK] for j in range(0, n_out, DENSE_BLOCK)])
    if b is not None:
        y = y + b.astype(np.float32)
    comb = comb_trace(inp, y, keep_dead_inputs=True)
    with tempfile.TemporaryDirectory(prefix="qexit-da4ml-") as tmp:
        VerilogModel(comb, name, tmp, latency_cutoff=LATENCY_CUTOFF).write()
        src = Path(tmp) / "src"
        files = sorted(src.glob("*.v")) + sorted((src / "static").glob("*.v"))
        sources = {f.name: f.read_text() for f in files}
        meta = json.loads((Path(tmp) / "metadata.json").read_text())
    wrapper = sources[f"{name}_wrapper.v"]
    width = int(wrapper.split("model_out")[0].rsplit("[", 1)[1].split(":")[0]) + 1
    k, i, f = (np.asarray(v) for v in comb.out_kifs)
    return DenseRTL(f"{name}_wrapper", n_in, n_out, width // n_out, -int(f.max()), int(meta["latency"]) + 1, sources)


def head_dense(head: FixedHead, k: int, layer: int, cache_dir: Path | None = CACHE_DIR) -> dict[str, DenseRTL]:
    """Candidate ``k``'s three da4ml layers (``fc1``, ``fc2``, ``scores``), named by its
    backbone ``layer``: what ``ExitHead`` instantiates and whose latencies ``head_cycles``
    (and so the cost model) reads."""
    p = head.layers[k].params
    return {"fc1": dense_rtl(f"qx_l{layer:02d}_fc1", p["w1"], p["b1"], cache_dir),
            "fc2": dense_rtl(f"qx_l{layer:02d}_fc2", p["w2"], p["b2"], cache_dir),
            "scores": dense_rtl(f"qx_l{layer:02d}_scores", head.class_t, None, cache_dir)}


def dense_latencies(dense: dict[str, DenseRTL]) -> tuple[int, int, int]:
    return tuple(dense[n].latency for n in ("fc1", "fc2", "scores"))


ROW_CONST = (33, intops.MULT_BITS, 6)   # a MAC head's row constants in its ROM: bias, multiplier, shift bits
MAC_PIPE = 3        # a MAC head's row pipeline: the ROM read, the multiply, the add into the row's sum


@dataclass(frozen=True)
class MacDense:
    """The head's dense layers on ``macs`` int8 multipliers instead of da4ml adder graphs: the
    weights of fc1, fc2 and the class scores sit in one ROM, row by row, ceil(K / macs) words
    of ``macs`` bytes a row; one word a cycle goes into ``macs`` products and an adder tree,
    and each row's sum starts from its bias. fc1's and fc2's finished rows go through one
    ``Requantizer``; the scores are saturated to int32. A layer of N rows takes
    N ceil(K / macs) cycles plus the pipeline (``MAC_PIPE``, and the requantizer's latency
    and its write for fc1 and fc2): ``cycles``."""
    macs: int

    def __post_init__(self):
        if not isinstance(self.macs, int) or self.macs < 1:
            raise QexitError(f"the head's multipliers ({self.macs}) must be an integer >= 1 (e.g. --head-macs 64)")

    @staticmethod
    def shapes(head: FixedHead) -> list[tuple[int, int]]:
        """(K, N) of fc1, fc2 and the class scores."""
        return [(head.width, head.hidden), (head.hidden, head.embed_dim), (head.embed_dim, head.classes)]

    def rom_words(self, head: FixedHead) -> list[int]:
        """ROM words per layer: N rows of ceil(K / macs) words."""
        return [n * -(-k // self.macs) for k, n in self.shapes(head)]

    def cycles(self, head: FixedHead) -> int:
        r1, r2, r3 = self.rom_words(head)
        tail = MAC_PIPE + Requantizer.LATENCY + 1
        return (r1 + tail) + (r2 + tail) + (r3 + MAC_PIPE)


@dataclass(frozen=True)
class StreamDense:
    """The head's dense layers on ``macs`` int8 multipliers as ``MacDense`` computes them, but
    with no ROM: the weights and each row's constants come through the accelerator's memory
    port, one beat of ``macs`` bytes a cycle at most, in the order ``hw.rtl.head.stream_block``
    lays a candidate's block out. So the same hardware runs any head of the same shape; a
    layer's cycles depend on when its beats arrive (``hw.cost.timeline.head_cycles_streamed``)."""
    macs: int

    def __post_init__(self):
        if not isinstance(self.macs, int) or self.macs < 1:
            raise QexitError(f"the head's multipliers ({self.macs}) must be an integer >= 1")

    shapes = staticmethod(MacDense.shapes)


def dense_cycles(head: FixedHead, lanes: int, dense) -> int:
    """Cycles of the head's dense phases (FC1 to SCORES, with the requantizer passes) for a
    ``MacDense``, or for da4ml layers (their dict, or their latencies (fc1, fc2, scores))."""
    if isinstance(dense, MacDense):
        return dense.cycles(head)
    latencies = dense_latencies(dense) if isinstance(dense, dict) else dense
    rq = sum(-(-n // lanes) + Requantizer.LATENCY for n in (head.hidden, head.embed_dim))
    return sum(lat + 1 for lat in latencies) + rq


def verilog_sources(denses: list[DenseRTL]) -> str:
    """The da4ml modules of several layers, each shared helper module once; helper modules that
    no other module instantiates are left out (da4ml's ``lookup_table`` reads a placeholder
    memory file that synthesis would look for)."""
    seen: dict[str, str] = {}
    for d in denses:
        for f, text in d.sources.items():
            if seen.setdefault(f, text) != text:
                raise QexitError(f"two da4ml layers define {f} differently; give them distinct names")
    names = {f: re.search(r"^\s*module\s+(\w+)", text, re.M) for f, text in seen.items()}
    used = {f for f, m in names.items() if m is None or f.endswith("_wrapper.v") or any(
        re.search(rf"\b{m.group(1)}\s*(#\s*\(|\w+\s*\()", other) for g, other in seen.items() if g != f)}
    return "\n".join(text for f, text in seen.items() if f in used)


def head_dense_plan(ep, k: int, macs: int | None):
    """What candidate ``k``'s dense layers are: ``MacDense(macs)``, or with ``macs`` None its
    da4ml layers (solved, or read from the cache)."""
    return head_dense(ep.head, k, ep.layers[k]) if macs is None else MacDense(macs)


def dense_verilog(plans) -> str:
    """The da4ml modules that the heads of ``plans`` instantiate (none for ``MacDense``)."""
    return verilog_sources([d for p in plans if isinstance(p, dict) for d in p.values()])
