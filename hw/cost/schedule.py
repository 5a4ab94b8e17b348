"""The tile schedule of the GEMM engine as plain Python data, and the cycle model built on it.

Dataflow: weight stationary, tokens streaming
----------------------------------------------
The R x C array holds a tile of the weights, K along its R rows and N along its C columns.
The activation rows (tokens) stream through it in time, one token per cycle, each carrying
R values of its K slice; each column sums its R products down into an int32 partial sum.
The token count M is therefore a *temporal* dimension and is never padded: ViT-B/32's 50
tokens take 50 cycles per tile, where an array with tokens on its 16 rows would pad 50 to 64
(22% waste). K and N of a transformer (768, 3072) are multiples of 8 and 16, so the spatial
dimensions are full as well. Partial sums over the K tiles collect in an int32 accumulator
buffer; the last K tile adds the bias, requantizes to int8 and writes the output buffer.

Tiles overlap: every PE holds two weight registers (a double buffer). A bank bit travels
with each activation, so each PE switches bank exactly when the first token of the next tile
reaches it, and the next tile's R weight rows load into the idle bank while the current
tile streams. Tiles therefore follow each other with no fill or drain in between: the array
fills once and drains once per GEMM. SCALE-Sim's formulas charge fill and drain to every
fold (SCALE-Sim v2's WS formula: 2R + C + M - 2 cycles per fold), which is what this
schedule avoids.

Timeline (engine cycle 0 is the first cycle after ``start`` is sampled high)
-----------------------------------------------------------------------------
* tile order: n tiles outer, k tiles inner (u = j * KT + i), so the K reduction of one
  block of C outputs finishes before the next block starts;
* period ``P = max(M, R)``: with a weight source that keeps up, tile u starts at
  ``T_u = R + u * P``;
* **fill**, cycles [0, R): tile 0's R weight rows load into bank 0, one row per cycle;
* **stream**, cycles [T_u, T_u + M): one activation row of tile u is read per cycle;
* **load**, cycles [T_u + P - R, T_u + P): tile u+1's weight rows load into the other bank
  (P >= R fits them in a period; 2P >= M + R keeps them clear of tile u-1's last use);
* the weights are not stored: they stream from external memory (``WeightSource``: a
  bandwidth in bytes/cycle and a first-word latency) straight into the idle bank. A row that
  is late is taken when it arrives, and tile u+1 then starts the cycle after its last row
  (never earlier than ``T_u + P``), so loads only ever move later, which the double buffer
  allows; ``plan`` replays this word by word, so the stalls are predicted exactly;
* **drain**: the last row read (cycle T_{T-1} + M - 1) leaves the buffer after
  ``BUFFER_READ_LATENCY``, crosses the array in ``R + C - 1`` cycles and the row unit in
  ``ROW_UNIT_LATENCY`` (accumulate + bias + saturate, multiply, round-shift + saturate,
  write); ``done`` is high in the next cycle.

Measured cycles = clock edges from the one that samples ``start`` to the one that raises
``done`` (the RTL's ``cycles`` counter counts the same), weight stalls included. Loading the
activation and parameter buffers before ``start`` and unloading the outputs after ``done``
are not included; they take one cycle per stream beat (``load_beats``, ``unload_beats``)
when the host keeps up. The engine accepts those loads only while idle, so they are cycles
the array waits: ``io_cycles`` counts them (the two load streams are independent ports, so a
host that feeds them together waits for the longer), and every utilization is stated two
ways, ``utilization`` (start to done) and ``utilization_with_io`` (plus the loads and the
unload). In the layer engine activations stay on chip and these loads go away.
"""
from __future__ import annotations

import functools

import math
from dataclasses import dataclass
from fractions import Fraction

from hw.rtl.timing import BUFFER_READ_LATENCY, ROW_UNIT_LATENCY, array_latency, check_array, check_shape, fill_cycles, load_offset, period, tile_counts, tile_order
from model.errors import QexitError


def utilization(macs: int, rows: int, cols: int, cycles: int) -> float:
    """Useful MACs over what an R x C array could do in ``cycles``: the one definition."""
    return macs / (rows * cols * max(1, cycles))


def drain_cycles(rows: int, cols: int) -> int:
    """Cycles from the end of the last stream phase to ``done``."""
    return BUFFER_READ_LATENCY + array_latency(rows, cols) + ROW_UNIT_LATENCY - 1


