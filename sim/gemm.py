"""Bit-exact verification of the GEMM engine: the Python API behind ``qexit verify gemm``.

``verify_gemm`` validates everything first (array size, shapes against the buffers,
operands against the numeric contract), generates the engine's Verilog, builds it once
(cached), writes the cases for ``sim.tb.gemm``, runs it and returns a ``sim.result.Result``:
matched/total, and measured vs predicted cycles, with one record per case. Nothing is
simulated when an input is bad.
"""
from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path

import torch

from hw.cost import Machine, schedule
from hw.rtl import gemm
from model import intops
from model.errors import QexitError
from sim import harness
from sim import packing as host
from sim import simulator as runner
from sim.harness import check_machine
from sim.result import Result

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


def _timed(records: list[dict]) -> list[dict]:
    """The cases with a cycle prediction (all but those with random stream stalls)."""
    return [c for c in records if c["cycles_predicted"] is not None]


def outputs_by_kind(records: list[dict]) -> dict[str, int]:
    """Outputs checked per operand kind: ``random`` (uniform int8), the corner patterns,
    ``saturate`` (int32-saturating sums); all with synthetic operands, no model weights."""
    out: dict[str, int] = {}
    for c in records:
        kind = c["name"].split("-")[0]
        out[kind] = out.get(kind, 0) + c["total"]
    return out


def gemm_result(rows: int, cols: int, records: list[dict]) -> Result:
    """The records of a run of cases on an R x C engine as a result: outputs matched, and the
    cycles (start to done) of the cases with a prediction against ``hw.cost.schedule``; the
    figures ``rows``, ``cols``, ``cycle_errors`` (cases off their prediction), ``io_cycles``
    (the load and unload beats the engine waits for, idle: ``Schedule.io_cycles``),
    ``utilization`` (compute only, start to done) and ``utilization_with_io``."""
    timed = _timed(records)
    measured = sum(c["cycles_measured"] for c in timed)
    macs = sum(math.prod(case_shape(c)) for c in timed)
    io = sum(schedule.plan(rows, cols, *case_shape(c)).io_cycles for c in timed)
    return Result("gemm", sum(c["matched"] for c in records), sum(c["total"] for c in records),
                  cycles_measured=measured, cycles_predicted=sum(c["cycles_predicted"] for c in timed),
                  records=records,
                  figures={"rows": rows, "cols": cols,
                           "cycle_errors": sum(c["cycles_measured"] != c["cycles_predicted"] for c in timed),
                           "io_cycles": io, "utilization": schedule.utilization(macs, rows, cols, measured),
                           "utilization_with_io": schedule.utilization(macs, rows, cols, measured + io)})


def run_cases(cfg: gemm.GemmConfig, cases: list[dict], *, test: str = "gemm_cases",
              simulator: str | None = None, waves: bool = False,
              folder: Path | None = None) -> Result:
    """Check, build (cached) and simulate ``cases`` on the engine ``cfg``: one record per case
    (``gemm_result``), in case order; a simulation that ends early leaves fewer."""
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
    out = gemm_result(cfg.rows, cfg.cols, records)
    out.simulator, out.build_seconds, out.sim_seconds = b.simulator, b.seconds, res.seconds
    out.first_mismatches = [dict(m, case=c["name"]) for c in records for m in c["mismatches"][:3]]
    out.passed = res.passed and len(records) == len(cases) and out.mismatches == 0 and out.cycle_errors == 0
    if not out.passed:
        out.log = runner.log_tail(res)
    return out


def verify_gemm(machine: Machine, shapes: list[tuple[int, int, int]], seed: int = 0, *,
                corners: bool = False, backpressure: bool = False, max_m: int = 256,
                max_k: int = 3072, max_n: int = 3072,
                raw: bool = False, max_raw_n: int = 256, token_bias: bool = False, max_bias_n: int = 768,
                simulator: str | None = None, waves: bool = False,
                folder: Path | None = None) -> Result:
    """Random operands for every shape (seed ``seed + index``), plus the corner patterns on
    the first shape when ``corners``, on the engine of ``machine``'s R x C array, the weights
    streamed from a memory model of its bandwidth (None: whenever wanted) and first-word
    latency; ``raw`` checks the int32 output
    path (``sat32(a @ w.T + bias)`` on ``raw_out``) instead of the requantized int8 one;
    ``token_bias`` gives every case a per-token bias (M, N) in place of the per-channel one;
    ``backpressure`` applies random stream stalls to every other case (those cases check
    values, not cycles)."""
    check_machine(machine)
    cfg = gemm.GemmConfig(machine.rows, machine.cols, max_m=max_m, max_k=max_k, max_n=max_n, max_raw_n=max_raw_n,
                          max_bias_n=max_bias_n)
    for shape in shapes:
        cfg.check_shape(*shape, raw=raw, token_bias=token_bias)
    cases = [make_case(*shape, seed=seed + i) for i, shape in enumerate(shapes)]
    if corners:
        cases += [make_case(*shapes[0], seed=seed, kind=kind) for kind in CORNERS]
        if all(cap >= d for cap, d in zip((cfg.max_m, cfg.max_k, cfg.max_n), SATURATE_SHAPE)):
            cases.append(make_case(*SATURATE_SHAPE, seed=seed, kind="saturate"))
    for case in cases:
        case["bandwidth"], case["latency"], case["raw"] = machine.bandwidth, machine.latency, raw
        if token_bias:
            case["bias"] = per_token_bias(case["a"].shape[0], case["w"].shape[0], case["a"].shape[1], case["seed"])
    if backpressure:
        for case in cases[::2]:
            case["backpressure"] = True
    res = run_cases(cfg, cases, simulator=simulator, waves=waves, folder=folder)
    res.figures.update(outputs_by_kind=outputs_by_kind(res.records), operands="synthetic")
    return res


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

def free_running(cfg: gemm.GemmConfig, m: int, k: int, n: int) -> dict:
    """Cycles and wall seconds of one GEMM on the harness free-running in Verilator with an
    ideal memory model (the buffers hold whatever they power up with: the schedule, and so the
    speed, do not depend on the data)."""
    cfg.check_shape(m, k, n)
    return runner.free_running(harness.to_verilog(cfg), harness.top_name(cfg), {},
                               {"ideal": 1, "latency": 0, "m": m, "k": k, "n": n})


def verify_reset(cfg: gemm.GemmConfig, shape: tuple[int, int, int], seed: int = 0, *,
                 simulator: str | None = None, folder: Path | None = None) -> Result:
    """Reset the engine halfway through a GEMM, then check a full GEMM run after it."""
    return run_cases(cfg, [make_case(*shape, seed=seed)], test="reset_mid_gemm",
                     simulator=simulator, folder=folder)
