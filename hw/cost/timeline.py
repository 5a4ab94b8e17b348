"""The layer engine's timeline: cycles of every descriptor of a program (``hw.program``), for the
controller's timing (``hw.rtl.layer``). ``qexit verify block`` checks it against the RTL to the cycle.
"""
from __future__ import annotations

from hw.cost import schedule
from hw.program import Desc
from hw.rtl.isa import FETCH_CYCLES, Op, Src, Unit
from hw.rtl.layernorm import row_cycles as ln_row_cycles
from hw.rtl.softmax import row_cycles as softmax_row_cycles
from hw.rtl.timing import READ_LATENCY, SIDE_LATENCY
from hw.rtl.units import AddUnit, GeluUnit, TableUnit

def desc_cycles(d: Desc, lanes: int, source: schedule.WeightSource = schedule.IDEAL) -> int:
    """Cycles of one descriptor that does not wait, from the cycle its fetch starts to the cycle
    the next fetch starts (a SOFTMAX: its issue only; ``softmax_cycles`` is the side channel's)."""
    f = d.fields
    if d.kind == "end":
        return FETCH_CYCLES
    if f["op"] == Op.SOFTMAX:
        return FETCH_CYCLES + 1
    if f["op"] == Op.GEMM:
        src = schedule.WeightSource(lanes, READ_LATENCY) if f.get("w_scratch") else source
        return FETCH_CYCLES + 1 + schedule.predict_cycles(lanes, lanes, f["m"], f["k"], f["n"], src) + 1
    total = f["total"]
    lat = READ_LATENCY if f["src"] == Src.SCRATCH or f["unit"] == Unit.ADD else 0
    unit = f["unit"]
    if unit == Unit.LN:
        rows = total // (f["elems"] // lanes)
        body = rows * ln_row_cycles(f["elems"], lanes)
    elif unit == Unit.SERIAL:
        body = total + 1
    elif unit == Unit.GELU:
        body = total + GeluUnit.LATENCY
    elif unit == Unit.TABLE:
        body = total + TableUnit.LATENCY
    elif unit == Unit.ADD:
        body = total + AddUnit.LATENCY
    else:
        body = total
    return FETCH_CYCLES + 1 + lat + body


def softmax_cycles(d: Desc, lanes: int) -> int:
    """Cycles the side channel stays busy after its start: the reader's latency, then one row
    after the other through the softmax unit into the probability memory."""
    rows = d["total"] // -(-d["elems"] // lanes)
    return SIDE_LATENCY + rows * softmax_row_cycles(d["elems"], lanes) - 1


def timeline(segment: list[Desc], lanes: int, source: schedule.WeightSource = schedule.IDEAL) -> list[tuple[int, int]]:
    """(cycles, waited) of every descriptor: the controller's time from its fetch to the next
    fetch, and how many of those cycles it waited for the softmax side channel. A descriptor
    that waits (``wait``, every SOFTMAX and the END) is dispatched at max(fetch + 1, the first
    cycle the side channel is idle); the others at fetch + 1."""
    t, idle_at, out = 0, 0, []
    for d in segment:
        waits = bool(d["wait"]) or d.kind == "end" or d["op"] == Op.SOFTMAX
        dispatch = max(t + 1, idle_at) if waits else t + 1
        waited = dispatch - (t + 1)
        nxt = dispatch + 1 if d.kind == "end" else dispatch - 1 + desc_cycles(d, lanes, source)
        if d["op"] == Op.SOFTMAX and d.kind != "end":
            idle_at = dispatch + 2 + softmax_cycles(d, lanes)
        out.append((nxt - t, waited))
        t = nxt
    return out


def predict(segment: list[Desc], lanes: int, source: schedule.WeightSource = schedule.IDEAL) -> list[int]:
    """Cycles of every descriptor of a segment; their sum is the segment's start → done count."""
    return [c for c, _ in timeline(segment, lanes, source)]




def shares(segment: list[Desc], lanes: int, source: schedule.WeightSource = schedule.IDEAL) -> dict[str, int]:
    """Controller cycles per descriptor kind (gemm, ln, softmax, gelu, add, move, transpose,
    params, tap, end). Softmax runs beside the GEMMs: its share is its issue plus the cycles
    the controller waited for it, the time it still takes from the layer."""
    out: dict[str, int] = {}
    for d, (c, waited) in zip(segment, timeline(segment, lanes, source)):
        out[d.kind] = out.get(d.kind, 0) + c - waited
        out["softmax"] = out.get("softmax", 0) + waited
    return out