@dataclass(frozen=True)
class WeightSource:
    """The external memory that streams the weights: a deterministic model, shared by the
    testbench's DRAM model and the cycle model (so stalls are predicted exactly).

    Word ``w`` (one weight row, C bytes) can be taken from cycle ``available(w)`` on, cycles
    counted from the one after ``start`` is sampled: the first word after ``latency`` cycles,
    then ``bandwidth`` bytes per cycle (data that arrives while the engine is not taking it
    waits in the source). ``bandwidth=None`` is a source that always has the next word.
    """
    bandwidth: float | None = None
    latency: int = 0

    def __post_init__(self):
        if self.bandwidth is not None and not (isinstance(self.bandwidth, (int, float)) and self.bandwidth > 0):
            raise QexitError(f"bandwidth {self.bandwidth} must be > 0 bytes/cycle, e.g. --bandwidth 8")
        if not isinstance(self.latency, int) or self.latency < 0:
            raise QexitError(f"latency {self.latency} must be an integer >= 0 cycles")

    def available(self, word: int, word_bytes: int) -> int:
        if self.bandwidth is None:
            return self.latency
        bw = Fraction(str(self.bandwidth))
        return self.latency + math.ceil(Fraction((word + 1) * word_bytes) / bw) - 1


IDEAL = WeightSource()

FETCH_DELAY = 2         # a fetch's go -> its first burst's AR taken -> t = 0 of the memory's timing


@dataclass(frozen=True)
class MemoryPort:
    """The accelerator's memory read port as the cycle model sees it (``sim.harness.AxiMemory``
    is the same definition in HDL): ``bandwidth`` bytes/cycle (None: one beat every cycle),
    ``latency`` cycles to the first beat of a fetch that finds the memory idle, beats of
    ``beat_bytes``, at most one a cycle, and a fetcher that queues its bursts ahead (so a fetch
    pays the latency once)."""
    bandwidth: float | None
    latency: int
    beat_bytes: int

    def beat(self, j: int) -> int:
        """The cycle beat ``j`` of a fetch is offered, counted from the fetch's ``go``, when
        every earlier beat was taken as soon as it was offered."""
        arrive = j if self.bandwidth is None else max(j, WeightSource(self.bandwidth, 0).available(j, self.beat_bytes))
        return FETCH_DELAY + self.latency + arrive

    @property
    def weights(self) -> WeightSource:
        """The weight stream as a GEMM sees it: its fetch starts with the GEMM (engine cycle 0
        is the cycle after go)."""
        return WeightSource(self.bandwidth, self.latency + FETCH_DELAY - 1)


@dataclass(frozen=True)
class Tile:
    """One tile of the schedule: which weights it holds and when its phases run."""
    index: int          # u, position in the tile order
    i: int              # k tile: K rows i*R .. i*R+R-1
    j: int              # n tile: N columns j*C .. j*C+C-1
    bank: int           # weight register bank of the PEs (u % 2)
    start: int          # T_u: cycle of its first activation row
    stream: int         # cycles of its stream phase (M)
    loads: tuple[int, ...]  # the cycle each of its R weight rows is taken from the stream
    first: bool         # first k tile: the accumulator starts from zero
    last: bool          # last k tile: add bias, requantize, write the outputs

    @property
    def load_start(self) -> int:
        return self.loads[0]

    @property
    def load_end(self) -> int:
        """The cycle after its last weight row is taken."""
        return self.loads[-1] + 1


@dataclass(frozen=True)
class Schedule:
    rows: int
    cols: int
    m: int
    k: int
    n: int
    kt: int             # ceil(K / R)
    nt: int             # ceil(N / C)
    period: int
    fill: int           # cycles before tile 0's first activation row (R with an ideal source)
    drain: int
    tiles: tuple[Tile, ...]
    source: WeightSource = IDEAL

    @property
    def cycles(self) -> int:
        """Predicted cycles from ``start`` sampled to ``done`` high (equal to the RTL's count)."""
        last = self.tiles[-1]
        return last.start + last.stream + self.drain

    @property
    def stall_cycles(self) -> int:
        """Cycles the weight stream added to the ideal schedule."""
        return self.cycles - ideal_cycles(self.rows, self.cols, self.m, self.k, self.n)

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    @property
    def load_beats(self) -> dict[str, int]:
        """Stream beats (one cycle each) to fill the buffers before ``start``."""
        return {"a": self.m * self.kt, "p": self.nt}

    @property
    def weight_beats(self) -> int:
        """Weight rows streamed during the run (one C-byte word each)."""
        return len(self.tiles) * self.rows

    @property
    def unload_beats(self) -> int:
        return self.m * self.nt

    @property
    def io_cycles(self) -> int:
        """Cycles the engine waits, idle, for its buffers: the longer load stream (the two
        load ports run in parallel) plus the unload. The weights stream during the run; their
        stalls are in ``cycles``."""
        return max(self.load_beats.values()) + self.unload_beats

    @property
    def utilization(self) -> float:
        """Useful MACs over the array's capacity from ``start`` to ``done`` (weight stalls included)."""
        return utilization(self.macs, self.rows, self.cols, self.cycles)

    @property
    def utilization_with_io(self) -> float:
        """Counting every cycle the engine waits for loads and the unload as well."""
        return utilization(self.macs, self.rows, self.cols, self.cycles + self.io_cycles)

    def phases(self) -> list[tuple[str, int, int]]:
        """(name, first cycle, cycles) of every phase in time order, for reports and tests."""
        out = [("fill", 0, self.fill)]
        for t in self.tiles:
            if t.index:
                out.append((f"load t{t.index}", t.load_start, t.load_end - t.load_start))
            out.append((f"stream t{t.index}", t.start, t.stream))
        last = self.tiles[-1]
        out.append(("drain", last.start + last.stream, self.drain))
        return sorted(out, key=lambda ph: ph[1])


