"""cocotb testbench of the bare systolic array (``hw.rtl.systolic``, INT8 or precision-scalable),
driven by ``tests/test_hw_systolic.py``.

The host writes a schedule to ``$QEXIT_TB_CASES`` (JSON): ``horizon`` cycles; ``loads``, each
(cycle, bank, row, weights word); ``stream``, each (cycle, activations word, bank, pack). Words
are packed lanes, lane 0 in the low bits (``sim.packing.lanes_to_words``). Each cycle the bench
sets that cycle's inputs, samples ``psum`` (and ``psum_hi`` on a scalable array) and lets the
edge pass; it writes the samples to ``$QEXIT_TB_RESULTS``. The host splits them into lanes and
compares them with its own sums; nothing here knows the expected values.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

CLOCK_NS = 10


@cocotb.test()
async def array_schedule(dut):
    case = json.loads(open(os.environ["QEXIT_TB_CASES"]).read())
    scalable = hasattr(dut, "psum_hi")
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 0
    loads = {c: (bank, row, word) for c, bank, row, word in case["loads"]}
    stream = {c: (word, bank, pack) for c, word, bank, pack in case["stream"]}
    seen = []
    edge = RisingEdge(dut.clk)
    await edge
    for t in range(case["horizon"]):
        load = loads.get(t)
        dut.load.value = int(load is not None)
        if load is not None:
            dut.load_bank.value, dut.load_row.value, dut.load_weights.value = load
        row = stream.get(t)
        if row is not None:
            dut.a.value, dut.sel.value = row[0], row[1]
            if scalable:
                dut.pack.value = row[2]
        await ReadOnly()
        seen.append([int(dut.psum.value), int(dut.psum_hi.value) if scalable else 0])
        await edge
    with open(os.environ["QEXIT_TB_RESULTS"], "w") as f:
        json.dump(seen, f)
