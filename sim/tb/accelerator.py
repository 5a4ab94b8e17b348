"""cocotb testbench of the whole accelerator against cocotbext-axi's ``AxiRam`` (the AXI model
cocotb users rely on) in place of this project's HDL memory model: the same memory image goes
into the RAM, the host writes the control registers on the Wishbone bus, and the testbench
waits for ``busy`` to fall; then it reads the result records and the status back. Nothing
but the RAM model runs in Python while the accelerator works. ``sim.accelerator.run_axiram``
writes ``$QEXIT_TB_CASES`` and checks ``$QEXIT_TB_RESULTS``.

``pause_after_cycles`` > 0: the RAM's R channel stops answering that many cycles after
``start`` (a memory that hangs, for the fault checks); ``limit_cycles``: wait at most that long
for ``busy`` to fall, then report ``timed_out``.
"""
import itertools
import os

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus, AxiRam, AxiReadBus, AxiWriteBus

CLOCK_NS = 10


async def wishbone(dut, adr: int, value: int = 0, write: bool = True) -> int:
    dut.csr__adr.value, dut.csr__dat_w.value, dut.csr__we.value = adr, value, int(write)
    dut.csr__sel.value, dut.csr__cyc.value, dut.csr__stb.value = 15, 1, 1
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if int(dut.csr__ack.value):
            got = int(dut.csr__dat_r.value)
            break
    await RisingEdge(dut.clk)
    dut.csr__cyc.value, dut.csr__stb.value, dut.csr__we.value = 0, 0, 0
    return got


@cocotb.test()
async def run(dut):
    spec = torch.load(os.environ["QEXIT_TB_CASES"], weights_only=False)
    for name in ("csr__cyc", "csr__stb", "csr__we"):
        getattr(dut, name).value = 0
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    bus = AxiBus(write=AxiWriteBus.from_prefix(dut, "res", bus_separator="__"),
                 read=AxiReadBus.from_prefix(dut, "mem", bus_separator="__"))
    ram = AxiRam(bus, dut.clk, dut.rst, size=spec["size"])
    for base, data in spec["regions"]:
        ram.write(base, data)
    await ClockCycles(dut.clk, 2)
    for reg, value in spec["writes"]:
        await wishbone(dut, reg, value)
    if spec.get("pause_after_cycles"):
        ram.read_if.r_channel.set_pause_generator(
            itertools.chain(itertools.repeat(False, spec["pause_after_cycles"]), itertools.repeat(True)))
    timed_out = False
    if int(dut.busy.value):
        try:
            await with_timeout(FallingEdge(dut.busy), spec.get("limit_cycles", 10 ** 9) * CLOCK_NS, "ns")
        except SimTimeoutError:
            timed_out = True
    await RisingEdge(dut.clk)
    out = {name: await wishbone(dut, reg, write=False) for name, reg in spec["reads"].items()}
    out["timed_out"] = timed_out
    out["records"] = ram.read(spec["results"], spec["record_bytes"] * spec["count"])
    torch.save(out, os.environ["QEXIT_TB_RESULTS"])
