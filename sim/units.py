"""Bit-exact verification of the streaming units: the Python API behind ``qexit verify units``.

For each unit, ``*_cases`` draws random valid constants and random input rows (plus corner
rows), and computes the expected outputs with ``model.intops`` here, on the host. The
testbench (``sim.tb_units``) only streams the packed beats through the RTL and returns the
output beats; ``verify_unit`` compares every output integer with the expectation.

A *row* is one input beat of ``lanes`` values for the element-wise units (requantizer, add,
GELU), and one whole token row (D values) or attention row (T scores) for LayerNorm and
softmax.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from hw import emit, units
from model import intops
from model.errors import QexitError
from sim import runner

LANES = 4                   # lanes of the element-wise units under test
ROWS_PER_CASE = 500         # rows that share one set of constants


# --------------------------------------------------------------------------- packing

def pack_lanes(values: torch.Tensor, bits: int) -> list[int]:
    """(beats, lanes) integers → payload ints, lane 0 in the low bits, two's complement."""
    mask = (1 << bits) - 1
    out = []
    for row in values.tolist():
        word = 0
        for i, v in enumerate(row):
            word |= (v & mask) << (bits * i)
        out.append(word)
    return out


def unpack_lanes(words: list[int], lanes: int, bits: int, signed: bool = True) -> torch.Tensor:
    """Payload ints → (beats, lanes) integers."""
    mask, top = (1 << bits) - 1, 1 << (bits - 1)
    rows = []
    for word in words:
        row = [(word >> (bits * i)) & mask for i in range(lanes)]
        rows.append([v - (1 << bits) if signed and v & top else v for v in row])
    return torch.tensor(rows, dtype=torch.int64).reshape(len(words), lanes)


# --------------------------------------------------------------------------- random constants

def _multiplier(g: torch.Generator, realistic: bool, acc_bits: int) -> tuple[int, int]:
    """A (mult, shift) pair: ``realistic`` maps an acc of ``acc_bits`` onto int8 (as a
    calibrated model does), otherwise any valid pair."""
    if realistic:
        return 2 ** 30 + int(torch.randint(0, 2 ** 30, (1,), generator=g)), \
            30 + acc_bits - 7 + int(torch.randint(-2, 3, (1,), generator=g))
    return int(torch.randint(0, 2 ** intops.MULT_BITS, (1,), generator=g)), \
        int(torch.randint(intops.SHIFT_MIN, intops.SHIFT_MAX + 1, (1,), generator=g))


def _log_uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(1, generator=g).item())


def _int8(g: torch.Generator, shape) -> torch.Tensor:
    return torch.randint(-128, 128, shape, generator=g)


# --------------------------------------------------------------------------- the element-wise units

