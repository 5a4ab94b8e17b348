"""Streams of a cocotb testbench: loading words into an input stream and draining an output
stream, shared by every testbench (ports ``<name>__valid``, ``<name>__payload``,
``<name>__ready``, as Amaranth's ``stream`` interfaces are written in Verilog)."""
import random

from cocotb.triggers import ReadOnly, RisingEdge

TIMEOUT_CYCLES = 20000      # no output beat for this long is a failure


async def load(dut, name: str, words: list[int], rng: random.Random | None = None, gap: float = 0.0,
               ready: bool = True) -> None:
    """``words`` into the stream ``name``, one a cycle; ``rng`` puts an idle cycle before a word
    with probability ``gap``. With ``ready`` the port must be ready now: a load port is ready
    whenever its engine is idle, which only ``start`` or a reset changes, so it is checked once
    (that keeps Python off the per-beat path) and the first word goes on the next edge; without
    it (an always-ready port) the first word goes on the coming edge."""
    if not words:
        return
    valid, payload = getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__payload")
    edge = RisingEdge(dut.clk)
    if ready:
        await ReadOnly()
        assert int(getattr(dut, f"{name}__ready").value), f"{name} is not ready (engine busy)"
        await edge
    for word in words:
        if rng is not None and rng.random() < gap:
            valid.value = 0
            await edge
        payload.value = word
        valid.value = 1
        await edge
    valid.value = 0


async def drain(dut, count: int, rng: random.Random | None = None, ready_prob: float = 0.6,
                port: str = "out", clock=None, stamps: dict | None = None) -> list[int]:
    """``count`` beats from the stream ``port``; with ``rng``, ``ready`` is high with probability
    ``ready_prob`` in each cycle; ``stamps["last"]`` = the edge (of ``clock``, an edge counter
    with ``now``) that took the last beat."""
    edge = RisingEdge(dut.clk)
    ready_sig, valid_sig = getattr(dut, f"{port}__ready"), getattr(dut, f"{port}__valid")
    payload = getattr(dut, f"{port}__payload")
    words, idle = [], 0
    while len(words) < count:
        ready = 1 if rng is None or rng.random() < ready_prob else 0
        ready_sig.value = ready
        await ReadOnly()
        if ready and int(valid_sig.value):
            words.append(int(payload.value))
            idle = 0
            if stamps is not None and len(words) == count:
                stamps["last"] = clock.now + 1
        else:
            idle += 1
            assert idle < TIMEOUT_CYCLES, f"{port} stream stalled after {len(words)}/{count} beats"
        await edge
    ready_sig.value = 0
    return words
