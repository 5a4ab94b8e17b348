"""cocotb testbench of the layer engine (``sim.harness.LayerHarness``), driven by ``sim.block``.

The host writes the segment jobs (``sim.block.SegmentJob``: program words, weight and
parameter streams, scratchpad words) to ``$QEXIT_TB_CASES``; for each one the testbench runs
the protocol of ``sim.block`` (load while idle, start, wait for ``done``, read the trace
memory) and writes the cycles and the trace words to ``$QEXIT_TB_RESULTS``. It compares
nothing itself: the host checks every tap against the golden model and every cycle count
against ``hw.cost.timeline.predict``. No Python runs while a segment computes.
"""
import os
import time

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from sim.tb.streams import load

CLOCK_NS = 10


class Layer:
    def __init__(self, dut):
        self.dut = dut
        self.edge = RisingEdge(dut.clk)
        self.addr_bits = len(dut.s_in__payload) - len(dut.w_load__payload)

    async def start_clock(self):
        d = self.dut
        Clock(d.clk, CLOCK_NS, unit="ns").start()
        for name in ("prog_in__valid", "s_in__valid", "w_load__valid", "q_load__valid", "start"):
            getattr(d, name).value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 2)
        d.rst.value = 0
        await self.edge

    async def run(self, ports: dict[str, int]) -> dict:
        d = self.dut
        for name, value in ports.items():
            getattr(d, name).value = value
        d.pc.value = 0
        d.start.value = 1
        await self.edge                                  # this edge samples start
        d.start.value = 0
        t0, w0 = get_sim_time("ns"), time.perf_counter()
        await RisingEdge(d.done)
        seconds = time.perf_counter() - w0
        cycles = round((get_sim_time("ns") - t0) / CLOCK_NS)
        await ReadOnly()
        return {"cycles": cycles, "counter": int(d.cycles.value), "run_s": seconds}

    async def segment(self, job: dict) -> dict:
        """Load a segment job (program, weight and parameter streams, scratchpad words) while
        the engine is idle, then start it and wait for ``done``."""
        await load(self.dut, "prog_in", job["program"])
        await load(self.dut, "w_load", job["weights"])
        await load(self.dut, "q_load", job["params"])
        await load(self.dut, "s_in", [addr | (word << self.addr_bits) for addr, word in job["scratch"]])
        return await self.run(job["ports"])

    async def trace(self) -> list[int]:
        d = self.dut
        await self.edge
        count = int(d.t_count.value)
        words = []
        for a in range(count):
            d.t_addr.value = a
            await Timer(1, "ns")
            words.append(int(d.t_data.value))
        await self.edge
        return words


@cocotb.test()
async def segments(dut):
    layer = Layer(dut)
    await layer.start_clock()
    jobs = torch.load(os.environ["QEXIT_TB_CASES"], weights_only=False)
    results = []
    for job in jobs:
        t0 = time.perf_counter()
        got = await layer.segment(job)
        got["trace"] = await layer.trace()
        got["host_s"] = time.perf_counter() - t0 - got["run_s"]
        results.append(got)
        dut._log.info("%s: %d cycles (predicted %d), %.2f s", job["name"], got["cycles"], job["predicted"],
                      got["run_s"])
    torch.save(results, os.environ["QEXIT_TB_RESULTS"])
