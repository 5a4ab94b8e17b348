"""Mixed precision with exits: per-block bit-widths, allocated and costed with the exits.

Builds the bench (calibration, the 8-bit traces, exit heads and gate on 8-bit features), then
the uniform 8/6/4-bit baselines, the PMQ-style and MAQEE-style allocators, the frontier of
top-1 against expected energy and BOPs, the chosen assignment (the cheapest within --max-drop of
uniform INT8 full depth, with its decision flips within --risk) and the Rescue-Effect sweep.
Writes reports/mixed/: summary.json (top1_uniform8, top1_mixed, bops_saving, energy_saving,
assignment, rescue_sweep, the points, the frontier; energy_table and energy_table_label, _kind and
_source name the energy table), README.md, frontier.png, rescue.png,
chosen_cost.json (the chosen assignment's cost report, as `qexit cost` writes, with the FPGA
estimate and the DRAM shares beside it) and
intmodel.pt (its IntModel). `--assignment` measures one given assignment instead of searching.
The logic is studies/mixed.py (its docstring says what is measured), the costs hw/cost/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from hw import cost
from hw.cost import tables
from hw.rtl.dense import StreamDense
from model.errors import QexitError
from model.quantize import check_widths
from qexit.commands.common import (
    add_machine_args, add_model_args, load_model, load_split, machine_from_args, model_name, parse_assignment, positive
)
from qexit.render import mixed as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary
from studies import mixed

HELP = "per-block bit-widths with exits: PMQ/MAQEE allocators, frontier, BOPs/energy savings, Rescue-Effect sweep"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--train-images", type=positive, default=4000, help="train-split images the exit heads learn from")
    p.add_argument("--gate-images", type=positive, default=1000,
                   help="gating-split images: the gate, the thresholds, the risk control and the choice")
    p.add_argument("--test-images", type=positive, default=2000, help="test images every figure is reported on")
    p.add_argument("--calib-images", type=positive, default=512, help="gating images the 8-bit scales come from")
    p.add_argument("--probe", type=positive, default=500, help="gating images each single move is measured on")
    p.add_argument("--points", type=positive, default=8, help="assignments measured along each allocator's walk")
    p.add_argument("--risk", type=float, default=0.05,
                   help="largest share of exit decisions (layer, class) that may differ from uniform 8-bit's")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="accuracy drop (fraction) the chosen point may have against uniform INT8 full depth")
    p.add_argument("--assignment", default=None,
                   help="measure this assignment only: W:A per block, comma-separated (e.g. 8:8,8:8,...,4:4)")
    p.add_argument("--no-rescue", action="store_true", help="skip the Rescue-Effect sweep")
    add_machine_args(p, options=("rows", "bandwidth", "latency", "clock"))     # the layer engine that prices it: R x R
    p.add_argument("--energy-table", type=Path, default=None, help="a JSON energy table (default: Horowitz, ISSCC 2014, 45 nm ASIC)")
    p.add_argument("--threads", type=positive, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/mixed/")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    t0 = time.time()
    if not 0 <= args.risk <= 1 or not 0 <= args.max_drop <= 1:
        raise QexitError(f"--risk {args.risk} and --max-drop {args.max_drop} must be fractions in [0, 1]")
    int8 = machine_from_args(args)
    machines = {"int8": int8, "scalable": dataclasses.replace(int8, scalable=True)}
    torch.set_num_threads(args.threads)
    model, _ = load_model(args)
    cfg = model.cfg
    given = check_widths(parse_assignment(args.assignment), cfg.depth) if args.assignment else None
    table = tables.load(args.energy_table)
    gate = load_split(args, "gate", args.gate_images + args.calib_images, cfg)
    calib, gate = gate.images[:args.calib_images], gate.subset(args.gate_images)     # the first images calibrate
    train, test = load_split(args, "train", args.train_images, cfg), load_split(args, "test", args.test_images, cfg)
    progress = not args.quiet
    bench = mixed.prepare(model, calib, train, gate, test, machines, table, progress=progress)
    t_bench = time.time() - t0
    if given is not None:
        m = bench.measure(given)
        s = {"assignment": [list(p) for p in given], "nsr": m.nsr, "points": bench.points(m, label="given"),
             "uniform8": [mixed.public(bench.base_ops[b]) for b in mixed.BUDGETS],
             "top1_uniform8": bench.base_ops[1.0]["top1_test"]}
        chosen = None
    else:
        s = mixed.study(bench, args.probe, args.points, args.risk, args.max_drop, not args.no_rescue, progress)
        chosen = s["chosen"]
    s.update({"checkpoint": model_name(args), "machine": int8.describe(),
              "energy_table": table.name, "energy_table_label": table.label, "energy_table_kind": table.kind,
              "energy_table_source": table.source, "seconds_bench": round(t_bench, 1), "seconds": round(time.time() - t0, 1)})
    with report_dir("mixed", args.out) as folder:
        if chosen is not None:
            im = bench.intmodel(chosen["widths"])
            im.save(folder / "intmodel.pt")
            layers = [l for l in chosen["exit_layers"] if l < cfg.depth]
            costs = cost.build(im, machines["scalable"], table, {c: StreamDense(int8.lanes) for c in layers},
                               bench.head if layers else None)
            dist = cost.Distribution(tuple(chosen["exit_layers"]), tuple(chosen["exit_fraction"]), tuple(layers))
            c = {**cost.summary(costs, dist, 16), "widths": chosen["widths"], "top1": chosen["top1_test"],
                 "note": "full depth here is the chosen widths at full depth on the precision-scalable engine"}
            (folder / "chosen_cost.json").write_text(json.dumps(c, indent=2, default=float) + "\n")
        write_summary(folder, s)
        render.plots(s, folder)
        (folder / "README.md").write_text(render.readme(s))
    print(render.headline(s))
    return 0
