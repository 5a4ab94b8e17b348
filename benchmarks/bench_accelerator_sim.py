"""Simulation speed of the whole accelerator (hw/rtl/accelerator.py) under Verilator's
free-running main (sim/accelerator.py): the shipped model with the exit path, N test images
from one start, for each C++ optimisation of the Verilator build (OPT_FAST, OPT_SLOW and
OPT_GLOBAL set alike; "" is Verilator's own -Os). Every run is checked against the
references (sim/run.py); the figure is simulated cycles per wall second of one process.

The baseline is the run as it was before the accelerator had a sequencer (commit 037b643):
cocotb drove the layer engine segment by segment, loaded each segment's program, weights and
parameters word by word and polled the comparator every cycle. The benchmark checks that commit
out into a temporary git worktree and runs its own ``sim.run.prepare``/``run_images`` (MAC head
of L x L multipliers, as its ``verify run`` did) on the first ``--baseline-images`` images, in
the same venv, on the same machine, just before the new runs.

    python benchmarks/bench_accelerator_sim.py [--images 20] [--opts=-Os,-O2,-O3]
        [--baseline 037b643] [--baseline-images 5] [--exit-path reports/exits/exit_path.pt]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hw.cost import Machine
from model.data import load_fashion_mnist
from model.exits import exit_path
from model.quantize import SHIPPED_INTMODEL, load_intmodel
from sim import run as sim_run
from sim import simulator


BASELINE = """
import json, sys, time
import torch
from hw.cost import Machine
from model.data import load_fashion_mnist
from model.exits import exit_path
from model.quantize import SHIPPED_INTMODEL, load_intmodel
from sim import run
rows, n, ep_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(1)
im, ep = load_intmodel(SHIPPED_INTMODEL), exit_path.load(ep_file)
d = run.prepare(im, ep, Machine(rows, 8.0, 20), None, rows * rows)
r = run.run_images(d, load_fashion_mnist("test").images[:n])
print("RESULT " + json.dumps({"sim_s": r.sim_seconds, "cycles": r.cycles_measured, "passed": r.passed}))
"""


def baseline(commit: str, rows: int, images: int, ep_file: Path) -> dict:
    """The cocotb-sequenced run of ``commit``, in a temporary worktree of this repository."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="qexit-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(tree), commit], check=True)
        try:
            t0 = time.time()
            p = subprocess.run([sys.executable, "-c", BASELINE, str(rows), str(images), str(ep_file.resolve())],
                               cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
            wall = time.time() - t0
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=True)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not lines:
        raise SystemExit(f"the baseline at {commit} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    r = json.loads(lines[-1][7:])
    return {"opt": f"baseline {commit} (cocotb sequencing)", "images": images, "build_s": round(wall - r["sim_s"], 1),
            "sim_s": round(r["sim_s"], 2), "cycles": r["cycles"],
            "cycles_per_second": round(r["cycles"] / r["sim_s"]), "passed": r["passed"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--opts", default="-Os,-O2,-O3", help="C++ optimisation flags to compare")
    ap.add_argument("--baseline", default="037b643", help="the commit whose cocotb-sequenced run is the baseline "
                    "('' to skip)")
    ap.add_argument("--baseline-images", type=int, default=5)
    ap.add_argument("--exit-path", type=Path, default=Path("reports/exits/exit_path.pt"))
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    im, ep = load_intmodel(SHIPPED_INTMODEL), exit_path.load(args.exit_path)
    images = load_fashion_mnist("test").images[:args.images]
    machine = Machine(args.rows, 8.0, 20)
    rows = [baseline(args.baseline, args.rows, args.baseline_images, args.exit_path)] if args.baseline else []
    if rows:
        print(json.dumps(rows[-1]), flush=True)
    for opt in args.opts.split(","):
        os.environ[simulator.OPT_ENV] = opt
        t0 = time.time()
        d = sim_run.prepare(im, ep, machine)
        build_s = time.time() - t0
        r = sim_run.run_images(d, images)
        s = sim_run.summary(r)
        rows.append({"opt": opt, "images": args.images, "build_s": round(build_s, 1), "sim_s": round(r.sim_seconds, 2),
                     "cycles": s["cycles_measured"], "cycles_per_second": s["cycles_per_second"], "passed": s["passed"]})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["cycles_per_second"]
    for row in rows:
        row["speed_vs_first"] = round(row["cycles_per_second"] / base, 3)
    out = {"rows": args.rows, "bandwidth": 8.0, "latency": 20, "runs": rows,
           "note": "one process at a time on this 2-core machine; speed_vs_first is against the first run "
                   "(the baseline where there is one); build_s includes Verilog generation (cached builds: 0)"}
    dest = Path(__file__).parent / "results" / f"bench_accelerator_sim_{args.rows}x{args.rows}.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
