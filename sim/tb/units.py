"""cocotb testbench of the streaming units (``hw.rtl.units``, ``hw.rtl.layernorm``, ``hw.rtl.softmax``),
driven by ``sim.units``.

The host writes the cases to ``$QEXIT_TB_CASES``: per case the unit's constant ports, words
for its always-ready load streams (``loads``, e.g. LayerNorm's per-channel parameters), the
input beats (packed payload integers) and the number of output beats to expect. For every
case the testbench sets the constants, feeds the input stream and drains the output stream
at the same time (with random valid gaps and random ready drops when the case asks for
back-pressure), and writes the output beats to ``$QEXIT_TB_RESULTS``, with each case's cycles
from the edge that takes its first input beat to the edge that takes its last output beat,
both counted. The host compares them
with ``model.intops`` computed on its own; nothing here knows the expected values.
"""
import json
import os
import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from sim.tb.streams import drain, load

CLOCK_NS = 10


class EdgeCount:
    """Rising edges of ``clk`` since it was made, counted by a background task."""

    def __init__(self, dut):
        self.now = 0
        cocotb.start_soon(self._count(dut))

    async def _count(self, dut):
        while True:
            await RisingEdge(dut.clk)
            self.now += 1


async def _feed(dut, beats: list[int], rng: random.Random | None, clock: EdgeCount | None = None,
                stamps: dict | None = None):
    """Stream ``beats`` into ``inp``; ``stamps["first"]`` = the edge that took the first one."""
    edge = RisingEdge(dut.clk)
    for word in beats:
        while rng is not None and rng.random() < 0.3:
            dut.inp__valid.value = 0
            await edge
        dut.inp__payload.value = word
        dut.inp__valid.value = 1
        await ReadOnly()
        while not int(dut.inp__ready.value):
            await edge
            await ReadOnly()
        if stamps is not None and "first" not in stamps:
            stamps["first"] = clock.now + 1          # the coming edge takes it
        await edge
    dut.inp__valid.value = 0


@cocotb.test()
async def unit_cases(dut):
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.inp__valid.value = 0
    dut.out__ready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    clock = EdgeCount(dut)
    results, cycles = [], []
    for case in torch.load(os.environ["QEXIT_TB_CASES"], weights_only=False):
        for name, value in case["ports"].items():
            getattr(dut, name).value = value
        await RisingEdge(dut.clk)
        for port, words in case.get("loads", {}).items():      # e.g. per-channel parameters
            await load(dut, port, words, ready=False)
        rng = random.Random(case["seed"]) if case.get("stall") else None
        stamps: dict = {}
        feeder = cocotb.start_soon(_feed(dut, case["beats"], rng, clock, stamps))
        out = await drain(dut, case["count"], random.Random(case["seed"] + 1) if rng else None,
                          clock=clock, stamps=stamps)
        await feeder
        results.append(out)
        cycles.append(stamps["last"] - stamps["first"] + 1 if "first" in stamps else None)
    with open(os.environ["QEXIT_TB_RESULTS"], "w") as f:
        json.dump({"outputs": results, "cycles": cycles}, f)
