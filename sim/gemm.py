"""Bit-exact verification of the GEMM engine: the Python API behind ``qexit verify gemm``.

``verify_gemm`` validates everything first (array size, shapes against the buffers,
operands against the numeric contract), generates the engine's Verilog, builds it once
(cached), writes the cases for ``sim.tb.gemm``, runs it and returns matched/total and
measured vs predicted cycles per case. Nothing is simulated when an input is bad.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hw.rtl import gemm
from hw.cost import schedule
from model import intops
from model.errors import QexitError
from sim import harness
from sim import packing as host
from sim import simulator as runner

CORNERS = ("min", "max", "mixed", "alternating", "zero")
SATURATE_SHAPE = (2, 2048, 8)     # |acc| = 2**25: int32 saturation shows in the int8 output


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    """``"50x768x768,4x5x6"`` → [(50, 768, 768), (4, 5, 6)]."""
    shapes = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        dims = part.lower().split("x")
        try:
            m, k, n = (int(d) for d in dims)
        except ValueError:
            raise QexitError(f"bad shape {part!r}: write shapes as MxKxN, e.g. 50x768x768") from None
        schedule.check_shape(m, k, n)
        shapes.append((m, k, n))
    if not shapes:
        raise QexitError("no shapes given: use e.g. --shapes 50x768x768,50x17x13")
    return shapes


def _params(n: int, k: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mult, shift): most channels map a typical accumulator onto int8 (as a
    calibrated model would); channels c % 4 == 2 show one bit window of the accumulator
    exactly (mult = 2**30, shift = 30 + b); channels c % 4 == 3 get any valid pair."""
    typical = 74.0 * 74.0 * math.sqrt(k)             # std of a sum of k products of uniform int8
    scale = 127.0 / (3.0 * typical) * (0.5 + 1.5 * torch.rand(n, generator=g, dtype=torch.float64))
    mult, shift = intops.quantize_multiplier(scale)
    for c in range(n):
        if c % 4 == 2:
            mult[c] = 2 ** 30
            shift[c] = 30 + int(torch.randint(0, 26, (1,), generator=g))
        elif c % 4 == 3:
            mult[c] = int(torch.randint(0, 2 ** 31, (1,), generator=g))
            shift[c] = int(torch.randint(intops.SHIFT_MIN, intops.SHIFT_MAX + 1, (1,), generator=g))
    return mult, shift


def make_case(m: int, k: int, n: int, seed: int, kind: str = "random") -> dict:
    """Operands for one GEMM: uniform int8 (``random``), a corner pattern from ``CORNERS``,
    or ``saturate``: sums of +-2**25 pushed past the int32 range by an extreme bias, with
    shift 55 so that saturating (64) and wrapping or not saturating (65) differ."""
    g = torch.Generator().manual_seed(seed)
    fill = {"min": (-128, -128), "max": (127, 127), "mixed": (-128, 127), "zero": (0, 0)}
    if kind == "random":
        a = torch.randint(-128, 128, (m, k), generator=g)
        w = torch.randint(-128, 128, (n, k), generator=g)
    elif kind == "alternating":
        a = torch.where((torch.arange(m)[:, None] + torch.arange(k)) % 2 == 0, 127, -128)
        w = torch.where((torch.arange(n)[:, None] + torch.arange(k)) % 3 == 0, -128, 127)
    elif kind in fill:
        a = torch.full((m, k), fill[kind][0], dtype=torch.int64)
        w = torch.full((n, k), fill[kind][1], dtype=torch.int64)
    elif kind == "saturate":
        a = torch.full((m, k), -128, dtype=torch.int64)
        w = torch.where(torch.arange(n)[:, None] % 2 == 0, -128, 127).expand(n, k).clone()
    else:
        raise QexitError(f"unknown case kind {kind!r}; use random, saturate or one of "
                         f"{', '.join(CORNERS)}")
    bound = int(3 * 74 * 74 * math.sqrt(k))
    bias = torch.randint(-bound, bound + 1, (n,), generator=g)
    bias[2::16] = intops.INT32_MAX                  # saturates int32 when the sum is positive
    bias[10::16] = intops.INT32_MIN
    mult, shift = _params(n, k, g)
    if kind == "saturate":
        bias = torch.where(torch.arange(n) % 2 == 0, intops.INT32_MAX, intops.INT32_MIN)
        mult, shift = torch.full((n,), 2 ** 30), torch.full((n,), 55)
    return {"name": f"{kind}-{m}x{k}x{n}", "seed": seed, "a": a, "w": w, "bias": bias,
            "mult": mult, "shift": shift}


def case_shape(record: dict) -> tuple[int, int, int]:
    """(M, K, N) of a result record (its ``shape`` is written ``MxKxN``)."""
    m, k, n = (int(d) for d in record["shape"].split("x"))
    return m, k, n


