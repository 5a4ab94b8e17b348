"""Sweep the cost model over a design grid: array size x weight-stream
bandwidth x exit budget.

Each machine of the grid (the L x L accelerator with its L-multiplier exit head, weights
streamed at B bytes/cycle after --latency cycles, clocked at the Fmax synthesis measured for
that accelerator, or at --clock-mhz as a what-if) is priced at every exit budget: the operating point the exit path
holds, every LCT budget of `qexit exits`'s Pareto sweep, and full depth. The grid comes from
--arrays, --bandwidths and --budgets, or from a TOML file (--grid) with the same keys and
`latency`. Machines are tasks: one after another here, or on Dask with --workers N or
--cluster ADDRESS. --confirm N then runs the first N test images through the early-exit RTL on
each machine of the Pareto front (`verify run`'s checks, cycles against this cost model).
Writes reports/sweep/: points.csv (every point), summary.json (the points, the Pareto front over
energy, latency and top-1, the confirmations, the wall time, and energy_table: the table the
energy is priced under, Horowitz's 45 nm ASIC figures), pareto.png and a README. A size that
does not fit the LFE5U-85F, or was never synthesized, has no clock: its points keep cycles and
energy, are marked (fits false or null) and stay off the Pareto front.
The model itself is studies/sweep.py and hw/cost/.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from tqdm import tqdm

from hw.cost import Machine, read_exits
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import load_intmodel
from qexit.commands.common import add_exit_path_args, add_machine_args, report_path
from qexit.commands.cost import EXITS_DEFAULT
from qexit.render import sweep as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary
from sim.dist import check_workers, confirm, map_tasks
from studies import sweep

HELP = "cycles, latency, energy and top-1 over a grid of array sizes, bandwidths and exit budgets"


def _list(kind):
    def parse(value: str):
        try:
            return tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated values like 4,8, got {value!r}") from None
    return parse


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--exits", type=Path, default=EXITS_DEFAULT, help="`qexit exits`'s exit_distribution.json")
    p.add_argument("--seed", type=int, default=0, help="whose routing and Pareto sweep: a seed of the exits run")
    p.add_argument("--arrays", type=_list(int), default=(4, 8, 16), help="array sizes L (L x L)")
    p.add_argument("--bandwidths", type=_list(float), default=(1.0, 2.0, 4.0, 8.0, 16.0),
                   help="weight stream bandwidths, bytes/cycle")
    p.add_argument("--budgets", default="all",
                   help="'all' (every LCT budget of the exits' sweep), or comma-separated budgets")
    # the grid's machines share the stream's latency; the clock is each size's synthesized Fmax
    add_machine_args(p, options=("latency", "clock"), clock_mhz=None, synth=True)
    p.add_argument("--grid", type=Path, default=None,
                   help="a TOML file with arrays, bandwidths, budgets and latency (overrides those flags)")
    p.add_argument("--workers", type=int, default=1, help="machines priced at once: more than 1 starts a local Dask cluster")
    p.add_argument("--cluster", default=None, metavar="ADDRESS", help="a running Dask scheduler to run on")
    p.add_argument("--confirm", type=int, default=0, metavar="N",
                   help="also run the first N test images through the early-exit RTL on each machine of the Pareto "
                        "front, checked as `verify run` checks them (cycles against this cost model); 0: off")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/sweep/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    t0 = time.time()
    check_workers(args.workers)
    if args.confirm < 0:
        raise QexitError(f"--confirm {args.confirm}: give a number of test images >= 0")
    if args.grid is not None:
        grid = sweep.load_grid(args.grid)
    else:
        budgets = "all" if args.budgets.strip() == "all" else tuple(float(b) for b in args.budgets.split(",") if b.strip())
        grid = sweep.Grid(args.arrays, args.bandwidths, budgets, args.latency)
    exits = read_exits(args.exits)
    for f in (args.intmodel, args.exit_path):
        if not Path(f).is_file():
            raise QexitError(f"no such file: {f}; run `qexit quantize` and `qexit exits` first")
    im, ep = load_intmodel(args.intmodel), exit_path.load(args.exit_path)
    clocks = {a: sweep.machine_clock(im, ep, a, args.clock_mhz, args.synth) for a in grid.arrays}
    tasks = [(str(args.intmodel), str(args.exit_path), exits, args.seed, a, b, grid.latency, clocks[a], grid.budgets)
             for a, b in grid.machines()]
    points = []
    bar = tqdm(total=len(tasks), unit="machine", disable=args.quiet, desc="sweep")

    def finished(rows):
        points.extend(rows)
        bar.update(1)
    try:
        map_tasks(sweep.machine_points, tasks, args.workers, args.cluster, finished)
    finally:
        bar.close()
    order = {m: i for i, m in enumerate(grid.machines())}
    points.sort(key=lambda p: order[p["rows"], p["bandwidth"]])       # a fixed order, whatever ran first
    good = [p for p in points if "error" not in p]
    if not good:
        raise QexitError("no machine of the grid could run the model: " + "; ".join(p["error"] for p in points[:3]))
    front = sweep.pareto_front(good)
    wall = time.time() - t0                                            # the pricing; the RTL confirmation is apart
    confirmed = []
    if args.confirm:
        machines = list(dict.fromkeys(Machine(p["rows"], p["bandwidth"], grid.latency) for p in front))
        print(f"RTL confirmation: {args.confirm} test image(s) on each of {len(machines)} front machine(s)", flush=True)
        confirmed = confirm(str(args.intmodel), str(args.exit_path), machines, args.confirm,
                            args.workers, args.cluster, Path(args.out) / ".sweep-confirm", not args.quiet)
    summary = {"points": len(good), "machines": len(tasks), "failed_machines": [p for p in points if "error" in p],
               "front": front, "grid": {"arrays": list(grid.arrays), "bandwidths": list(grid.bandwidths),
                                        "budgets": grid.budgets if grid.budgets == "all" else list(grid.budgets),
                                        "latency": grid.latency},
               "seed": args.seed, "exits": str(args.exits), "intmodel": report_path(args.intmodel),
               "exit_path": str(args.exit_path), "clocks": {str(a): c for a, c in clocks.items()}, "seconds": round(wall, 1),
               "seconds_confirm": round(time.time() - t0 - wall, 1),
               "workers": args.cluster or args.workers, "confirmations": confirmed, "all_points": good,
               "energy_table": sweep.energy_table(),
               "arrays_not_fitting": sorted({p["rows"] for p in good if p.get("fits") is False})}
    keys = ["rows", "cols", "bandwidth", "latency_cycles", "clock_mhz", "clock_source", "fits", "budget", "top1", "cycles",
            "latency_us", "energy_uj", "cycle_saving", "energy_saving", "dram_share"]
    with report_dir("sweep", args.out) as folder:
        with open(folder / "points.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(good)
        write_summary(folder, summary)
        render.plot(good, front, folder / "pareto.png", summary["energy_table"])
        (folder / "README.md").write_text(render.readme(summary))
    print(f"{len(good)} points from {len(tasks)} machines in {wall:.1f} s; Pareto front: {len(front)} points "
          f"-> {Path(args.out) / 'sweep'}")
    if confirmed:
        print(render.confirmations_text(confirmed))
    return 0 if all(c["passed"] for c in confirmed) else 1
