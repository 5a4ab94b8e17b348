"""Turn an exit distribution into cycles and energy on the layer engine.

Reads the IntModel (the program of every segment), the exit path (the exit head, whose dense
layers, built as --head says, set its decision time) and `qexit exits`'s exit_distribution.json (by
default seed 0, the routing the exit path carries; `--seed mean` for the mean over seeds), and
writes reports/cost/: summary.json (cycles_full, cycles_exit, cycle_saving, energy_full_pj,
energy_exit_pj, energy_saving, latency_us, throughput_ips, clock_mhz and the breakdowns), a
README with the tables and cost.png. Energy is priced under --energy-table (default: Horowitz's
45 nm ASIC table; energy_table names it) and, beside it, under the FPGA estimate
hw/cost/tables/fpga_ecp5_scaled.json (the keys ending _fpga; energy_table_fpga names it), each
with the share of its total that is DRAM (dram_share_full, dram_share_exit and their _fpga
twins). The model itself is hw/cost/; its docstring says what is counted and what is left out.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hw import cost
from hw.cost import tables
from hw.rtl.dense import MacDense, StreamDense
from model.exits import exit_path
from model.quantize import load_intmodel
from qexit.commands.common import (
    add_data_args, add_exit_path_args, add_head_args, add_machine_args, clock_from_args, head_macs, load_model,
    machine_from_args, positive, report_path
)
from qexit.render import cost as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary

HELP = "cycles, energy, latency and throughput of early exit against INT8 full depth on the layer engine"
EXITS_DEFAULT = Path("reports") / "exits" / "exit_distribution.json"


def seed_arg(value: str):
    if value == "mean":
        return None
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a seed number or 'mean', got {value}")
    return int(value)


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--exits", type=Path, default=EXITS_DEFAULT, help="`qexit exits`'s exit_distribution.json")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="whose routing: a seed of the exits run (default 0, the one the exit path holds), or 'mean'")
    # 4x4: the largest accelerator that fits the LFE5U-85F (reports/example/synth), so the default is priced
    # at the clock it reaches
    add_machine_args(p, rows=4, clock_mhz=None, synth=True)
    p.add_argument("--batch", type=positive, default=16, help="images in flight in throughput mode")
    p.add_argument("--energy-table", type=Path, default=None,
                   help="a JSON energy table like hw/cost/tables/horowitz_45nm.json (default: Horowitz, ISSCC 2014, "
                        "45 nm ASIC); the FPGA estimate hw/cost/tables/fpga_ecp5_scaled.json is shown beside it")
    add_head_args(p, "rows x cols, as many as the array", stream=True)
    p.add_argument("--jobs", type=positive, default=None, help="--head da4ml: solves at a time (default: one per CPU)")
    p.add_argument("--model", default=None, metavar="clip:DIR",
                   help="the CLIP folder the IntModel and the exits came from (`qexit quantize|exits --model`): "
                        "the IntModel is checked against its vision tower (needs --data for the class names)")
    add_data_args(p)
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/cost/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    t0 = time.time()
    table = tables.load(args.energy_table)
    im = load_intmodel(args.intmodel, load_model(args)[0].cfg if args.model else None)
    ep = exit_path.load(args.exit_path)
    ep.check_width(im.config.width)
    mhz, clock = clock_from_args(args, im, ep)
    machine = machine_from_args(args, clock_mhz=mhz)
    exits = cost.read_exits(args.exits)
    dist, reported = cost.load_distribution(exits, args.seed, im.config.depth)
    routes = reported.get("pareto") or []
    heads = sorted(set(dist.candidates) | {k for r in routes for k in r["layers"] if k < im.config.depth})
    macs = machine.lanes if args.head == "stream" else head_macs(args, machine.rows * machine.cols)
    if macs is None:
        dense = cost.head_latencies(ep, heads, args.jobs or os.cpu_count() or 1, not args.quiet)
    elif args.head == "stream":
        dense = {k: StreamDense(macs) for k in heads}
    else:
        dense = {k: MacDense(macs) for k in heads}
    costs = cost.build(im, machine, table, dense, ep.head)
    s = cost.summary(costs, dist, args.batch, reported)
    s["pareto"] = cost.pareto(costs, routes)
    s.update({**clock, "seed": "mean" if args.seed is None else args.seed, "intmodel": report_path(args.intmodel),
              "exit_path": str(args.exit_path), "exits": str(args.exits), "head": {"dense": args.head, "macs": macs,
                       "decision_cycles": {str(k): p.cycles for k, p in costs.decision.items()},
                       **({"da4ml_latencies": {str(k): v for k, v in dense.items()}} if macs is None else {})},
              "seconds": round(time.time() - t0, 1)})
    with report_dir("cost", args.out) as folder:
        write_summary(folder, s)
        render.plots(s, folder)
        (folder / "README.md").write_text(render.readme(s))
    print(render.table_text(s))
    return 0
