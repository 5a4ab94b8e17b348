"""The host side of the GEMM engine, shared by every driver: operand checks, the buffer
layouts (packing), the reference it must equal, and the one engine-driving protocol.

The protocol (``hw/rtl/gemm.py`` states it from the engine's side), written once in ``drive``.
The testbenches run ``sim.harness.GemmHarness``: the engine plus an HDL model of the external
memory that streams the weights into ``w_in`` (``hw.cost.schedule.WeightSource`` timing), so no
Python runs while the engine computes.

1. while the engine is idle, write the a and p buffers and the memory model's weight rows
   through their load streams, one word per beat, in address order from 0 (``GemmJob.loads``);
2. set the memory model (``harness.source_ports``) and the descriptor ``m``, ``k``, ``n``, and
   pulse ``start``;
3. wait for ``done``; the cycles from the edge that samples ``start`` to the one that raises
   ``done`` are what ``hw.cost.schedule`` predicts for that source;
4. read ``GemmJob.unload_words`` words from the ``out`` stream and unpack them.

A driver supplies the four steps for its simulator (``load``, ``start``, ``wait_done``,
``unload``): ``AmaranthDriver`` below for Amaranth's own simulator, ``sim.tb.gemm.Engine`` for
cocotb. (The free-running Verilator harness in ``sim.gemm`` times start → done of the same
harness with an ideal memory model, without cocotb.)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hw.cost.schedule import IDEAL, WeightSource, tile_counts
from hw.rtl.gemm import PARAM_BITS
from model import intops
from model.errors import QexitError
from sim.harness import source_ports

# --------------------------------------------------------------------------- operands

def check_operands(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, mult: torch.Tensor,
                   shift: torch.Tensor) -> None:
    """Raise if the operands break the numeric contract (checked before any simulation)."""
    intops.check_int8(a, "activations")
    intops.check_int8(w, "weights")
    if a.dim() != 2 or w.dim() != 2 or a.shape[1] != w.shape[1]:
        raise QexitError(f"activations {tuple(a.shape)} and weights {tuple(w.shape)} must be "
                         f"(M, K) and (N, K) with the same K")
    m, n = a.shape[0], w.shape[0]
    if bias.dtype != torch.int64 or tuple(bias.shape) not in ((n,), (m, n)):
        raise QexitError(f"bias must be an int64 tensor of shape ({n},) (one per output channel) or "
                         f"({m}, {n}) (one per token and channel), got {bias.dtype} {tuple(bias.shape)}")
    for name, v in (("multiplier", mult), ("shift", shift)):
        if v.dtype != torch.int64 or tuple(v.shape) != (n,):
            raise QexitError(f"{name} must be an int64 tensor of shape ({n},), one per output "
                             f"channel, got {v.dtype} {tuple(v.shape)}")
    if bias.numel() and (bias.min() < intops.INT32_MIN or bias.max() > intops.INT32_MAX):
        raise QexitError("bias holds values outside int32; requantize the model again")
    intops.check_multiplier(mult, shift, "requantization")


def reference(a, w, bias, mult, shift, raw: bool = False) -> torch.Tensor:
    """What the engine must output, from ``model.intops`` (the numeric contract): int8, or with
    ``raw`` the int32 accumulators ``sat32(a @ w.T + bias)``."""
    acc = intops.gemm(a, w, bias)
    return acc if raw else intops.requantize(acc, mult, shift)


# --------------------------------------------------------------------------- buffer layouts

LANE_TYPES = {8: torch.int8, 32: torch.int32}


def lanes_to_words(values: torch.Tensor, bits: int) -> list[int]:
    """(words, lanes) integers → stream words of ``bits``-bit two's-complement lanes, lane 0 in
    the low bits (one pass through bytes, little endian). Shared by every testbench."""
    raw = values.to(LANE_TYPES[bits]).contiguous().numpy().view("uint8")
    return [int.from_bytes(row.tobytes(), "little") for row in raw.reshape(-1, values.shape[-1] * bits // 8)]


def words_to_lanes(words: list[int], lanes: int, bits: int) -> torch.Tensor:
    """Stream words → (words, lanes) signed integers: the inverse of ``lanes_to_words``. A word
    may come as a negative int (a simulator reading a signed payload): its two's complement."""
    mask = (1 << (lanes * bits)) - 1
    data = b"".join((w & mask).to_bytes(lanes * bits // 8, "little") for w in words)
    return torch.frombuffer(bytearray(data), dtype=LANE_TYPES[bits]).to(torch.int64).reshape(len(words), lanes)


def _pad(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    out = torch.zeros(rows, cols, dtype=torch.int64)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def pack_activations(a: torch.Tensor, rows: int) -> list[int]:
    """A (M, K) → a-buffer words: word m*KT + i holds a[m, i*R : i*R+R]."""
    m, k = a.shape
    kt, _ = tile_counts(k, 1, rows, 1)
    return lanes_to_words(_pad(a, m, kt * rows).reshape(m * kt, rows), 8)


def pack_weights(w: torch.Tensor, rows: int, cols: int) -> list[int]:
    """W (N, K) → w-buffer words in tile order: word u*R + r holds w[j*C : j*C+C, i*R + r]."""
    n, k = w.shape
    kt, nt = tile_counts(k, n, rows, cols)
    wt = _pad(w, nt * cols, kt * rows).t()                       # (K_pad, N_pad)
    tiles = wt.reshape(kt, rows, nt, cols).permute(2, 0, 1, 3)    # (j, i, r, c): n outer, k inner
    return lanes_to_words(tiles.reshape(-1, cols), 8)


def pack_params(bias: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor, cols: int) -> list[int]:
    """Per-channel bias, multiplier and shift → p-buffer words, one per n tile."""
    n = bias.shape[0]
    _, nt = tile_counts(1, n, 1, cols)
    lanes = [(b & 0xFFFFFFFF) | (mu << 32) | (s << 63)
             for b, mu, s in zip(bias.tolist(), mult.tolist(), shift.tolist())]
    lanes += [0] * (nt * cols - n)
    return [sum(lanes[j * cols + c] << (PARAM_BITS * c) for c in range(cols)) for j in range(nt)]


def pack_token_bias(bias: torch.Tensor, cols: int) -> list[int]:
    """A per-token bias (M, N) → tbias-buffer words: word m*NT + j holds bias[m, j*C : j*C+C], int32."""
    m, n = bias.shape
    _, nt = tile_counts(1, n, 1, cols)
    return lanes_to_words(_pad(bias, m, nt * cols).reshape(m * nt, cols), 32)


def unpack_outputs(words: list[int], m: int, n: int, cols: int, raw: bool = False) -> torch.Tensor:
    """out-buffer words (row-major, M * NT of them) → int8 values (M, N) as int64; with ``raw``
    the raw_out words (C int32 lanes each) → int32 values."""
    _, nt = tile_counts(1, n, 1, cols)
    if len(words) != m * nt:
        raise QexitError(f"expected {m * nt} output words, got {len(words)}")
    return words_to_lanes(words, cols, 32 if raw else 8).reshape(m, nt * cols)[:, :n]


# --------------------------------------------------------------------------- the protocol

@dataclass(frozen=True)
class GemmJob:
    """One GEMM as the engine sees it: the stream words to load, the descriptor, the unload."""
    m: int
    k: int
    n: int
    cols: int
    loads: tuple[tuple[str, list[int]], ...]     # (stream port, words) loaded while idle
    unload_words: int
    raw: bool = False                             # int32 outputs on raw_out
    token_bias: bool = False                      # the bias is per token, in the tbias buffer

    @property
    def unload_port(self) -> str:
        return "raw_out" if self.raw else "out"

    def outputs(self, words: list[int]) -> torch.Tensor:
        return unpack_outputs(words, self.m, self.n, self.cols, self.raw)


def gemm_job(case: dict, rows: int, cols: int) -> GemmJob:
    """Pack one case (``a``, ``w``, ``bias``, ``mult``, ``shift``) for an R x C engine."""
    a, w = case["a"], case["w"]
    m, k, n = a.shape[0], a.shape[1], w.shape[0]
    _, nt = tile_counts(k, n, rows, cols)
    bias = case["bias"]
    token_bias = bias.dim() == 2
    channel_bias = torch.zeros(n, dtype=torch.int64) if token_bias else bias
    loads = (("a_in", pack_activations(a, rows)), ("w_load", pack_weights(w, rows, cols)),
             ("p_in", pack_params(channel_bias, case["mult"], case["shift"], cols)))
    if token_bias:
        loads += (("tb_in", pack_token_bias(bias, cols)),)
    return GemmJob(m, k, n, cols, loads, m * nt, bool(case.get("raw")), token_bias)


async def drive(driver, job: GemmJob, source: WeightSource = IDEAL, stall_seed: int = 0, **stall) -> dict:
    """Run ``job`` through a driver's four steps; returns outputs and the start → done cycles.

    ``source`` times the weight stream (``stall_seed`` != 0 adds random stalls to it);
    ``stall`` goes to the driver's ``load`` and ``unload`` (e.g. a random generator for gaps
    and dropped ready).
    """
    for port, words in job.loads:
        await driver.load(port, words, **stall)
    modes = {"raw": int(job.raw), "token_bias": int(job.token_bias)}
    await driver.start(job.m, job.k, job.n, {**modes, **source_ports(source, stall_seed)})
    timing = await driver.wait_done()
    words = await driver.unload(job.unload_words, job.unload_port, **stall)
    return {"out": job.outputs(words), **timing}


class AmaranthDriver:
    """The four steps in Amaranth's simulator (a testbench ``ctx`` and a ``GemmEngine``)."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut

    async def load(self, port: str, words: list[int]) -> None:
        stream = getattr(self.dut, port)
        self.ctx.set(stream.valid, 1)
        for word in words:
            self.ctx.set(stream.payload, word)
            await self.ctx.tick()
        self.ctx.set(stream.valid, 0)

    async def start(self, m: int, k: int, n: int, ports: dict[str, int]) -> None:
        for name, v in (*ports.items(), ("m", m), ("k", k), ("n", n), ("start", 1)):
            self.ctx.set(getattr(self.dut, name), v)
        await self.ctx.tick()                      # this edge samples start
        self.ctx.set(self.dut.start, 0)

    async def wait_done(self) -> dict:
        cycles = 0                                 # edges after the one that sampled start
        while not self.ctx.get(self.dut.done):
            await self.ctx.tick()
            cycles += 1
        return {"cycles": cycles, "counter": self.ctx.get(self.dut.cycles)}

    async def unload(self, count: int, port: str = "out") -> list[int]:
        words, out = [], getattr(self.dut, port)
        self.ctx.set(out.ready, 1)
        while len(words) < count:
            valid, payload = self.ctx.get(out.valid), self.ctx.get(out.payload)
            await self.ctx.tick()
            if valid:
                words.append(payload)
        return words
