"""Throughput against the DSPs it takes: GOPS and GOPS per MULT18X18D of the largest design
that fits the LFE5U-85F, at the clock nextpnr found for it, against an integer-only ViT
accelerator's 762.7 GOPS on a ZCU102's 2,520 DSPs (about 0.30 GOPS per DSP).

Reads the committed synthesis summary (``reports/example/synth/summary.json``): the whole
accelerator when a size fits, else the largest layer engine that fits (then the figure is a
bound: the exit head, comparator and sequencer are left out of its DSPs, and its Fmax may be
above the whole accelerator's). Cycles per image are the cost model's for the whole accelerator
at that array size (``qexit cost``, 8 B/cycle after 20 cycles, the committed exit
distribution), full depth and early exit; operations are 2 per int8 MAC.

Run: .venv/bin/python benchmarks/bench_gops.py [--synth FILE] [--out FILE]
Prints the table and writes benchmarks/results/bench_gops.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE = {"name": "integer-only ViT accelerator on a ZCU102", "gops": 762.7, "dsps": 2520}
EXITS = "reports/example/exits/exit_distribution.json"


def largest_fitting(summary: dict) -> tuple[dict, str]:
    """(the design's row, what it is) of the largest fitting accelerator, else layer engine."""
    for prefix, what in (("accelerator", "whole accelerator"), ("layer engine", "layer engine alone")):
        rows = [d for d in summary["designs"] if d["design"].startswith(prefix) and d["fits"] and d["fmax_mhz"]]
        if rows:
            return max(rows, key=lambda d: d["lanes"]), what
    raise SystemExit("no accelerator or layer engine fits in the synthesis summary")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--synth", type=Path, default=Path("reports/example/synth/summary.json"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_gops.json"))
    args = p.parse_args()
    design, what = largest_fitting(json.loads(args.synth.read_text()))
    lanes, mhz = design["lanes"], design["fmax_mhz"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "qexit.cli", "cost", "--quiet", "--rows", str(lanes), "--cols", str(lanes),
                        "--clock-mhz", str(mhz), "--exits", EXITS, "--out", tmp], check=True, stdout=subprocess.DEVNULL)
        cost = json.loads((Path(tmp) / "cost" / "summary.json").read_text())
    macs = {"full": cost["macs_full"], "exit": cost["macs_exit"]}
    cycles = {"full": cost["cycles_full"], "exit": cost["cycles_exit"]}
    ref = REFERENCE["gops"] / REFERENCE["dsps"]
    rows = {}
    for k in ("full", "exit"):
        ips = mhz * 1e6 / cycles[k]
        gops = 2 * macs[k] * ips / 1e9
        rows[k] = {"cycles": cycles[k], "images_per_s": ips, "gops": gops, "gops_per_dsp": gops / design["dsps"],
                   "against_reference": gops / design["dsps"] / ref}
        print(f"{k:>4}: {cycles[k]:,.0f} cycles, {ips:,.2f} img/s, {gops:.3f} GOPS, "
              f"{gops / design['dsps']:.4f} GOPS/DSP ({gops / design['dsps'] / ref:.3f}x the reference's {ref:.3f})")
    out = {"design": design["design"], "what": what, "lanes": lanes, "fmax_mhz": mhz, "dsps": design["dsps"],
           "synthesis": str(args.synth), "exits": EXITS, "reference": dict(REFERENCE, gops_per_dsp=ref), **rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{what} {lanes}x{lanes} at {mhz} MHz, {design['dsps']} MULT18X18D; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
