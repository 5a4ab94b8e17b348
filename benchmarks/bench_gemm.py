"""Benchmark of the GEMM engine: RTL-measured cycles against SCALE-Sim v2's formulas, and simulation speed.

For each array size and shape it runs the engine under cocotb on Verilator (every output is
checked bit-exact against model.intops, every cycle count against hw/cost/schedule.py) and prints
the measured cycles (start to done), the utilization two ways (``hw.cost.schedule.utilization``:
start to done with the weights streamed from an ideal source; and with io, adding the
activation/parameter load and unload beats the engine waits for while idle,
``Schedule.io_cycles``), the cycles of SCALE-Sim v2's output-stationary and
weight-stationary *formulas* (not the scalesim package), and their ratio to ours, both ways.
Then the simulation speed of the largest shape: Verilator under cocotb with the buffers
preloaded (cycles/s of the start-to-done phase, where no Python runs), against the same
design free-running in Verilator (a C++ main, no cocotb, no VPI).

    .venv/bin/python benchmarks/bench_gemm.py [--arrays 8,16] [--shapes 50x768x768,...] [--json F]
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hw.cost import Machine, schedule
from hw.rtl import gemm
from sim import gemm as verify

SHAPES = "50x768x768,50x768x3072,197x192x192"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arrays", default="8,16", help="square array sizes, comma-separated")
    p.add_argument("--shapes", default=SHAPES, help="MxKxN shapes, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bandwidth", type=float, default=None,
                   help="weight stream bandwidth, bytes/cycle (default: an ideal source)")
    p.add_argument("--latency", type=int, default=0, help="weight stream first-word latency, cycles")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    shapes = verify.parse_shapes(args.shapes)
    sizes = [int(s) for s in args.arrays.split(",")]

    rows, speed, ok = [], [], True
    for size in sizes:
        t0 = time.time()
        machine = Machine(size, args.bandwidth, args.latency)
        res = verify.verify_gemm(machine, shapes, seed=args.seed)
        source = machine.source
        ok &= res.passed
        print(f"{size}x{size}: bit-exact {res.matched}/{res.total}, {res.cycle_errors} cycle errors, "
              f"{time.time() - t0:.0f} s (build {res.build_seconds:.0f} s)", flush=True)
        for c in res.records:
            m, k, n = (int(d) for d in c["shape"].split("x"))
            os_c = schedule.scalesim_v2_os_formula(size, size, m, k, n)
            ws_c = schedule.scalesim_v2_ws_formula(size, size, m, k, n)
            cyc = c["cycles_measured"]
            plan = schedule.plan(size, size, m, k, n, source)
            with_io = cyc + plan.io_cycles
            rows.append({"array": f"{size}x{size}", "shape": c["shape"], "cycles": cyc,
                         "predicted": c["cycles_predicted"], "bit_exact": f"{c['matched']}/{c['total']}",
                         "io_cycles": plan.io_cycles, "load_beats": plan.load_beats,
                         "weight_beats": plan.weight_beats, "stall_cycles": plan.stall_cycles,
                         "bandwidth": args.bandwidth, "latency": args.latency,
                         "unload_beats": plan.unload_beats,
                         "utilization": schedule.utilization(plan.macs, size, size, cyc),
                         "utilization_with_io": schedule.utilization(plan.macs, size, size, with_io),
                         "scalesim_v2_os_formula": os_c, "scalesim_v2_ws_formula": ws_c,
                         "os_formula_over_ours": os_c / cyc, "ws_formula_over_ours": ws_c / cyc,
                         "os_formula_over_ours_with_io": os_c / with_io,
                         "ws_formula_over_ours_with_io": ws_c / with_io,
                         "cocotb_cycles_per_s": cyc / c["run_seconds"]})
        big = max(res.records, key=lambda c: c["cycles_measured"])
        m, k, n = (int(d) for d in big["shape"].split("x"))
        free = verify.free_running(gemm.GemmConfig(size, size), m, k, n)
        # free-running Verilator feeds the weights from an ideal source
        assert free["cycles"] == schedule.ideal_cycles(size, size, m, k, n), "free-running cycles differ"
        speed.append({"array": f"{size}x{size}", "shape": big["shape"], "cycles": big["cycles_measured"],
                      "cocotb_cycles_per_s": big["cycles_measured"] / big["run_seconds"],
                      "free_running_cycles_per_s": free["cycles_per_second"]})

    head = ["array", "shape", "RTL cycles", "= schedule", "io cycles", "utilization (start to done)",
            "utilization (with io)", "SCALE-Sim v2 OS formula", "WS formula", "OS/ours", "WS/ours",
            "OS/ours with io", "WS/ours with io"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['array']} | {r['shape']} | {r['cycles']} | {r['cycles'] == r['predicted']} | "
              f"{r['io_cycles']} | {r['utilization']:.2%} | {r['utilization_with_io']:.2%} | "
              f"{r['scalesim_v2_os_formula']} | {r['scalesim_v2_ws_formula']} | "
              f"{r['os_formula_over_ours']:.2f}x | {r['ws_formula_over_ours']:.2f}x | "
              f"{r['os_formula_over_ours_with_io']:.2f}x | {r['ws_formula_over_ours_with_io']:.2f}x |")
    print("\n| array | shape | cycles | cocotb (preloaded) cycles/s | free-running cycles/s | ratio |")
    print("|---|---|---|---|---|---|")
    for s in speed:
        print(f"| {s['array']} | {s['shape']} | {s['cycles']} | {s['cocotb_cycles_per_s']:,.0f} | "
              f"{s['free_running_cycles_per_s']:,.0f} | "
              f"{s['free_running_cycles_per_s'] / s['cocotb_cycles_per_s']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"cycles": rows, "speed": speed}, indent=2) + "\n")
    print("\nall bit-exact and cycle-exact" if ok else "\nMISMATCH: see the lines above")
    return 0 if ok and all(math.isclose(r["cycles"], r["predicted"]) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