@dataclass
class VerifyResult:
    rows: int
    cols: int
    simulator: str
    cases: list[dict] = field(default_factory=list)
    passed: bool = False
    log: str = ""
    build_seconds: float = 0.0
    sim_seconds: float = 0.0

    @property
    def matched(self) -> int:
        return sum(c["matched"] for c in self.cases)

    @property
    def total(self) -> int:
        return sum(c["total"] for c in self.cases)

    @property
    def mismatches(self) -> int:
        return self.total - self.matched

    def _timed(self) -> list[dict]:
        """The cases with a cycle prediction (all but those with random stream stalls)."""
        return [c for c in self.cases if c["cycles_predicted"] is not None]

    @property
    def cycles_measured(self) -> int:
        """Start-to-done cycles of the cases with a prediction."""
        return sum(c["cycles_measured"] for c in self._timed())

    @property
    def cycles_predicted(self) -> int:
        return sum(c["cycles_predicted"] for c in self._timed())

    @property
    def cycle_errors(self) -> int:
        """Cases whose measured cycles differ from the schedule's prediction."""
        return sum(c["cycles_measured"] != c["cycles_predicted"] for c in self._timed())

    def _macs(self) -> int:
        return sum(math.prod(case_shape(c)) for c in self._timed())

    @property
    def utilization(self) -> float:
        """Compute only (start to done), over every case."""
        return schedule.utilization(self._macs(), self.rows, self.cols, self.cycles_measured)

    @property
    def io_cycles(self) -> int:
        """Cycles the engine waits, idle, for loads and unloads (``Schedule.io_cycles``)."""
        return sum(schedule.plan(self.rows, self.cols, *case_shape(c)).io_cycles for c in self._timed())

    @property
    def utilization_with_io(self) -> float:
        """Counting the loads and unloads the engine waits for as well."""
        return schedule.utilization(self._macs(), self.rows, self.cols, self.cycles_measured + self.io_cycles)

    def outputs_by_kind(self) -> dict[str, int]:
        """Outputs checked per operand kind: ``random`` (uniform int8), the corner patterns,
        ``saturate`` (int32-saturating sums); all with synthetic operands, no model weights."""
        out: dict[str, int] = {}
        for c in self.cases:
            kind = c["name"].split("-")[0]
            out[kind] = out.get(kind, 0) + c["total"]
        return out

    def summary(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "simulator": self.simulator,
                "matched": self.matched, "total": self.total, "mismatches": self.mismatches,
                "outputs_by_kind": self.outputs_by_kind(), "operands": "synthetic",
                "cycles_measured": self.cycles_measured, "cycles_predicted": self.cycles_predicted,
                "cycle_errors": self.cycle_errors, "io_cycles": self.io_cycles,
                "utilization": self.utilization, "utilization_with_io": self.utilization_with_io,
                "passed": self.passed, "cases": self.cases}


def run_cases(cfg: gemm.GemmConfig, cases: list[dict], *, test: str = "gemm_cases",
              simulator: str | None = None, waves: bool = False,
              folder: Path | None = None) -> VerifyResult:
    """Check, build (cached) and simulate ``cases`` on the engine ``cfg``."""
    for case in cases:
        host.check_operands(case["a"], case["w"], case["bias"], case["mult"], case["shift"])
        cfg.check_shape(case["a"].shape[0], case["a"].shape[1], case["w"].shape[0], bool(case.get("raw")),
                        case["bias"].dim() == 2)
    if not cases:
        raise QexitError("no GEMM cases to verify")
    b = runner.build(harness.to_verilog(cfg), harness.top_name(cfg), simulator=simulator, waves=waves)
    with tempfile.TemporaryDirectory(prefix="qexit-tb-") as tmp:
        cases_path, results_path = Path(tmp) / "cases.pt", Path(tmp) / "results.json"
        torch.save(cases, cases_path)
        res = runner.run(b, "sim.tb.gemm", testcase=test, folder=folder,
                         settings={"QEXIT_TB_CASES": str(cases_path),
                                   "QEXIT_TB_RESULTS": str(results_path)})
        records = json.loads(results_path.read_text()) if results_path.exists() else []
    out = VerifyResult(cfg.rows, cfg.cols, b.simulator, records, build_seconds=b.seconds,
                       sim_seconds=res.seconds)
    out.passed = res.passed and len(records) == len(cases) and out.mismatches == 0 \
        and out.cycle_errors == 0
    if not out.passed:
        out.log = runner.log_tail(res)
    return out


