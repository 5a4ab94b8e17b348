"""Turn an exit distribution into cycles and energy on the layer engine.

Reads the IntModel (the program of every segment), the exit path (the exit head, whose dense
layers, built as --head says, set its decision time) and `qexit exits`'s exit_distribution.json (by
default seed 0, the routing the exit path carries; `--seed mean` for the mean over seeds), and
writes reports/cost/: summary.json (cycles_full, cycles_exit, cycle_saving, energy_full_pj,
energy_exit_pj, energy_saving, latency_us, throughput_ips, clock_mhz and the breakdowns), a
README with the tables and cost.png. The model itself is hw/cost/; its docstring says what
is counted and what is left out.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hw import cost
from hw.cost import tables
from hw.rtl.head import MacDense
from hw.tools.synth import clock_for
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import load_intmodel
from qexit.commands.common import add_data_args, add_exit_path_args, add_head_args, head_macs, load_model, positive
from qexit.reports import REPORTS_DIR, markdown_table, report_dir, write_summary

HELP = "cycles, energy, latency and throughput of early exit against INT8 full depth on the layer engine"
EXITS_DEFAULT = Path("reports") / "exits" / "exit_distribution.json"
SYNTH_DEFAULT = Path("reports") / "synth" / "summary.json"


def clock(args) -> tuple[float, str]:
    """--clock-mhz, else the synthesized Fmax of this array size, else the 100 MHz target."""

    if args.clock_mhz is not None:
        return args.clock_mhz, "--clock-mhz"
    return clock_for(args.synth, args.rows)


def positive_float(value: str) -> float:

    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


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
    p.add_argument("--rows", type=positive, default=8, help="array rows (the layer engine is square: rows = cols)")
    p.add_argument("--cols", type=positive, default=8, help="array columns")
    p.add_argument("--bandwidth", type=positive_float, default=8.0, help="weight stream, bytes per cycle")
    p.add_argument("--latency", type=int, default=20, help="weight stream's first-word latency, cycles")
    p.add_argument("--clock-mhz", type=positive_float, default=None,
                   help="clock for latency and throughput (default: the Fmax `qexit synth` measured for this "
                        "array size, from --synth; else 100 MHz, the layer engine's target)")
    p.add_argument("--synth", type=Path, default=SYNTH_DEFAULT, help="`qexit synth`'s summary.json, for the clock")
    p.add_argument("--batch", type=positive, default=16, help="images in flight in throughput mode")
    p.add_argument("--energy-table", type=Path, default=None,
                   help="a JSON energy table like hw/cost/tables/horowitz_45nm.json (default: Horowitz, ISSCC 2014, 45 nm)")
    add_head_args(p, "rows x cols, as many as the array")
    p.add_argument("--jobs", type=positive, default=None, help="--head da4ml: solves at a time (default: one per CPU)")
    p.add_argument("--model", default=None, metavar="clip:DIR",
                   help="the CLIP folder the IntModel and the exits came from (`qexit quantize|exits --model`): "
                        "the IntModel is checked against its vision tower (needs --data for the class names)")
    add_data_args(p)
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/cost/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:

    t0 = time.time()
    if args.rows != args.cols:
        raise QexitError(f"the layer engine's array is square; got --rows {args.rows} --cols {args.cols}")
    mhz, clock_source = clock(args)
    machine = cost.Machine(args.rows, args.bandwidth, args.latency, mhz)
    table = tables.load(args.energy_table)
    im = load_intmodel(args.intmodel, load_model(args)[0].cfg if args.model else None)
    ep = exit_path.load(args.exit_path)
    ep.check_width(im.config.width)
    exits = cost.read_exits(args.exits)
    dist, reported = cost.load_distribution(exits, args.seed, im.config.depth)
    routes = reported.get("pareto") or []
    heads = sorted(set(dist.candidates) | {k for r in routes for k in r["layers"] if k < im.config.depth})
    macs = head_macs(args, args.rows * args.cols)
    if macs is None:
        dense = cost.head_latencies(ep, heads, args.jobs or os.cpu_count() or 1, not args.quiet)
    else:
        dense = {k: MacDense(macs) for k in heads}
    costs = cost.build(im, machine, table, dense, ep.head)
    s = cost.summary(costs, dist, args.batch, reported)
    s["pareto"] = cost.pareto(costs, routes)
    s.update({"clock_source": clock_source, "seed": "mean" if args.seed is None else args.seed, "intmodel": str(args.intmodel),
              "exit_path": str(args.exit_path), "exits": str(args.exits), "head": {"dense": args.head, "macs": macs,
                       "decision_cycles": {str(k): p.cycles for k, p in costs.decision.items()},
                       **({"da4ml_latencies": {str(k): v for k, v in dense.items()}} if macs is None else {})},
              "seconds": round(time.time() - t0, 1)})
    with report_dir("cost", args.out) as folder:
        write_summary(folder, s)
        cost.plot(s, folder / "cost.png")
        if s["pareto"]:
            cost.plot_pareto(s["pareto"], {"energy_saving": s["energy_saving"], "top1": s.get("top1_exit"),
                                           "top1_full_depth": s.get("top1_full_depth")}, folder / "pareto.png")
        (folder / "README.md").write_text(readme(s))
    print(table_text(s))
    return 0


def table_text(s: dict) -> str:
    rows = [("cycles per image", f"{s['cycles_full']:,.0f}", f"{s['cycles_exit']:,.0f}", f"{100 * s['cycle_saving']:.1f}%"),
            ("latency (us)", f"{s['latency_full_us']:,.1f}", f"{s['latency_us']:,.1f}", ""),
            ("energy per image (uJ)", f"{s['energy_full_pj'] / 1e6:,.2f}", f"{s['energy_exit_pj'] / 1e6:,.2f}",
             f"{100 * s['energy_saving']:.1f}%"),
            (f"throughput, batch {s['throughput_mode']['exit']['batch']} (img/s)", f"{s['throughput_full_ips']:,.0f}",
             f"{s['throughput_ips']:,.0f}", ""),
            ("MACs per image", f"{s['macs_full']:,.0f}", f"{s['macs_exit']:,.0f}", f"{100 * s['bop_saving']:.1f}%")]
    if s.get("top1_exit") is not None and s.get("top1_full_depth") is not None:
        rows.append(("top-1 (the exits step's test split)", f"{100 * s['top1_full_depth']:.2f}%",
                     f"{100 * s['top1_exit']:.2f}%", ""))
    w = max(len(r[0]) for r in rows)
    m = s["machine"]
    head = (f"cost at {m['rows']}x{m['cols']}, {m['bandwidth_bytes_per_cycle']} B/cycle, {m['clock_mhz']} MHz "
            f"({s['energy_table']['name']})\n{'':<{w}}  {'full depth':>14}  {'early exit':>14}  {'saving':>7}")
    return head + "\n" + "\n".join(f"{a:<{w}}  {b:>14}  {c:>14}  {d:>7}" for a, b, c, d in rows)


def readme(s: dict) -> str:
    m, a = s["machine"], s["atheena"]
    parts = [[p["part"], f"{p['reach']:.4f}", f"{p['cycles']:,.0f}", f"{p['energy_pj'] / 1e6:,.3f}"]
             for p in s["parts"]]
    cats = [[k, f"{s['energy_by_category_full_pj'][k] / 1e6:,.2f}", f"{s['energy_by_category_exit_pj'][k] / 1e6:,.2f}"]
            for k in s["energy_by_category_full_pj"]]
    kinds = [[k, f"{v:,.0f}", f"{s['cycles_by_kind_exit'].get(k, 0):,.0f}"] for k, v in s["cycles_by_kind_full"].items()]
    kinds += [["exit", "0", f"{s['cycles_by_kind_exit'].get('exit', 0):,.0f}"]]
    stages = [[f"{st['layers'][0]}-{st['layers'][1]}", f"{st['cycles']:,}", f"{st['reach']:.4f}",
               f"{st['rate_ips']:,.0f}", f"{st['bound_ips']:,.0f}"] for st in a["stages"]]
    tm = s["throughput_mode"]
    pareto = ""
    if s.get("pareto"):
        rows = [[f"{p['budget']:g}", f"{100 * p['top1']:.2f}%", f"{100 * p['flops_saving']:.1f}%",
                 f"{100 * p['cycle_saving']:.1f}%", f"{100 * p['energy_saving']:.1f}%"] for p in s["pareto"]]
        pareto = ("\n\n## Accuracy against energy: every LCT budget of the exits' sweep (same seed)\n\n"
                  "The exits step's Pareto sweep (float gate; the operating point above is the fixed-point "
                  "gate's), each budget's routing priced on this machine.\n\n![pareto](pareto.png)\n\n"
                  + markdown_table(["budget", "top-1", "FLOPs saving", "cycle saving", "energy saving"], rows))
    return (f"# Cost of early exit on the layer engine\n\n"
            f"`qexit cost` (hw/cost/) on the layer engine at {m['rows']}x{m['cols']}, weights streamed at "
            f"{m['bandwidth_bytes_per_cycle']} B/cycle after {m['weight_latency_cycles']} cycles, clocked at "
            f"{m['clock_mhz']} MHz ({s['clock_source']}); exit distribution: seed {s['seed']} of `{s['exits']}` (candidates on: "
            f"{s['distribution']['candidates']}); energy table: {s['energy_table']['name']} "
            f"({s['energy_table']['source']}).\n\n"
            "Cycles come from the layer engine's program (`hw/program.py`, checked against the RTL by "
            "`qexit verify block`) plus the exit head's decision time (`hw/rtl/head.py` `head_cycles`, checked "
            "by `qexit verify head`) and the comparator's latency. Energy is counts times the table: dynamic "
            "energy only; leakage, clock and control, and loading each segment's program are left out.\n\n```\n"
            + table_text(s) + "\n```\n\n![cost](cost.png)\n\n"
            "## Per part (expected over the distribution)\n\n"
            + markdown_table(["part", "P(reach)", "cycles", "energy (uJ)"], parts)
            + "\n\n## Energy by category (uJ per image)\n\n"
            + markdown_table(["category", "full depth", "early exit"], cats)
            + "\n\nmac: int8 MACs in the array (and the head's dense layers); alu: the units, requantizers "
              "and adders; sram: on-chip memories by size; dram: the weight and parameter streams.\n\n"
              "## Cycles by descriptor kind\n\n"
            + markdown_table(["kind", "full depth", "early exit"], kinds)
            + f"\n\n## Throughput mode and ATHEENA\n\nBatch {tm['exit']['batch']}: every streamed weight tile "
              f"serves the batch once; exited images are replaced, so B·P(reach l) images run layer l. "
              f"Full depth {tm['full']['throughput_ips']:,.0f} img/s at {tm['full']['energy_pj'] / 1e6:,.2f} uJ/img, "
              f"early exit {tm['exit']['throughput_ips']:,.0f} img/s at {tm['exit']['energy_pj'] / 1e6:,.2f} uJ/img "
              f"({100 * tm['energy_saving']:.1f}% less energy). A model only: the engine's buffers hold one image.\n\n"
              f"ATHEENA (Biggs et al., 2023) gives each stage between exits its own hardware and pipelines them: "
              f"throughput = min over stages of T_s / p_s (`min(T1, T2/p)` for two stages). With each of the "
              f"{a['engines']} stages on its own copy of this engine:\n\n"
            + markdown_table(["layers", "cycles", "p_s", "T_s (img/s)", "T_s / p_s"], stages)
            + f"\n\nATHEENA: {a['throughput_ips']:,.0f} img/s on {a['engines']} engines, "
              f"{a['atheena_per_engine_ips']:,.0f} per engine. This design time-shares one engine across all "
              f"layers, so its throughput is f / E[cycles] = {a['this_engine_ips']:,.0f} img/s on one engine: it "
              f"never idles a stage, so per engine it is at least ATHEENA's (E[cycles] = Σ p_s C_s ≤ S max p_s C_s), "
              f"and equal only when every stage's p_s C_s is the same.\n" + pareto + "\n")