def plan(rows: int, cols: int, m: int, k: int, n: int, source: WeightSource = IDEAL) -> Schedule:
    """The engine's schedule for an M x K x N GEMM on an R x C array, its weights streamed
    from ``source``: each weight row is taken at the first cycle that both the controller
    (FILL, then from ``load_offset`` in each period on) and the source allow; a tile starts
    one period after the previous one, or the cycle after its last weight row if that is later.
    """
    check_array(rows, cols)
    check_shape(m, k, n)
    kt, nt = tile_counts(k, n, rows, cols)
    p = period(m, rows)
    word = 0

    def load(earliest: int) -> tuple[int, ...]:         # the cycles its R rows are taken
        nonlocal word
        cycles = []
        for _ in range(rows):
            earliest = max(earliest, source.available(word, cols))
            cycles.append(earliest)
            earliest, word = earliest + 1, word + 1
        return tuple(cycles)

    order = tile_order(kt, nt)
    tiles, loads = [], load(0)
    start = loads[-1] + 1
    for u, (i, j) in enumerate(order):
        tiles.append(Tile(index=u, i=i, j=j, bank=u % 2, start=start, stream=m, loads=loads,
                          first=i == 0, last=i == kt - 1))
        if u + 1 < len(order):
            loads = load(start + load_offset(m, rows))
            start = max(start + p, loads[-1] + 1)
    return Schedule(rows=rows, cols=cols, m=m, k=k, n=n, kt=kt, nt=nt, period=p, fill=tiles[0].start,
                    drain=drain_cycles(rows, cols), tiles=tuple(tiles), source=source)


def ideal_cycles(rows: int, cols: int, m: int, k: int, n: int) -> int:
    """Cycles with a source that always has the next weight row: R + (T - 1) P + M + drain."""
    check_array(rows, cols)
    check_shape(m, k, n)
    kt, nt = tile_counts(k, n, rows, cols)
    return fill_cycles(rows) + (kt * nt - 1) * period(m, rows) + m + drain_cycles(rows, cols)


@functools.lru_cache(maxsize=4096)
def predict_cycles(rows: int, cols: int, m: int, k: int, n: int, source: WeightSource = IDEAL) -> int:
    """``plan(...).cycles``; the closed form ``ideal_cycles`` when the source never stalls.
    Remembered per shape: a model repeats its layers' GEMMs (ViT-B/32 on 8x8 plans 27,648
    tiles a QKV GEMM, seconds of exact fractions each time)."""
    if source == IDEAL:
        return ideal_cycles(rows, cols, m, k, n)
    return plan(rows, cols, m, k, n, source).cycles


# --------------------------------------------------------------------------- peers' formulas
# These are the cycle formulas of SCALE-Sim v2's paper, not the SCALE-Sim package: the real
# package (scalesim 3.0.0) is run side by side in benchmarks/bench_scalesim.py.

def scalesim_v2_os_formula(rows: int, cols: int, m: int, k: int, n: int) -> int:
    """SCALE-Sim v2's output-stationary formula: ceil(M/R) ceil(N/C) (R + C + K - 2), no overlap of folds."""
    return -(-m // rows) * -(-n // cols) * (rows + cols + k - 2)


def scalesim_v2_ws_formula(rows: int, cols: int, m: int, k: int, n: int) -> int:
    """SCALE-Sim v2's weight-stationary formula: ceil(K/R) ceil(N/C) (2R + C + M - 2), no overlap of folds."""
    kt, nt = tile_counts(k, n, rows, cols)
    return kt * nt * (2 * rows + cols + m - 2)
