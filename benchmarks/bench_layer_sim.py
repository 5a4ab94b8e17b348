"""Simulation speed of the layer engine: one encoder layer of the shipped model on 8x8 under
cocotb (the testbench of `qexit verify block`: no Python runs while a segment computes) against
the same harness free-running in Verilator with a C++ main (no cocotb, no VPI).

    python benchmarks/bench_layer_sim.py [--rows 8] [--bandwidth 4] [--latency 20]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hw.cost import Machine
from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.quantize import quantize
from sim import block as layer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:


    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8, help="array size L (L x L)")
    ap.add_argument("--bandwidth", type=float, default=4.0)
    ap.add_argument("--latency", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_checkpoint()
    im = quantize(model, load_fashion_mnist("gate").subset(256).images)
    machine = Machine(args.rows, args.bandwidth, args.latency)
    free = layer.free_running(im, machine)
    res = layer.verify_block(im, load_fashion_mnist("test").subset(1).images, machine, 1)
    rec = next(r for r in res.records if r["name"] == "b0")
    cocotb = rec["cycles"] / rec["run_s"]
    out = {"rows": args.rows, "cycles": rec["cycles"], "free_running_cycles": free["cycles"],
           "cocotb_seconds": rec["run_s"], "free_running_seconds": round(free["seconds"], 3),
           "cocotb_cycles_per_s": round(cocotb), "free_running_cycles_per_s": round(free["cycles_per_second"]),
           "ratio": round(cocotb / free["cycles_per_second"], 3), "bit_exact": res.passed}
    print(json.dumps(out, indent=1))
    dest = Path(__file__).parent / "results" / f"bench_layer_sim_{args.rows}x{args.rows}.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
