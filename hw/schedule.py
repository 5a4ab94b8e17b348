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
* period ``P = max(M, R)``: tile u starts at ``T_u = R + u * P``;
* **fill**, cycles [0, R): tile 0's R weight rows load into bank 0, one row per cycle;
* **stream**, cycles [T_u, T_u + M): one activation row of tile u is read per cycle;
* **load**, cycles [T_u + P - R, T_u + P): tile u+1's weight rows load into the other bank
  (P >= R fits them in a period; 2P >= M + R keeps them clear of tile u-1's last use);
* **drain**: the last row read (cycle T_{T-1} + M - 1) leaves the buffer after
  ``BUFFER_READ_LATENCY``, crosses the array in ``R + C - 1`` cycles and the row unit in
  ``ROW_UNIT_LATENCY`` (accumulate + bias + saturate, multiply, round-shift + saturate,
  write); ``done`` is high in the next cycle.

Measured cycles = clock edges from the one that samples ``start`` to the one that raises
``done`` (the RTL's ``cycles`` counter counts the same). Loading the buffers before ``start``
and unloading the outputs after ``done`` are not included; they take one cycle per stream
beat (``load_beats``, ``unload_beats``) when the host keeps up. The engine accepts loads only
while idle, so those beats are cycles the array waits: ``io_cycles`` counts them (the three
load streams are independent ports, so a host that feeds them together waits for the
longest), and every utilization is stated two ways, ``utilization`` (start to done) and
``utilization_with_io`` (start to done plus the loads and the unload).
"""
from __future__ import annotations

from dataclasses import dataclass

from model.errors import QexitError

BUFFER_READ_LATENCY = 1    # Amaranth Memory read ports are synchronous
ROW_UNIT_LATENCY = 4       # accumulate + bias + saturate | multiply | round, shift, saturate | write
MAX_K = 2 ** 17 - 1        # K * 128 * 128 must fit an int32 partial sum (no overflow before the bias)


def tile_counts(k: int, n: int, rows: int, cols: int) -> tuple[int, int]:
    """(KT, NT) = (ceil(K / R), ceil(N / C)): the k tiles and n tiles of a GEMM."""
    return -(-k // rows), -(-n // cols)


def utilization(macs: int, rows: int, cols: int, cycles: int) -> float:
    """Useful MACs over what an R x C array could do in ``cycles``: the one definition."""
    return macs / (rows * cols * max(1, cycles))


def array_latency(rows: int, cols: int) -> int:
    """Cycles from an activation row entering the array (unskewed) to its C sums leaving it (deskewed)."""
    return rows + cols - 1


def fill_cycles(rows: int) -> int:
    """Cycles before the first activation row: tile 0's weight rows, one per cycle."""
    return rows


def period(m: int, rows: int) -> int:
    """Cycles between the starts of successive tiles: M rows stream, R weight rows load."""
    return max(m, rows)


def load_offset(m: int, rows: int) -> int:
    """Position in a period where the next tile's weight rows start loading."""
    return period(m, rows) - rows


def drain_cycles(rows: int, cols: int) -> int:
    """Cycles from the end of the last stream phase to ``done``."""
    return BUFFER_READ_LATENCY + array_latency(rows, cols) + ROW_UNIT_LATENCY - 1


def tile_order(kt: int, nt: int) -> list[tuple[int, int]]:
    """(k tile, n tile) pairs in the order the engine runs them: n outer, k inner."""
    return [(i, j) for j in range(nt) for i in range(kt)]


def check_shape(m: int, k: int, n: int) -> None:
    """Reject a GEMM shape the engine cannot run (before anything is built or simulated)."""
    for name, v in (("M", m), ("K", k), ("N", n)):
        if not isinstance(v, int) or v < 1:
            raise QexitError(f"GEMM shape {m}x{k}x{n}: {name} = {v} must be a positive integer; "
                             f"give shapes as MxKxN with every dimension >= 1")
    if k > MAX_K:
        raise QexitError(f"GEMM shape {m}x{k}x{n}: K = {k} exceeds {MAX_K}, where int32 partial "
                         f"sums could overflow; split K")


def check_array(rows: int, cols: int) -> None:
    for name, v in (("rows", rows), ("cols", cols)):
        if not isinstance(v, int) or v < 1:
            raise QexitError(f"systolic array {name} = {v} must be an integer >= 1; "
                             f"use e.g. --rows 16 --cols 16")


@dataclass(frozen=True)
class Tile:
    """One tile of the schedule: which weights it holds and when its phases run."""
    index: int          # u, position in the tile order
    i: int              # k tile: K rows i*R .. i*R+R-1
    j: int              # n tile: N columns j*C .. j*C+C-1
    bank: int           # weight register bank of the PEs (u % 2)
    start: int          # T_u: cycle of its first activation row
    stream: int         # cycles of its stream phase (M)
    load_start: int     # cycle its weights start loading (R rows, one per cycle)
    first: bool         # first k tile: the accumulator starts from zero
    last: bool          # last k tile: add bias, requantize, write the outputs


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
    fill: int
    drain: int
    tiles: tuple[Tile, ...]

    @property
    def cycles(self) -> int:
        """Predicted cycles from ``start`` sampled to ``done`` high (equal to the RTL's count)."""
        last = self.tiles[-1]
        return last.start + last.stream + self.drain

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    @property
    def load_beats(self) -> dict[str, int]:
        """Stream beats (one cycle each) to fill the buffers before ``start``."""
        return {"a": self.m * self.kt, "w": len(self.tiles) * self.rows, "p": self.nt}

    @property
    def unload_beats(self) -> int:
        return self.m * self.nt

    @property
    def io_cycles(self) -> int:
        """Cycles the engine waits, idle, for its buffers: the longest load stream (the three
        load ports run in parallel) plus the unload."""
        return max(self.load_beats.values()) + self.unload_beats

    @property
    def utilization(self) -> float:
        """Compute only: useful MACs over the array's capacity from ``start`` to ``done``."""
        return utilization(self.macs, self.rows, self.cols, self.cycles)

    @property
    def utilization_with_io(self) -> float:
        """Counting every cycle the engine waits for loads and the unload as well."""
        return utilization(self.macs, self.rows, self.cols, self.cycles + self.io_cycles)

    def phases(self) -> list[tuple[str, int, int]]:
        """(name, first cycle, cycles) of every phase in time order, for reports and tests."""
        out = [("fill", 0, self.fill)]
        for t in self.tiles:
            out.append((f"stream t{t.index}", t.start, t.stream))
            if t.index + 1 < len(self.tiles):
                out.append((f"load t{t.index + 1}", t.start + self.period - self.rows, self.rows))
        last = self.tiles[-1]
        out.append(("drain", last.start + last.stream, self.drain))
        return out


def plan(rows: int, cols: int, m: int, k: int, n: int) -> Schedule:
    """The engine's schedule for an M x K x N GEMM on an R x C array."""
    check_array(rows, cols)
    check_shape(m, k, n)
    kt, nt = tile_counts(k, n, rows, cols)
    p, fill = period(m, rows), fill_cycles(rows)
    tiles = []
    for u, (i, j) in enumerate(tile_order(kt, nt)):
        start = fill + u * p
        tiles.append(Tile(index=u, i=i, j=j, bank=u % 2, start=start, stream=m,
                          load_start=start - rows, first=i == 0, last=i == kt - 1))
    return Schedule(rows=rows, cols=cols, m=m, k=k, n=n, kt=kt, nt=nt, period=p, fill=fill,
                    drain=drain_cycles(rows, cols), tiles=tuple(tiles))


def predict_cycles(rows: int, cols: int, m: int, k: int, n: int) -> int:
    """Closed form of ``plan(...).cycles``: R + (T - 1) P + M + drain, T = ceil(K/R) ceil(N/C)."""
    check_array(rows, cols)
    check_shape(m, k, n)
    kt, nt = tile_counts(k, n, rows, cols)
    t = kt * nt
    return fill_cycles(rows) + (t - 1) * period(m, rows) + m + drain_cycles(rows, cols)


# --------------------------------------------------------------------------- peers' formulas
# These are the cycle formulas of SCALE-Sim v2's paper, not the SCALE-Sim package: the real
# package (scalesim 3.0.0) is run side by side in issue G.

def scalesim_v2_os_formula(rows: int, cols: int, m: int, k: int, n: int) -> int:
    """SCALE-Sim v2's output-stationary formula: ceil(M/R) ceil(N/C) (R + C + K - 2), no overlap of folds."""
    return -(-m // rows) * -(-n // cols) * (rows + cols + k - 2)


def scalesim_v2_ws_formula(rows: int, cols: int, m: int, k: int, n: int) -> int:
    """SCALE-Sim v2's weight-stationary formula: ceil(K/R) ceil(N/C) (2R + C + M - 2), no overlap of folds."""
    kt, nt = tile_counts(k, n, rows, cols)
    return kt * nt * (2 * rows + cols + m - 2)
