"""cocotb testbench of the GEMM engine (``hw.rtl.gemm``), driven by ``sim.gemm``.

The host process writes the cases (operand tensors) to ``$QEXIT_TB_CASES`` and reads the
per-case results from ``$QEXIT_TB_RESULTS``. For every case the testbench loads the buffers
through the load streams, writes the descriptor, pulses ``start``, waits for ``done`` (no
Python runs while the engine computes), unloads the outputs and compares every one with
``model.intops`` run on the same operands. Measured cycles are the clock edges from the one
that samples ``start`` to the one that raises ``done`` (from simulation time), checked
against the RTL's own counter and against ``hw.cost.schedule``.

Tests:
* ``gemm_cases``: all cases back to back, the weights streamed by the harness's memory model
  (``sim.harness``: the case's ``bandwidth`` and ``latency``); a case with ``backpressure``
  inserts random gaps in the load streams, random stalls in the weight stream and drops
  ``ready`` at random while unloading (its cycles are then not predicted, only its values
  checked).
* ``reset_mid_gemm``: starts the first case, resets the engine halfway through, checks that
  it is idle, then runs the case again from a fresh load and checks it.
A failure message names the case and its seed.
"""
import json
import os
import random
import time

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from hw.cost import schedule
from sim import harness
from sim import packing as host
from sim.tb.streams import drain, load

CLOCK_NS = 10
LOAD_GAP = 0.3             # back-pressure cases: chance of an idle beat before each load word
READY_PROB = 0.5           # back-pressure cases: chance that out ready is high in a cycle


class Engine:
    """Drives one GEMM engine instance: reset, loads, start/done, unload."""

    def __init__(self, dut):
        self.dut = dut
        self.rows = len(dut.a_in__payload) // 8
        self.cols = len(dut.out__payload) // 8
        self.edge = RisingEdge(dut.clk)

    async def start_clock(self):
        Clock(self.dut.clk, CLOCK_NS, unit="ns").start()
        await self.reset()

    async def reset(self, cycles: int = 2):
        d = self.dut
        for name in ("a_in__valid", "w_load__valid", "p_in__valid", "tb_in__valid", "out__ready",
                     "raw_out__ready", "start"):
            getattr(d, name).value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, cycles)
        d.rst.value = 0
        await self.edge

    async def load(self, name: str, words: list[int], rng: random.Random | None = None):
        """One word per cycle into stream ``name`` (``sim.tb.streams.load``); ``rng`` inserts
        gaps (probability LOAD_GAP)."""
        await load(self.dut, name, words, rng, LOAD_GAP)

    async def start(self, m: int, k: int, n: int, ports: dict[str, int]):
        d = self.dut
        for name, value in ports.items():                # the memory model's settings
            getattr(d, name).value = value
        d.m.value, d.k.value, d.n.value = m, k, n
        d.start.value = 1
        await self.edge                                  # this edge samples start
        d.start.value = 0
        self._t0, self._w0 = get_sim_time("ns"), time.perf_counter()

    async def wait_done(self) -> dict:
        """Cycles from the edge that sampled start (simulation time), the RTL counter, wall seconds."""
        await RisingEdge(self.dut.done)
        seconds = time.perf_counter() - self._w0
        cycles = round((get_sim_time("ns") - self._t0) / CLOCK_NS)
        await ReadOnly()
        return {"cycles": cycles, "counter": int(self.dut.cycles.value), "run_s": seconds}

    async def unload(self, count: int, port: str = "out", rng: random.Random | None = None) -> list[int]:
        """``count`` words from ``port``; ``rng`` drops ``ready`` (probability 1 - READY_PROB)."""
        await self.edge
        return await drain(self.dut, count, rng, READY_PROB, port)

    async def gemm(self, case: dict, rng: random.Random | None = None) -> dict:
        """Load, run and unload one case (``sim.packing.drive``); returns outputs and timing."""
        t0 = time.perf_counter()
        stall_seed = case["seed"] + 1 if rng is not None else 0
        got = await host.drive(self, host.gemm_job(case, self.rows, self.cols), source_of(case), stall_seed,
                               rng=rng)
        got["host_s"] = time.perf_counter() - t0 - got["run_s"]
        return got


