"""cocotb testbench of the early-exit run (``sim.harness.RunHarness``), driven by ``sim.run``.

The host writes, per image, its segment jobs (``sim.block.SegmentJob`` words, the head that
takes the segment's tap, whether a decision follows) and the comparator's threshold words to
``$QEXIT_TB_CASES``. The testbench is the sequencer: for each image it loads and starts the
segments in order; after a candidate layer it waits for the comparator's decision and, on
``exit``, ends the image there. It writes what the RTL did (every segment's cycles, every
decision and its timestamps, the trace of the final head) to ``$QEXIT_TB_RESULTS``; the host
checks it. No Python runs while a segment computes.
"""
import os

import cocotb
import torch
from cocotb.triggers import ReadOnly, RisingEdge

from sim.tb.block import Layer
from sim.tb.streams import load

DECISION_LIMIT = 100_000        # cycles to wait for a decision before giving up


async def wait_decision(dut) -> dict:
    edge = RisingEdge(dut.clk)
    for _ in range(DECISION_LIMIT):               # the decision is held, so polling after edges misses nothing
        await edge
        await ReadOnly()
        if int(dut.dec_valid.value):
            break
    else:
        raise AssertionError("no decision from the exit comparator")
    dec = int(dut.dec.value)
    got = {"word": dec, "t_done": int(dut.t_done.value), "t_dec": int(dut.t_dec.value)}
    await edge
    dut.dec_clear.value = 1
    await edge
    dut.dec_clear.value = 0
    return got


@cocotb.test()
async def run(dut):
    layer = Layer(dut)
    for name in ("th_in__valid", "dec_clear", "sel"):
        getattr(dut, name).value = 0
    await layer.start_clock()
    spec = torch.load(os.environ["QEXIT_TB_CASES"], weights_only=False)
    dut.layers.value = spec["layers"]
    await load(dut, "th_in", spec["thresholds"], ready=False)
    results = []
    for image in spec["images"]:
        out = {"segments": [], "decisions": [], "trace": []}
        for job in image:
            dut.sel.value = job["sel"]
            got = await layer.segment(job)
            await RisingEdge(dut.clk)                  # leave run()'s read-only phase
            out["segments"].append({"name": job["name"], "cycles": got["cycles"], "counter": got["counter"]})
            if job["final"]:
                out["trace"] = await layer.trace()
            if job["decide"]:
                dec = await wait_decision(dut)
                dec["name"], dec["sel"] = job["name"], job["sel"]
                out["decisions"].append(dec)
                if dec["word"] & 1:                  # exit: the sequencer ends the image here
                    break
        dut.sel.value = spec["layers"]
        results.append(out)
        dut._log.info("image %d: %d segments, %d decisions", len(results) - 1, len(out["segments"]),
                      len(out["decisions"]))
    torch.save(results, os.environ["QEXIT_TB_RESULTS"])