def requant_cases(rows: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for c in range(max(1, math.ceil(rows / ROWS_PER_CASE))):
        bits = int(torch.randint(8, 33, (1,), generator=g))
        acc = torch.randint(-2 ** (bits - 1), 2 ** (bits - 1), (ROWS_PER_CASE, LANES), generator=g)
        if c == 0:   # corners: int32 extremes, zero, -1, exact halves
            acc[:8] = torch.tensor([intops.INT32_MIN, intops.INT32_MAX, 0, -1, 1, 2 ** 29, -(2 ** 29), 3])[:, None]
        mult, shift = _multiplier(g, c % 2 == 0, bits)
        if c == 1:
            mult, shift = 2 ** 31 - 1, 1
        elif c == 2:
            mult, shift = 0, 62
        cases.append({"ports": {"mult": mult, "shift": shift}, "inputs": acc,
                      "expected": intops.requantize(acc, torch.tensor(mult), torch.tensor(shift))})
    return cases


def add_cases(rows: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for c in range(max(1, math.ceil(rows / ROWS_PER_CASE))):
        a, b = _int8(g, (ROWS_PER_CASE, LANES)), _int8(g, (ROWS_PER_CASE, LANES))
        if c == 0:   # -128/127 extremes
            a[:4], b[:4] = torch.tensor([-128, 127, -128, 127])[:, None], torch.tensor([-128, 127, 127, -128])[:, None]
        if c % 2 == 0:
            p = intops.add_params(_log_uniform(g, 1e-3, 1.0), _log_uniform(g, 1e-3, 1.0), _log_uniform(g, 1e-3, 1.0))
            m_a, m_b, shift = int(p["m_a"]), int(p["m_b"]), int(p["shift"])
        else:
            m_a, shift = _multiplier(g, False, 32)
            m_b = int(torch.randint(0, 2 ** intops.MULT_BITS, (1,), generator=g))
        expected = intops.add(a, b, torch.tensor(m_a), torch.tensor(m_b), torch.tensor(shift))
        cases.append({"ports": {"m_a": m_a, "m_b": m_b, "shift": shift},
                      "inputs": torch.stack([a, b], -1), "expected": expected})
    return cases


def gelu_cases(rows: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    cases = []
    for c in range(max(1, math.ceil(rows / ROWS_PER_CASE))):
        x = _int8(g, (ROWS_PER_CASE, LANES))
        x.view(-1)[:256] = torch.arange(-128, 128)          # every int8 input in each case
        if c % 2 == 0:
            p = intops.gelu_params(_log_uniform(g, 2e-3, 2.0), _log_uniform(g, 1e-3, 1.0))
            prm = {k: int(v) for k, v in p.items()}
        else:   # any constants the IntModel check accepts
            mult, shift = _multiplier(g, False, 32)
            prm = {"qb": int(torch.randint(intops.GELU_QB[0], intops.GELU_QB[1] + 1, (1,), generator=g)),
                   "qc": int(torch.randint(intops.GELU_QC[0], intops.GELU_QC[1] + 1, (1,), generator=g)),
                   "m": mult, "shift": shift}
        expected = intops.gelu(x, *(torch.tensor(prm[k]) for k in ("qb", "qc", "m", "shift")))
        cases.append({"ports": {"qb": prm["qb"], "qc": prm["qc"], "mult": prm["m"], "shift": prm["shift"]},
                      "inputs": x, "expected": expected})
    return cases


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Unit:
    """How to build, feed and read one unit under test."""
    name: str
    make_rtl: Callable[[], object]
    cases: Callable[[int, int], list[dict]]
    pack: Callable[[torch.Tensor], list[int]]
    out_lanes: int
    out_bits: int
    out_signed: bool = True

    @property
    def top(self) -> str:
        return f"qexit_unit_{self.name}"


UNITS: dict[str, Unit] = {
    "requant": Unit("requant", lambda: units.RequantUnit(LANES), requant_cases,
                    lambda x: pack_lanes(x, 32), LANES, 8),
    "add": Unit("add", lambda: units.AddUnit(LANES), add_cases,
                lambda x: pack_lanes(x.reshape(x.shape[0], -1), 8), LANES, 8),
    "gelu": Unit("gelu", lambda: units.GeluUnit(LANES), gelu_cases,
                 lambda x: pack_lanes(x, 8), LANES, 8),
}


@dataclass
class UnitResult:
    name: str
    rows: int
    matched: int = 0
    total: int = 0
    mismatches: list[dict] = field(default_factory=list)
    passed: bool = False
    seconds: float = 0.0
    log: str = ""

    def summary(self) -> dict:
        return {"unit": self.name, "rows": self.rows, "matched": self.matched, "total": self.total,
                "mismatches": self.total - self.matched, "first_mismatches": self.mismatches[:5],
                "passed": self.passed, "sim_seconds": round(self.seconds, 2)}


def verify_unit(name: str, rows: int, seed: int, *, simulator: str | None = None,
                stall: bool = True, folder: Path | None = None) -> UnitResult:
    """Build (cached) and run one unit on ``rows`` random rows plus its corners."""
    if name not in UNITS:
        raise QexitError(f"unknown unit {name!r}; choose from {', '.join(UNITS)}")
    if rows < 1:
        raise QexitError(f"--vectors {rows} must be at least 1")
    unit = UNITS[name]
    cases = unit.cases(rows, seed)
    b = runner.build(emit.to_verilog(unit.make_rtl(), unit.top), unit.top, simulator=simulator)
    tb = [{"ports": c["ports"], "beats": unit.pack(c["inputs"]), "count": c["expected"].numel() // unit.out_lanes,
           "seed": seed * 1000 + i, "stall": stall and i % 2 == 1} for i, c in enumerate(cases)]
    with tempfile.TemporaryDirectory(prefix="qexit-units-") as tmp:
        cases_path, results_path = Path(tmp) / "cases.pt", Path(tmp) / "results.json"
        torch.save(tb, cases_path)
        res = runner.run(b, "sim.tb_units", folder=folder,
                         settings={"QEXIT_TB_CASES": str(cases_path), "QEXIT_TB_RESULTS": str(results_path)})
        outputs = json.loads(results_path.read_text()) if results_path.exists() else None
    out = UnitResult(name, sum(c["inputs"].shape[0] for c in cases), seconds=res.seconds)
    out.total = sum(c["expected"].numel() for c in cases)
    if outputs is None or len(outputs) != len(cases):
        out.log = runner.log_tail(res)
        return out
    for i, (case, words) in enumerate(zip(cases, outputs)):
        got = unpack_lanes(words, unit.out_lanes, unit.out_bits, unit.out_signed).reshape(case["expected"].shape)
        wrong = (got != case["expected"]).nonzero().tolist()
        out.matched += case["expected"].numel() - len(wrong)
        out.mismatches += [{"case": i, "ports": case["ports"], "index": w, "got": int(got[tuple(w)]),
                            "expected": int(case["expected"][tuple(w)])} for w in wrong[:3]]
    out.passed = res.passed and out.matched == out.total
    if not out.passed:
        out.log = runner.log_tail(res)
    return out
