"""Simulation speed of the whole accelerator (hw/rtl/accelerator.py) under Verilator's
free-running main (sim/accelerator.py): the shipped model with the exit path, N test images
from one start, for each C++ optimisation of the Verilator build (OPT_FAST, OPT_SLOW and
OPT_GLOBAL set alike; "" is Verilator's own -Os). Every run is checked against the
references (sim/run.py); the figure is simulated cycles per wall second of one process.

    python benchmarks/bench_accelerator_sim.py [--images 20] [--opts=-Os,-O1,-O2,-O3]
        [--exit-path reports/exits/exit_path.pt]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from hw.cost import Machine
from model.data import load_fashion_mnist
from model.exits import exit_path
from model.quantize import SHIPPED_INTMODEL, load_intmodel
from sim import run as sim_run
from sim import simulator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--opts", default="-Os,-O1,-O2,-O3", help="C++ optimisation flags to compare")
    ap.add_argument("--exit-path", type=Path, default=Path("reports/exits/exit_path.pt"))
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    im, ep = load_intmodel(SHIPPED_INTMODEL), exit_path.load(args.exit_path)
    images = load_fashion_mnist("test").images[:args.images]
    machine = Machine(args.rows, 8.0, 20)
    rows = []
    for opt in args.opts.split(","):
        os.environ[simulator.OPT_ENV] = opt
        t0 = time.time()
        d = sim_run.prepare(im, ep, machine)
        build_s = time.time() - t0
        r = sim_run.run_images(d, images)
        s = sim_run.summary(r)
        rows.append({"opt": opt, "build_s": round(build_s, 1), "sim_s": round(r.sim_seconds, 2),
                     "cycles": s["cycles_measured"], "cycles_per_second": s["cycles_per_second"], "passed": s["passed"]})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["cycles_per_second"]
    for row in rows:
        row["speed_vs_first"] = round(row["cycles_per_second"] / base, 3)
    out = {"rows": args.rows, "images": args.images, "bandwidth": 8.0, "latency": 20, "runs": rows,
           "note": "one process on this 2-core machine; build_s includes Verilog generation (cached builds: 0)"}
    dest = Path(__file__).parent / "results" / f"bench_accelerator_sim_{args.rows}x{args.rows}.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
