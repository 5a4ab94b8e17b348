"""The layer engine's timeline: cycles of every descriptor of a program (``hw.program``), for the
controller's timing (``hw.rtl.layer``). ``qexit verify block`` checks it against the RTL to the cycle.
"""
from __future__ import annotations

from hw.cost import schedule
from hw.program import Desc
from hw.rtl.accelerator import record_beats
from hw.rtl.comparator import ExitComparator
from hw.rtl.dense import MAC_PIPE
from hw.rtl.gemm import Requantizer
from hw.rtl.head import FEED_STAGES, ROOT_BITS, SOFTMAX_LANES, Z_STAGES, block_phases
from hw.rtl.isa import FETCH_CYCLES, Op, Src, Unit, param_beats
from hw.rtl.layernorm import row_cycles as ln_row_cycles
from hw.rtl.softmax import row_cycles as softmax_row_cycles
from hw.rtl.timing import READ_LATENCY, SIDE_LATENCY
from hw.rtl.units import AddUnit, GeluUnit, TableUnit
from model.exits.fixed import INV_BITS

def desc_cycles(d: Desc, lanes: int, source: schedule.WeightSource = schedule.IDEAL,
                port: schedule.MemoryPort | None = None) -> int:
    """Cycles of one descriptor that does not wait, from the cycle its fetch starts to the cycle
    the next fetch starts (a SOFTMAX: its issue only; ``softmax_cycles`` is the side channel's).
    With ``port`` (the accelerator's memory) a PARAM MOVE's words come through it, each
    ``param_beats`` beats; without, from a stream that always has the next word."""
    f = d.fields
    if d.kind == "end":
        return FETCH_CYCLES
    if f["op"] == Op.SOFTMAX:
        return FETCH_CYCLES + 1
    if f["op"] == Op.GEMM:
        src = schedule.WeightSource(lanes, READ_LATENCY) if f.get("w_scratch") else source
        return FETCH_CYCLES + 1 + schedule.predict_cycles(lanes, lanes, f["m"], f["k"], f["n"], src) + 1
    total = f["total"]
    if port is not None and f["src"] == Src.PARAM:          # the last word with its last beat
        return FETCH_CYCLES + port.beat(total * param_beats(lanes) - 1) + 1
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


def timeline(segment: list[Desc], lanes: int, source: schedule.WeightSource = schedule.IDEAL,
             port: schedule.MemoryPort | None = None) -> list[tuple[int, int]]:
    """(cycles, waited) of every descriptor: the controller's time from its fetch to the next
    fetch, and how many of those cycles it waited for the softmax side channel. A descriptor
    that waits (``wait``, every SOFTMAX and the END) is dispatched at max(fetch + 1, the first
    cycle the side channel is idle); the others at fetch + 1."""
    t, idle_at, out = 0, 0, []
    for d in segment:
        waits = bool(d["wait"]) or d.kind == "end" or d["op"] == Op.SOFTMAX
        dispatch = max(t + 1, idle_at) if waits else t + 1
        waited = dispatch - (t + 1)
        nxt = dispatch + 1 if d.kind == "end" else dispatch - 1 + desc_cycles(d, lanes, source, port)
        if d["op"] == Op.SOFTMAX and d.kind != "end":
            idle_at = dispatch + 2 + softmax_cycles(d, lanes)
        out.append((nxt - t, waited))
        t = nxt
    return out


def predict(segment: list[Desc], lanes: int, source: schedule.WeightSource = schedule.IDEAL,
            port: schedule.MemoryPort | None = None) -> list[int]:
    """Cycles of every descriptor of a segment; their sum is the segment's start → done count.
    With ``port``, as the accelerator runs it: weights and parameters through its memory."""
    if port is not None:
        source = port.weights
    return [c for c, _ in timeline(segment, lanes, source, port)]


# ---------------------------------------------------------------------------- the sequencer
# (hw.rtl.accelerator): the cycles of an image from its IMAGE state to its result's WRITE

def segment_cycles(segment: list[Desc], lanes: int, port: schedule.MemoryPort, prog_beats: int,
                   image_words: int = 0) -> int:
    """A segment in the accelerator, from its SEGMENT_READ to the next one: the table read (1),
    the image's words into the scratchpad (``image_words``; the PROGRAM state's 1), the program's
    ``prog_beats`` beats a descriptor, START (1), the engine's IDLE (1) and its start-to-done,
    and the cycle that sees ``done``."""
    c = 4 + port.beat(len(segment) * prog_beats - 1) + sum(predict(segment, lanes, port=port))
    if image_words:
        c += port.beat(image_words - 1) + 1
    return c


def result_cycles(lanes: int) -> int:
    """The result's write, from WRITE to the next image's IMAGE state: AW, the record's beats,
    B (the memory model answers the cycle after the last beat), the writer's and the sequencer's
    return."""
    return 4 + record_beats(lanes)


def final_cycles(classes: int) -> int:
    """After the final segment's ``done``: its logits one a cycle into the comparator, the
    comparator's decision (``ExitComparator.LATENCY``) and the cycle that sees it."""
    return classes + 2




def shares(segment: list[Desc], lanes: int, source: schedule.WeightSource = schedule.IDEAL,
           port: schedule.MemoryPort | None = None) -> dict[str, int]:
    """Controller cycles per descriptor kind (gemm, ln, softmax, gelu, add, move, transpose,
    params, tap, end). Softmax runs beside the GEMMs: its share is its issue plus the cycles
    the controller waited for it, the time it still takes from the layer."""
    out: dict[str, int] = {}
    for d, (c, waited) in zip(segment, timeline(segment, lanes, source, port)):
        out[d.kind] = out.get(d.kind, 0) + c - waited
        out["softmax"] = out.get("softmax", 0) + waited
    return out


def streamed_head_cycles(head, lanes: int, port: schedule.MemoryPort, tap_tail: int) -> int:
    """A candidate's decision with the streamed head (``hw.rtl.dense.StreamDense``, ``lanes``
    multipliers): the cycles from the one where the sequencer sees the tapped segment's
    ``done`` (and starts the fetch of the candidate's block) to the one where it sees the
    comparator's decision. The head took its last token ``tap_tail`` cycles before ``done``;
    it then takes the block's beats, one a cycle at most, each when it has arrived
    (``port.beat``) and its phase is ready: the header and the LayerNorm's words at once, fc1
    after FEED and the LayerNorm, fc2 and the scores each after the previous layer's pipeline
    tail; then the fixed phases (``head_cycles``' SQRT to OUT) and the comparator."""
    ph = block_phases(head, lanes, lanes)
    j = 0

    def take(n: int, ready: int) -> int:
        nonlocal j
        c = ready - 1
        for _ in range(n):
            c = max(port.beat(j), c + 1)
            j += 1
        return c

    w = head.width // lanes
    tail = MAC_PIPE + Requantizer.LATENCY + 1
    last = take(ph["header"] + ph["ln"], 1 - tap_tail)
    last = take(ph["fc1"], last + 1 + w + FEED_STAGES + ln_row_cycles(head.width, lanes) - w)
    last = take(ph["fc2"], last + tail + 1)
    last = take(ph["scores"], last + tail + 1)
    sqrt = last + MAC_PIPE + 1
    out = sqrt + ROOT_BITS + (INV_BITS + 1) + (head.classes + Z_STAGES) \
        + softmax_row_cycles(head.classes, SOFTMAX_LANES) + 2 + head.classes - 1
    return out + ExitComparator.LATENCY
