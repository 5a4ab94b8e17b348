"""Bit-exact verification of the streaming units: the Python API behind ``qexit verify units``.

For each unit, ``*_cases`` draws random valid constants and random input rows (plus corner
rows), and computes the expected outputs with ``model.intops`` here, on the host. The
testbench (``sim.tb.units``) only streams the packed beats through the RTL and returns the
output beats (``simulate``); ``verify_unit`` compares every output integer with the
expectation (``compare``) and returns a ``sim.result.Result`` (one record per case).

A *row* is one input beat of ``lanes`` values for the element-wise units (requantizer, add,
GELU), and one whole token row (D values) or attention row (T scores) for LayerNorm and
softmax. Every unit under test has ``LANES`` lanes, as the layer engine's units have the
array's: a LayerNorm row is D/LANES beats (D a multiple of LANES), an attention row
ceil(T/LANES) beats, whose unused lanes carry INT32_MAX (the unit must ignore them) and must
come out zero. The exit comparator (one lane: a *row* is one decision, its class scores and
its gate) is checked against ``model.exits.decision.decide`` instead of ``model.intops``.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from amaranth import Shape
from amaranth.sim import Simulator

from hw.rtl import comparator, emit, layernorm, softmax, units
from model import intops
from model.errors import QexitError
from model.exits.decision import decide
from sim import simulator as runner
from sim.packing import lanes_to_words, words_to_lanes
from sim.result import Result

LANES = 4                   # lanes of every unit under test
ROWS_PER_CASE = 500         # rows that share one set of constants


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

def _exactly(cases: list[dict], rows: int) -> list[dict]:
    """Trim the last cases so that exactly ``rows`` rows remain."""
    out, left = [], rows
    for c in cases:
        if left <= 0:
            break
        out.append(dict(c, inputs=c["inputs"][:left], expected=c["expected"][:left]))
        left -= c["inputs"].shape[0]
    return out


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
    return _exactly(cases, rows)


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
    return _exactly(cases, rows)


LN_MAX_D = 768              # the LayerNorm unit under test holds rows up to ViT-B/32's width


def _ln_rows(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    """Random int8 rows with the corner rows first: constant (zero variance), -128/127
    extremes, alternating extremes, one spike."""
    x = _int8(g, (n, d))
    spread = torch.randint(1, 129, (n, 1), generator=g)               # narrow rows too
    x = (x * spread // 128).clamp(-128, 127)
    corners = [torch.full((d,), -128), torch.full((d,), 127), torch.full((d,), 5),
               torch.where(torch.arange(d) % 2 == 0, -128, 127), torch.zeros(d, dtype=torch.int64)]
    corners[-1][0] = 127
    for i, row in enumerate(corners[:n]):
        x[i] = row
    return x


def layernorm_param_words(g: torch.Tensor, b: torch.Tensor, lanes: int, lane_bits: int | None = None) -> list[int]:
    """Per-channel g, b → parameter words of ``lanes`` channels (``hw.rtl.layernorm.LN_PARAM``: g in
    a lane's low 17 bits, b in the next 48), ``lane_bits`` apart (default: packed, the unit's
    ``p_in``; the layer engine's parameter stream puts them ``PARAM_BITS`` apart)."""
    ch = [(gi & (2 ** 17 - 1)) | ((bi & (2 ** 48 - 1)) << 17) for gi, bi in zip(g.tolist(), b.tolist())]
    size = lane_bits or layernorm.LN_PARAM.size
    return [sum(ch[j + c] << (size * c) for c in range(lanes)) for j in range(0, len(ch), lanes)]


def layernorm_case(x: torch.Tensor, p: dict) -> dict:
    """Rows ``x`` (n, D) with LayerNorm constants ``p``: ports, the parameter words, inputs and
    expected outputs, LANES values a beat."""
    return {"ports": {"d": x.shape[-1], "shift": int(p["shift"]), "eps": int(p["eps"])},
            "loads": {"p_in": layernorm_param_words(p["g"], p["b"], LANES)},
            "inputs": x.reshape(-1, LANES), "expected": intops.layernorm(x, **p).reshape(-1, LANES)}


def layernorm_cases(rows: int, seed: int) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    per_case, cases, done, c = 100, [], 0, 0
    widths = [LANES, 2 * LANES, 3 * LANES, 7 * LANES, 64, 100, 192, 256, LN_MAX_D]
    while done < rows:
        d = widths[c % len(widths)] if c < len(widths) else LANES * int(torch.randint(1, 257 // LANES, (1,), generator=g))
        n = min(per_case, rows - done)
        x = _ln_rows(g, n, d)
        if c % 2 == 0:
            s_in, s_out = _log_uniform(g, 1e-3, 0.5), _log_uniform(g, 1e-3, 0.5)
            p = intops.layernorm_params(torch.rand(d, generator=g) * 2 - 0.5, torch.randn(d, generator=g),
                                        s_in, s_out, eps=_log_uniform(g, 1e-8, 1e-2))
        else:   # any constants the IntModel check accepts
            bits = int(torch.randint(1, intops.LN_B_BITS + 1, (1,), generator=g))
            p = {"g": torch.randint(-2 ** intops.GAMMA_BITS, 2 ** intops.GAMMA_BITS + 1, (d,), generator=g),
                 "b": torch.randint(-2 ** bits + 1, 2 ** bits, (d,), generator=g),
                 "shift": torch.randint(intops.LN_SHIFT[0], intops.LN_SHIFT[1] + 1, (1,), generator=g)[0],
                 "eps": torch.randint(0, 2 ** int(torch.randint(1, intops.LN_EPS_BITS + 1, (1,), generator=g)),
                                      (1,), generator=g)[0]}
        intops.check_layernorm_params(**p)
        cases.append({**layernorm_case(x, p), "rows": n})
        done, c = done + n, c + 1
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
    return _exactly(cases, rows)


def table_cases(rows: int, seed: int) -> list[dict]:
    """The activation table: i-GELU's 256 outputs for real-looking constants (even cases, as
    ``hw.program`` loads them for the shipped model) or 256 random int8 entries (odd cases),
    loaded through ``t_in``, then looked up on inputs that cover every int8 value."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    every = torch.arange(intops.INT8_MIN, intops.INT8_MAX + 1)
    for c in range(max(1, math.ceil(rows / ROWS_PER_CASE))):
        x = _int8(g, (ROWS_PER_CASE, LANES))
        x.view(-1)[:256] = every
        if c % 2 == 0:
            prm = intops.gelu_params(_log_uniform(g, 2e-3, 2.0), _log_uniform(g, 1e-3, 1.0))
            table = intops.gelu(every, prm["qb"], prm["qc"], prm["m"], prm["shift"])
            expected = intops.gelu(x, prm["qb"], prm["qc"], prm["m"], prm["shift"])
        else:
            table = _int8(g, (intops.TABLE_SIZE,))
            expected = intops.table_lookup(x, table)
        cases.append({"ports": {}, "loads": {"t_in": lanes_to_words(table.reshape(-1, LANES), 8)},
                      "inputs": x, "expected": expected})
    return _exactly(cases, rows)


SM_MAX_ROW = 64             # the softmax unit under test holds attention rows up to 64 scores
SM_ROWS_PER_CASE = 50       # attention rows that share one set of constants and one length


def softmax_cases(rows: int, seed: int) -> list[dict]:
    """Cases of up to SM_ROWS_PER_CASE attention rows, each with one length T (64, 1, 2, 3, then
    random in 1..64) and one set of constants (even cases: ``softmax_params`` of a log-uniform
    scale; odd: any constants the IntModel check accepts). Scores, by case % 3: the full int32
    range; +-2**k around a random centre (k in 4..31); the same with k near the band where i-exp
    is not 0 for this ``pre`` (30 x0 2**pre ~ 2**(12 + pre)). Each case starts with the corner
    rows: constant, one INT32_MAX among INT32_MIN, all INT32_MIN, alternating extremes, all
    INT32_MAX. Inputs and expected are (rows * T, 1): one score (probability) per beat."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = intops.INT32_MIN, intops.INT32_MAX
    cases, done, c = [], 0, 0
    lengths = [SM_MAX_ROW, 1, 2, 3]
    while done < rows:
        t = lengths[c] if c < len(lengths) else int(torch.randint(1, SM_MAX_ROW + 1, (1,), generator=g))
        n = min(SM_ROWS_PER_CASE, rows - done)
        if c % 2 == 0:
            prm = {k: int(v) for k, v in intops.softmax_params(_log_uniform(g, 1e-6, 10.0)).items()}
        else:   # any constants the IntModel check accepts
            x0 = int(torch.randint(intops.SOFTMAX_X0[0], intops.SOFTMAX_X0[1] + 1, (1,), generator=g))
            prm = {"pre": int(torch.randint(intops.SOFTMAX_PRE[0], intops.SOFTMAX_PRE[1] + 1, (1,), generator=g)),
                   "x0": x0,
                   "qb": int(torch.randint(max(intops.SOFTMAX_QB[0], x0 + 1), intops.SOFTMAX_QB[1] + 1, (1,),
                                           generator=g)),
                   "qc": int(torch.randint(intops.SOFTMAX_QC[0], intops.SOFTMAX_QC[1] + 1, (1,), generator=g))}
        intops.check_softmax_params(**prm)
        if c % 3 == 0:
            x = torch.randint(lo, hi + 1, (n, t), generator=g)
        else:
            k = int(torch.randint(4, 32, (1,), generator=g)) if c % 3 == 1 else \
                min(31, max(4, 12 + prm["pre"] + int(torch.randint(-5, 3, (1,), generator=g))))
            centre = int(torch.randint(lo, hi + 1, (1,), generator=g))
            x = (centre + torch.randint(-2 ** k, 2 ** k + 1, (n, t), generator=g)).clamp(lo, hi)
        corners = [torch.full((t,), int(torch.randint(lo, hi + 1, (1,), generator=g))),
                   torch.full((t,), lo), torch.full((t,), lo),
                   torch.where(torch.arange(t) % 2 == 0, hi, lo), torch.full((t,), hi)]
        corners[1][0] = hi
        for i, row in enumerate(corners[:n]):
            x[i] = row
        expected = intops.softmax(x, *(torch.tensor(prm[k]) for k in ("pre", "x0", "qb", "qc")))
        cases.append({"ports": {"length": t, **prm}, "rows": n,
                      "inputs": beats(x, hi), "expected": beats(expected, 0)})
        done, c = done + n, c + 1
    return cases


def beats(rows: torch.Tensor, pad: int) -> torch.Tensor:
    """(n, T) rows → (n * ceil(T/LANES), LANES) beats, the last beat of each row padded with ``pad``."""
    n, t = rows.shape
    w = -(-t // LANES)
    out = torch.full((n, w * LANES), pad, dtype=torch.int64)
    out[:, :t] = rows
    return out.reshape(-1, LANES)


COMPARATOR_MAX_LAYERS = 16


def pack_fields(values: list[list[int]], layout) -> list[int]:
    """Rows of field values (in the layout's field order) → payload integers."""
    out = []
    for row in values:
        word, offset = 0, 0
        for (_, member), v in zip(layout, row):
            width = Shape.cast(member.shape).width
            word |= (int(v) & ((1 << width) - 1)) << offset
            offset += width
        out.append(word)
    return out


def comparator_cases(rows: int, seed: int, per_case: int = ROWS_PER_CASE) -> list[dict]:
    """Cases of decisions (a *row* is one decision: its class scores, gate and layer) with one
    set of threshold registers each (random thresholds, random candidate masks). Scores, by
    case % 3: the full int32 range; a narrow range (ties); all equal. Gates: near the layer's
    threshold (equal, one below, one above) half the time, else anywhere in int32."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = intops.INT32_MIN, intops.INT32_MAX
    rand = lambda a, b, shape=(): torch.randint(a, b + 1, shape, generator=g)
    cases, done, c = [], 0, 0
    while done < rows:
        layers = int(rand(1, COMPARATOR_MAX_LAYERS))
        classes = [1, 2, 10, 1000][c] if c < 4 else int(rand(1, 64))
        n = min(per_case if classes < 100 else max(1, per_case // 10), rows - done)
        thresholds = rand(lo, hi, (layers,)) if c % 2 else rand(-2 ** 16, 2 ** 16, (layers,))
        candidate = rand(0, 1, (layers,)).bool()
        candidate[0] = True
        if c % 3 == 0:
            scores = rand(lo, hi, (n, classes))
        elif c % 3 == 1:
            scores = rand(-3, 3, (n, classes))
        else:
            scores = torch.full((n, classes), int(rand(lo, hi)))
        layer = rand(0, layers - 1, (n,))
        near = thresholds[layer] + rand(-1, 1, (n,))
        gate = torch.where(rand(0, 1, (n,)).bool(), near.clamp(lo, hi), rand(lo, hi, (n,)))
        exit_, cls = decide(scores, gate, layer, thresholds, candidate)
        beats = [[int(scores[i, k]), int(gate[i]), int(layer[i]), int(k == classes - 1)]
                 for i in range(n) for k in range(classes)]
        expected = exit_.long() | (cls << 1) | (layer << (1 + comparator.CLASS_BITS))
        cases.append({"ports": {"layers": layers}, "rows": n,
                      "loads": {"th_in": pack_fields([[t, m] for t, m in zip(thresholds.tolist(), candidate.tolist())],
                                                 comparator.THRESHOLD)},
                      "beats": pack_fields(beats, comparator.INP), "inputs": torch.tensor(beats),
                      "expected": expected.reshape(-1, 1)})
        done, c = done + n, c + 1
    return cases


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class Unit:
    """How to build, feed and read one unit under test."""
    name: str
    make_rtl: Callable[[], object]
    cases: Callable[[int, int], list[dict]]
    in_bits: int            # width of one input value (an add's lane is a pair of them)
    out_lanes: int
    out_bits: int

    @property
    def top(self) -> str:
        return f"qexit_unit_{self.name}"

    def pack(self, inputs: torch.Tensor) -> list[int]:
        """A case's inputs (beats, ...) → input-stream words."""
        return lanes_to_words(inputs.reshape(inputs.shape[0], -1), self.in_bits)

    def beats(self, case: dict) -> list[int]:
        """The input-stream words of a case: its own packed ``beats`` (a struct payload), or its
        ``inputs`` packed as lanes."""
        return case["beats"] if "beats" in case else self.pack(case["inputs"])


UNITS: dict[str, Unit] = {
    "requant": Unit("requant", lambda: units.RequantUnit(LANES), requant_cases, 32, LANES, 8),
    "add": Unit("add", lambda: units.AddUnit(LANES), add_cases, 8, LANES, 8),
    "gelu": Unit("gelu", lambda: units.GeluUnit(LANES), gelu_cases, 8, LANES, 8),
    "table": Unit("table", lambda: units.TableUnit(LANES), table_cases, 8, LANES, 8),
    "layernorm": Unit("layernorm", lambda: layernorm.LayerNormUnit(LN_MAX_D, LANES), layernorm_cases, 8, LANES, 8),
    "softmax": Unit("softmax", lambda: softmax.SoftmaxUnit(SM_MAX_ROW, LANES), softmax_cases, 32, LANES, 8),
    "comparator": Unit("comparator", lambda: comparator.ExitComparator(COMPARATOR_MAX_LAYERS), comparator_cases,
                       32, 1, 32),
}


def run_in_amaranth(unit: Unit, case: dict, timing: dict | None = None) -> torch.Tensor:
    """One case through the unit in Amaranth's own simulator (the same steps as ``sim.tb.units``,
    without back-pressure): the output values, shaped like ``case["expected"]``. ``timing``,
    when given, receives the cycles from the first input beat taken to the last output beat
    (``cycles``), both counted."""
    dut = unit.make_rtl()

    def raw(port):       # layout-typed payloads are read and written as plain integers
        return port.as_value() if hasattr(port, "as_value") else port

    beats, count = unit.beats(case), case["expected"].numel() // unit.out_lanes
    words: list[int] = []

    async def bench(ctx):
        for name, value in case["ports"].items():
            ctx.set(getattr(dut, name), value)
        for port, load in case.get("loads", {}).items():
            stream_port = getattr(dut, port)
            for word in load:
                ctx.set(stream_port.valid, 1)
                ctx.set(raw(stream_port.payload), word)
                await ctx.tick()
            ctx.set(stream_port.valid, 0)
        ctx.set(dut.out.ready, 1)
        pending, cycle, first = list(beats), 0, None
        while len(words) < count:
            ctx.set(dut.inp.valid, 1 if pending else 0)
            if pending:
                ctx.set(raw(dut.inp.payload), pending[0])
            took = pending and ctx.get(dut.inp.ready)
            got = ctx.get(dut.out.valid)
            payload = ctx.get(raw(dut.out.payload))
            await ctx.tick()
            if took:
                pending.pop(0)
                first = cycle if first is None else first
            if got:
                words.append(payload)
                if timing is not None and len(words) == count:
                    timing["cycles"] = cycle - first + 1
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return words_to_lanes(words, unit.out_lanes, unit.out_bits).reshape(case["expected"].shape)


def verify_unit(name: str, rows: int, seed: int, *, simulator: str | None = None,
                stall: bool = True, folder: Path | None = None) -> Result:
    """Build (cached) and run one unit on ``rows`` random rows plus its corners."""
    if name not in UNITS:
        raise QexitError(f"unknown unit {name!r}; choose from {', '.join(UNITS)}")
    if rows < 1:
        raise QexitError(f"--vectors {rows} must be at least 1")
    return run_unit(name, UNITS[name].cases(rows, seed), seed, simulator=simulator, stall=stall, folder=folder)


def build_unit(name: str, simulator: str | None = None) -> runner.Build:
    """The unit's RTL, built (cached)."""
    unit = UNITS[name]
    return runner.build(emit.to_verilog(unit.make_rtl(), unit.top), unit.top, simulator=simulator)


def run_unit(name: str, cases: list[dict], seed: int = 0, *, simulator: str | None = None,
             stall: bool = True, folder: Path | None = None) -> Result:
    """Build (cached) and run one unit on the given cases (``ports``, ``loads``, ``inputs``,
    ``expected``); random back-pressure on every other case when ``stall``."""
    unit = UNITS[name]
    res = run_cases(build_unit(name, simulator), cases, unit.beats, unit.out_lanes, unit.out_bits, seed,
                    stall=stall, folder=folder)
    res.figures = {"unit": name, **res.figures}
    return res


@dataclass(frozen=True)
class Outputs:
    """What ``simulate`` read back: per case the output values shaped like its ``expected``
    (None when the simulation gave no results), the cycles from its first input beat to its
    last output beat, whether it ran with random back-pressure; and the cocotb run."""
    values: list[torch.Tensor] | None
    cycles: list[int | None]
    stalled: list[bool]
    run: runner.Run
    simulator: str
    build_seconds: float


def simulate(b: runner.Build, cases: list[dict], beats: Callable[[dict], list[int]], out_lanes: int,
             out_bits: int, seed: int = 0, *, stall: bool = True, folder: Path | None = None) -> Outputs:
    """Run the cases through a built design with an ``inp`` and an ``out`` stream (the testbench
    ``sim.tb.units``): random back-pressure on every other case when ``stall``."""
    tb = [{"ports": c["ports"], "loads": c.get("loads", {}), "beats": beats(c),
           "count": c["expected"].numel() // out_lanes, "seed": seed * 1000 + i,
           "stall": stall and i % 2 == 1} for i, c in enumerate(cases)]
    with tempfile.TemporaryDirectory(prefix="qexit-units-") as tmp:
        cases_path, results_path = Path(tmp) / "cases.pt", Path(tmp) / "results.json"
        torch.save(tb, cases_path)
        run = runner.run(b, "sim.tb.units", folder=folder,
                         settings={"QEXIT_TB_CASES": str(cases_path), "QEXIT_TB_RESULTS": str(results_path)})
        results = json.loads(results_path.read_text()) if results_path.exists() else None
    stalled = [t["stall"] for t in tb]
    if results is None or len(results["outputs"]) != len(cases):
        return Outputs(None, [None] * len(cases), stalled, run, b.simulator, b.seconds)
    values = [words_to_lanes(words, out_lanes, out_bits).reshape(case["expected"].shape)
              for case, words in zip(cases, results["outputs"], strict=True)]
    return Outputs(values, results["cycles"], stalled, run, b.simulator, b.seconds)


def compare(cases: list[dict], out: Outputs, check: str = "unit") -> Result:
    """Every output value against the case's ``expected``: one record per case (its outputs
    matched, its cycles, whether it ran stalled), the first three mismatches of each."""
    res = Result(check, total=sum(c["expected"].numel() for c in cases), simulator=out.simulator,
                 build_seconds=out.build_seconds, sim_seconds=out.run.seconds,
                 figures={"rows": sum(c.get("rows", c["expected"].shape[0]) for c in cases)})
    if out.values is not None:
        for i, (case, got) in enumerate(zip(cases, out.values, strict=True)):
            wrong = (got != case["expected"]).nonzero().tolist()
            matched = case["expected"].numel() - len(wrong)
            res.matched += matched
            res.records.append({"case": i, "matched": matched, "total": case["expected"].numel(),
                                "cycles": out.cycles[i], "stalled": out.stalled[i]})
            res.first_mismatches += [{"case": i, "ports": case["ports"], "index": w, "got": int(got[tuple(w)]),
                                      "expected": int(case["expected"][tuple(w)])} for w in wrong[:3]]
    res.passed = out.run.passed and out.values is not None and res.matched == res.total
    res.log = "" if res.passed else runner.log_tail(out.run)
    return res


def run_cases(b: runner.Build, cases: list[dict], beats: Callable[[dict], list[int]], out_lanes: int,
              out_bits: int, seed: int = 0, *, stall: bool = True, folder: Path | None = None) -> Result:
    """``simulate`` the cases and ``compare`` every output with ``expected``."""
    return compare(cases, simulate(b, cases, beats, out_lanes, out_bits, seed, stall=stall, folder=folder))