def verify_gemm(rows: int, cols: int, shapes: list[tuple[int, int, int]], seed: int = 0, *,
                corners: bool = False, backpressure: bool = False, max_m: int = 256,
                max_k: int = 3072, max_n: int = 3072, bandwidth: float | None = None, latency: int = 0,
                raw: bool = False, max_raw_n: int = 256, token_bias: bool = False, max_bias_n: int = 768,
                simulator: str | None = None, waves: bool = False,
                folder: Path | None = None) -> VerifyResult:
    """Random operands for every shape (seed ``seed + index``), plus the corner patterns on
    the first shape when ``corners``; the weights stream from a memory model of ``bandwidth``
    bytes/cycle (None: whenever wanted) and ``latency`` cycles; ``raw`` checks the int32 output
    path (``sat32(a @ w.T + bias)`` on ``raw_out``) instead of the requantized int8 one;
    ``token_bias`` gives every case a per-token bias (M, N) in place of the per-channel one;
    ``backpressure`` applies random stream stalls to every other case (those cases check
    values, not cycles)."""
    schedule.WeightSource(bandwidth, latency)            # bad values fail before any work
    cfg = gemm.GemmConfig(rows, cols, max_m=max_m, max_k=max_k, max_n=max_n, max_raw_n=max_raw_n,
                          max_bias_n=max_bias_n)
    for shape in shapes:
        cfg.check_shape(*shape, raw=raw, token_bias=token_bias)
    cases = [make_case(*shape, seed=seed + i) for i, shape in enumerate(shapes)]
    if corners:
        cases += [make_case(*shapes[0], seed=seed, kind=kind) for kind in CORNERS]
        if all(cap >= d for cap, d in zip((cfg.max_m, cfg.max_k, cfg.max_n), SATURATE_SHAPE)):
            cases.append(make_case(*SATURATE_SHAPE, seed=seed, kind="saturate"))
    for case in cases:
        case["bandwidth"], case["latency"], case["raw"] = bandwidth, latency, raw
        if token_bias:
            case["bias"] = per_token_bias(case["a"].shape[0], case["w"].shape[0], case["a"].shape[1], case["seed"])
    if backpressure:
        for case in cases[::2]:
            case["backpressure"] = True
    return run_cases(cfg, cases, simulator=simulator, waves=waves, folder=folder)


def per_token_bias(m: int, n: int, k: int, seed: int) -> torch.Tensor:
    """A random int32 bias per output (M, N), a sum's typical size, with int32 extremes mixed in."""
    g = torch.Generator().manual_seed(seed + 7)
    bound = int(3 * 74 * 74 * math.sqrt(k))
    bias = torch.randint(-bound, bound + 1, (m, n), generator=g)
    bias.view(-1)[3::17] = intops.INT32_MAX
    bias.view(-1)[11::17] = intops.INT32_MIN
    return bias


def random_shapes(count: int, seed: int, max_m: int = 64, max_k: int = 96,
                  max_n: int = 48) -> list[tuple[int, int, int]]:
    """``count`` random shapes, most of them not multiples of any array size."""
    rng = random.Random(seed)
    return [(rng.randint(1, max_m), rng.randint(1, max_k), rng.randint(1, max_n))
            for _ in range(count)]


# --------------------------------------------------------------------------- free-running speed

FREE_RUNNING_MAIN = r"""
// The GEMM harness (engine + ideal memory model) alone in Verilator: no cocotb, no VPI. Runs M x K x N once.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include "Vtop.h"
#include "verilated.h"

int main(int argc, char** argv) {
    VerilatedContext* ctx = new VerilatedContext;
    Vtop* top = new Vtop{ctx};
    const int m = atoi(argv[1]), k = atoi(argv[2]), n = atoi(argv[3]);
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); ctx->timeInc(1); };
    top->rst = 1; tick(); tick(); top->rst = 0; tick();
    top->ideal = 1; top->latency = 0;           // an ideal memory model (the data do not matter)
    top->m = m; top->k = k; top->n = n; top->start = 1;
    tick();                                     // this edge samples start
    top->start = 0;
    long cycles = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (!top->done && cycles < 2000000000L) { tick(); ++cycles; }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("{\"cycles\": %ld, \"counter\": %u, \"seconds\": %.6f}\n", cycles, (unsigned)top->cycles, s);
    top->final();
    delete top;
    delete ctx;
    return 0;
}
"""


def free_running(cfg: gemm.GemmConfig, m: int, k: int, n: int) -> dict:
    """Cycles and wall seconds of one GEMM on the harness free-running in Verilator with an
    ideal memory model (the buffers hold whatever they power up with: the schedule, and so the
    speed, do not depend on the data)."""
    cfg.check_shape(m, k, n)
    exe = runner.build_free_running(harness.to_verilog(cfg), harness.top_name(cfg), FREE_RUNNING_MAIN)
    done = subprocess.run([str(exe), str(m), str(k), str(n)], capture_output=True,
                                 text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["cycles_per_second"] = out["cycles"] / max(out["seconds"], 1e-9)
    return out


def verify_reset(cfg: gemm.GemmConfig, shape: tuple[int, int, int], seed: int = 0, *,
                 simulator: str | None = None, folder: Path | None = None) -> VerifyResult:
    """Reset the engine halfway through a GEMM, then check a full GEMM run after it."""
    return run_cases(cfg, [make_case(*shape, seed=seed)], test="reset_mid_gemm",
                     simulator=simulator, folder=folder)