def source_of(case: dict) -> schedule.WeightSource:
    """The case's external-memory model (``bandwidth`` B/cycle, ``latency`` cycles; ideal if absent)."""
    return schedule.WeightSource(case.get("bandwidth"), case.get("latency", 0))


def _cases() -> list[dict]:
    return torch.load(os.environ["QEXIT_TB_CASES"], weights_only=False)


def _write_results(results: list[dict]) -> None:
    path = os.environ.get("QEXIT_TB_RESULTS")
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1)


def _check(case: dict, got: dict, rows: int, cols: int) -> dict:
    """Compare one case with the numeric contract; the record written for the host."""
    a, w = case["a"], case["w"]
    m, k, n = a.shape[0], a.shape[1], w.shape[0]
    expected = host.reference(a, w, case["bias"], case["mult"], case["shift"], bool(case.get("raw")))
    wrong = (got["out"] != expected).nonzero().tolist()
    # random stalls in the weight stream (back-pressure cases) check values, not cycles
    predicted = None if case.get("backpressure") else schedule.predict_cycles(rows, cols, m, k, n, source_of(case))
    return {"name": case["name"], "shape": f"{m}x{k}x{n}", "seed": case["seed"],
            "matched": expected.numel() - len(wrong), "total": expected.numel(),
            "mismatches": [{"row": r, "col": c, "got": int(got["out"][r, c]),
                            "expected": int(expected[r, c])} for r, c in wrong[:10]],
            "cycles_measured": got["cycles"], "cycles_counter": got["counter"],
            "cycles_predicted": predicted, "run_seconds": got["run_s"],
            "host_seconds": got["host_s"]}


def _failures(record: dict) -> list[str]:
    tag = f"case {record['name']} ({record['shape']}, seed {record['seed']})"
    out = []
    if record["matched"] != record["total"]:
        out.append(f"{tag}: {record['total'] - record['matched']} of {record['total']} outputs "
                   f"differ from model.intops, first {record['mismatches'][:3]}")
    if record["cycles_measured"] != record["cycles_counter"] or \
            record["cycles_predicted"] not in (None, record["cycles_measured"]):
        out.append(f"{tag}: cycles measured {record['cycles_measured']}, RTL counter "
                   f"{record['cycles_counter']}, schedule {record['cycles_predicted']}")
    return out


@cocotb.test()
async def gemm_cases(dut):
    engine = Engine(dut)
    await engine.start_clock()
    results, failures = [], []
    for case in _cases():
        rng = random.Random(case["seed"]) if case.get("backpressure") else None
        got = await engine.gemm(case, rng)
        record = _check(case, got, engine.rows, engine.cols)
        results.append(record)
        failures += _failures(record)
        dut._log.info("%s %s: %d/%d bit-exact, %d cycles (schedule %s), %.2f s",
                      record["name"], record["shape"], record["matched"], record["total"],
                      record["cycles_measured"], record["cycles_predicted"], record["run_seconds"])
    _write_results(results)
    assert not failures, "\n".join(failures)


@cocotb.test()
async def reset_mid_gemm(dut):
    engine = Engine(dut)
    await engine.start_clock()
    case = _cases()[0]
    a, w = case["a"], case["w"]
    m, k, n = a.shape[0], a.shape[1], w.shape[0]
    predicted = schedule.predict_cycles(engine.rows, engine.cols, m, k, n, source_of(case))
    job = host.gemm_job(case, engine.rows, engine.cols)
    for port, words in job.loads:
        await engine.load(port, words)
    await engine.start(m, k, n, {"raw": 0, "token_bias": 0, **harness.source_ports(source_of(case))})
    await ClockCycles(dut.clk, max(1, predicted // 2))
    await ReadOnly()
    assert int(dut.busy.value) == 1, "engine should be busy halfway through the GEMM"
    await engine.edge
    await engine.reset()
    await ReadOnly()
    assert int(dut.busy.value) == 0 and int(dut.done.value) == 0, "reset must leave the engine idle"
    assert int(dut.out__valid.value) == 0, "reset must empty the out stream"
    await engine.edge
    got = await engine.gemm(case)
    record = _check(case, got, engine.rows, engine.cols)
    _write_results([record])
    failures = _failures(record)
    assert not failures, "after a reset mid-GEMM: " + "\n".join(failures)
