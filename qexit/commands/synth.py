"""Synthesize the accelerator's blocks for a Lattice ECP5 LFE5U-85F.

yosys (synth_ecp5) and nextpnr-ecp5, the YoWASP builds (`pip install -e .[synth]`), on the
Verilog that Amaranth writes for: the layer engine (the GEMM engine with its buffers, the units,
the scratchpad and the controller, sized for the IntModel's program) at every array size in
--arrays; the GEMM engine inside it; the exit comparator; and, with --head, one candidate
layer's exit head (fed as many lanes as the smallest array, its dense layers on --head-macs
multipliers with the weights in a ROM). nextpnr runs out of context (no IO
buffers: the figures leave the IO out). Writes reports/synth/summary.json with the layer
engine at the largest array that fits (luts, dsps, ffs, brams, fmax_mhz, rows, cols, device)
and every design's row; a size that does not fit keeps nextpnr's own numbers. Results are cached
(.cache/qexit/synth), so a second run takes seconds.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from hw.tools import synth
from model.errors import QexitError
from model.quantize import load_intmodel
from qexit.commands.common import add_exit_path_args, positive, report_path
from qexit.render import synth as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary

HELP = "LUT, DSP, FF, BRAM and Fmax of the layer engine, GEMM engine, comparator and head on an ECP5 LFE5U-85F"


def arrays(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated array sizes like 4,8,16, got {value}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"must be positive array sizes like 4,8,16, got {value}")
    return sorted(set(out))


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--arrays", type=arrays, default=[4, 8],
                   help="square array sizes (lanes) of the layer engine to try; the largest that fits is reported")
    p.add_argument("--freq-mhz", type=float, default=100.0, help="nextpnr's target clock (the layer engine's goal)")
    p.add_argument("--head", type=int, default=None, metavar="LAYER",
                   help="also synthesize the exit head of this backbone layer")
    p.add_argument("--head-macs", type=positive, default=None,
                   help="--head: the head's int8 multipliers (default: L x L for the smallest array L x L)")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/synth/")


def run(args) -> int:
    t0 = time.time()
    if not args.freq_mhz > 0:
        raise QexitError(f"--freq-mhz {args.freq_mhz} must be > 0")
    synth.versions()                                   # refuses early when yowasp is missing
    im = load_intmodel(args.intmodel)
    rows = []
    for name, verilog, top, lanes in synth.designs(im, args.arrays, args.exit_path if args.head else None,
                                                   args.head, args.head_macs):
        print(f"synthesizing {name} ({top}) ...", flush=True)
        r = synth.synthesize(name, verilog, top, args.freq_mhz)
        rows.append((r, lanes))
        fit = "fits" if r.fits else f"does not fit: {r.error}"
        print(f"  {r.luts:,} LUT4, {r.ffs:,} FF, {r.dsps} DSP, {r.brams} BRAM, Fmax "
              f"{r.fmax_mhz if r.fmax_mhz else '-'} MHz; {fit} (yosys {r.yosys_seconds} s, nextpnr {r.nextpnr_seconds} s)",
              flush=True)
    layer = [(r, n) for r, n in rows if r.design.startswith("layer engine") and r.fits]
    if not layer:
        raise QexitError("no layer engine size in --arrays fits the LFE5U-85F; try smaller arrays (e.g. --arrays 4)")
    best, lanes = max(layer, key=lambda x: x[1])
    summary = {"luts": best.luts, "dsps": best.dsps, "ffs": best.ffs, "brams": best.brams, "fmax_mhz": best.fmax_mhz,
               "rows": lanes, "cols": lanes, "device": best.device, "target_mhz": args.freq_mhz,
               "meets_target": bool(best.fmax_mhz and best.fmax_mhz >= args.freq_mhz),
               "available": best.available, "designs": [dict(r.summary(), lanes=n) for r, n in rows],
               "out_of_context": True, "intmodel": report_path(args.intmodel), "seconds": round(time.time() - t0, 1)}
    with report_dir("synth", args.out) as folder:
        write_summary(folder, summary)
        (folder / "README.md").write_text(render.readme(summary))
    print(f"largest layer engine that fits: {lanes}x{lanes}, {best.luts:,} LUT4, {best.dsps} DSP, "
          f"{best.brams} BRAM, Fmax {best.fmax_mhz} MHz (target {args.freq_mhz})")
    return 0
