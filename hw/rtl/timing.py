"""Timing constants and tile geometry that the RTL is built on. The cost model
(``hw.cost.schedule``, ``hw.cost.timeline``) imports them; nothing here imports the cost model.
"""
from __future__ import annotations

from model.errors import QexitError

BUFFER_READ_LATENCY = 1    # Amaranth Memory read ports are synchronous
ROW_UNIT_LATENCY = 10      # the registered partial sum | the requantizer's 8 stages (hw.rtl.gemm.Requantizer) | write
READ_LATENCY = 3           # layer engine's scratch reader: go → first word valid (address, read, register, FIFO)
SIDE_LATENCY = 4           # its softmax side channel: go → the reader's first word into the softmax unit (3), + the write
MAX_K = 2 ** 17 - 1        # K * 128 * 128 must fit an int32 partial sum (no overflow before the bias)


def tile_counts(k: int, n: int, rows: int, cols: int) -> tuple[int, int]:
    """(KT, NT) = (ceil(K / R), ceil(N / C)): the k tiles and n tiles of a GEMM."""
    return -(-k // rows), -(-n // cols)


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
