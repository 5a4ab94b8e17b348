"""Mixed precision with exits: per-block bit-widths, allocated and costed with the exits.

Builds the bench (calibration, the 8-bit traces, exit heads and gate on 8-bit features), then
the uniform 8/6/4-bit baselines, the PMQ-style and MAQEE-style allocators, the frontier of
top-1 against expected energy and BOPs, the chosen assignment (the cheapest within --max-drop of
uniform INT8 full depth, with its decision flips within --risk) and the Rescue-Effect sweep.
Writes reports/mixed/: summary.json (top1_uniform8, top1_mixed, bops_saving, energy_saving,
assignment, rescue_sweep, the points, the frontier), README.md, frontier.png, rescue.png,
chosen_cost.json (the chosen assignment's cost report, as `qexit cost` writes) and
intmodel.pt (its IntModel). `--assignment` measures one given assignment instead of searching.
The logic is studies/mixed.py (its docstring says what is measured), the costs hw/cost/.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hw import cost
from hw.cost import tables
from hw.rtl.head import MacDense
from model.errors import QexitError
from model.quantize import check_widths
from qexit.commands.common import add_model_args, load_model, load_split, model_name, parse_assignment, positive
from qexit.reports import REPORTS_DIR, markdown_table, report_dir, write_summary
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
    p.add_argument("--rows", type=positive, default=8, help="array rows = cols of the layer engine that prices it")
    p.add_argument("--bandwidth", type=float, default=8.0, help="weight stream, bytes per cycle")
    p.add_argument("--clock-mhz", type=float, default=100.0, help="clock for latency (the layer engine's target)")
    p.add_argument("--energy-table", type=Path, default=None, help="a JSON energy table (default: Horowitz 45 nm)")
    p.add_argument("--threads", type=positive, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/mixed/")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:


    t0 = time.time()
    if not 0 <= args.risk <= 1 or not 0 <= args.max_drop <= 1:
        raise QexitError(f"--risk {args.risk} and --max-drop {args.max_drop} must be fractions in [0, 1]")
    torch.set_num_threads(args.threads)
    model, _ = load_model(args)
    cfg = model.cfg
    given = check_widths(parse_assignment(args.assignment), cfg.depth) if args.assignment else None
    machines = {name: cost.Machine(args.rows, args.bandwidth, 20, args.clock_mhz, scalable)
                for name, scalable in (("int8", False), ("scalable", True))}
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
    s.update({"checkpoint": model_name(args), "machine": {"rows": args.rows, "cols": args.rows,
              "bandwidth_bytes_per_cycle": args.bandwidth, "clock_mhz": args.clock_mhz},
              "energy_table": table.name, "seconds_bench": round(t_bench, 1), "seconds": round(time.time() - t0, 1)})
    with report_dir("mixed", args.out) as folder:
        if chosen is not None:
            im = bench.intmodel(chosen["widths"])
            im.save(folder / "intmodel.pt")
            layers = [l for l in chosen["exit_layers"] if l < cfg.depth]
            costs = cost.build(im, machines["scalable"], table, {c: MacDense(args.rows ** 2) for c in layers},
                               bench.head if layers else None)
            dist = cost.Distribution(tuple(chosen["exit_layers"]), tuple(chosen["exit_fraction"]), tuple(layers))
            c = {**cost.summary(costs, dist, 16), "widths": chosen["widths"], "top1": chosen["top1_test"],
                 "note": "full depth here is the chosen widths at full depth on the precision-scalable engine"}
            (folder / "chosen_cost.json").write_text(json.dumps(c, indent=2, default=float) + "\n")
        write_summary(folder, s)
        if given is None:
            mixed.plot_frontier(s, folder / "frontier.png")
            if s["rescue_sweep"]:
                mixed.plot_rescue(s["rescue_sweep"], folder / "rescue.png")
        (folder / "README.md").write_text(readme(s))
    print(headline(s))
    return 0


def headline(s: dict) -> str:
    if s.get("top1_mixed") is None:
        if "nsr" in s:
            p = s["points"][0]
            return (f"mixed: assignment {s['assignment']}: top-1 {100 * p['top1_test']:.2f}% at full depth "
                    f"(uniform 8-bit {100 * s['top1_uniform8']:.2f}%), E[BOPs] {p['bops'] / 1e9:.3f} G")
        return "mixed: no assignment met the accuracy and risk bounds"
    return (f"mixed: top-1 {100 * s['top1_mixed']:.2f}% (uniform INT8 full depth {100 * s['top1_uniform8']:.2f}%), "
            f"{100 * s['bops_saving']:.1f}% fewer BOPs, {100 * s['energy_saving']:.1f}% less energy "
            f"(precision-scalable engine; {100 * s['energy_int8_saving']:.1f}% on the INT8 engine)"
            + (f"; the cheapest in BOPs: {100 * s['chosen_bops']['savings']['bops_saving']:.1f}% fewer"
               if s.get("chosen_bops") else "") + f"; {s['seconds']:.0f} s")


def _row(p: dict) -> list[str]:
    return [p["allocator"], f"{p['budget']:g}", " ".join(f"{w}/{a}" for w, a in p["widths"]),
            f"{100 * p['top1_test']:.2f}%", f"{100 * p.get('flips_gate', 0):.1f}%", f"{p['bops'] / 1e9:.3f}",
            f"{p['energy_pj_int8'] / 1e6:.1f}", f"{p['energy_pj_scalable'] / 1e6:.1f}",
            f"{p['cycles_scalable']:,.0f}"]


HEAD = ["allocator", "budget", "widths w/a per block", "top-1 (test)", "flips (gate)", "E[GBOPs]",
        "energy INT8 (µJ)", "energy scalable (µJ)", "cycles scalable"]


def savings_table(sv: dict) -> str:
    return markdown_table(
        ["saving against uniform INT8 full depth", "total", "exits only (8-bit, same budget)",
         "bit-widths only (full depth)"],
        [[name, f"{100 * sv[f'{k}_saving']:.1f}%", f"{100 * sv[f'{k}_saving_exits_only']:.1f}%",
          f"{100 * sv[f'{k}_saving_bits_only']:.1f}%"]
         for name, k in (("E[BOPs]", "bops"), ("energy, precision-scalable engine", "energy"),
                         ("cycles, precision-scalable engine", "cycles"), ("energy, INT8 engine", "energy_int8"))])


def readme(s: dict) -> str:
    if "nsr" in s:
        return ("# Mixed precision: one assignment\n\n"
                + markdown_table(HEAD, [_row(p) for p in s["points"]]) + "\n\nNSR per block: "
                + ", ".join(f"{x:.3f}" for x in s["nsr"]) + "\n")
    parts = [f"# Mixed precision with exits (`qexit mixed`)\n\n"
             f"Model `{s['checkpoint']}`, {s['depth']} blocks; exit candidates {s['candidates']}; "
             f"{s['images']['gate']} gating and {s['images']['test']} test images; heads and gate trained on the "
             f"8-bit features; every figure from the test split unless it says gate. Costs: `hw/cost/` on the "
             f"{s['machine']['rows']}x{s['machine']['cols']} layer engine at {s['machine']['bandwidth_bytes_per_cycle']} "
             f"B/cycle, {s['machine']['clock_mhz']} MHz, {s['energy_table']}; 'scalable' is the same engine with "
             f"precision-scalable PEs (two 4x4 MACs a cycle), 'INT8' the engine as built (bit-widths change nothing "
             f"there). How each number is made: `studies/mixed.py`'s docstring.\n"]
    if s.get("chosen"):
        c = s["chosen"]
        parts.append(
            f"\n## Chosen\n\n{c['allocator']} at LCT budget {c['budget']:g}: widths (w/a) "
            f"{' '.join(f'{w}/{a}' for w, a in c['widths'])}. Top-1 {100 * c['top1_test']:.2f}% against uniform "
            f"INT8 full depth {100 * s['top1_uniform8']:.2f}% (FP32 {100 * s['top1_fp32']:.2f}%); decision flips "
            f"{100 * c.get('flips_gate', 0):.1f}% (gate) and {100 * c.get('flips_test', 0):.1f}% (test).\n\n"
            + savings_table(s) + "\n")
    else:
        parts.append(f"\n## Chosen\n\nNo point met top-1 within {100 * s['max_drop']:.1f} pt and flips within "
                     f"{100 * s['risk']:.1f}%.\n")
    c = s.get("chosen_bops")
    if c and s.get("chosen") and c["widths"] == s["chosen"]["widths"] and c["budget"] == s["chosen"]["budget"]:
        parts.append("\nThe cheapest point in BOPs under the same bounds is the same point.\n")
    elif c:
        parts.append(
            f"\n## The cheapest in BOPs under the same bounds\n\n{c['allocator']} at LCT budget {c['budget']:g}: "
            f"widths (w/a) {' '.join(f'{w}/{a}' for w, a in c['widths'])}. Top-1 {100 * c['top1_test']:.2f}%; "
            f"decision flips {100 * c.get('flips_gate', 0):.1f}% (gate) and {100 * c.get('flips_test', 0):.1f}% "
            f"(test).\n\n" + savings_table(c["savings"]) + "\n")
    parts.append("\n## Frontier (test top-1 against expected energy on the precision-scalable engine)\n\n"
                 "![frontier](frontier.png)\n\n" + markdown_table(HEAD, [_row(p) for p in s["frontier_energy"]]) + "\n")
    parts.append("\n## Frontier against E[BOPs]\n\n" + markdown_table(HEAD, [_row(p) for p in s["frontier_bops"]]) + "\n")
    parts.append("\n## Allocator run time\n\n" + markdown_table(
        ["allocator", "seconds (incl. the shared per-move sensitivity)"],
        [[k, f"{v:.1f}"] for k, v in s["seconds_allocators"].items()])
        + f"\n\nThe bench (calibration, 8-bit traces, heads, gate) took {s['seconds_bench']:.0f} s; the whole "
          f"run {s['seconds']:.0f} s.\n")
    if s["rescue_sweep"]:
        sweep = s["rescue_sweep"]
        q = [r["quadrants"] for r in sweep]
        rows = [[f"{r['activation_bits']}", f"{r['last_blocks']}", f"{r['nsr_deepest']:.3f}",
                 f"{100 * r['top1_full_depth']:.2f}%", f"{100 * r['top1_exit']:.2f}%",
                 *(f"{100 * x[k]:.2f}%" for k in ("both_correct", "rescue", "loss", "both_wrong")),
                 f"{100 * r['net_rescue']:+.2f}%"] for r, x in zip(sweep, q)]
        nsr = [[f"{r['activation_bits']}", f"{r['last_blocks']}", *(f"{v:.2f}" for v in r["nsr"])] for r in sweep]
        parts.append(f"\n## Rescue-Effect sweep (activation bits of the last k blocks; exits at budget "
                     f"{s['operating_budget']:g})\n\n![rescue](rescue.png)\n\nE's four quadrants: the exits "
                     f"against the same model's full depth, as shares of the test images.\n\n"
                     + markdown_table(["a bits", "k", "NSR deepest", "top-1 full depth", "top-1 exits", "both correct",
                                       "rescue", "loss", "both wrong", "net"], rows)
                     + "\n\nNSR per block (against FP32, test images):\n\n"
                     + markdown_table(["a bits", "k", *(str(i + 1) for i in range(s["depth"]))], nsr) + "\n")
    return "".join(parts)
