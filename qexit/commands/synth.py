"""Synthesize the accelerator and its blocks for a Lattice ECP5 LFE5U-85F.

yosys (synth_ecp5) and nextpnr-ecp5, the YoWASP builds (`pip install -e .[synth]`), on the
Verilog that Amaranth writes. --top picks what (comma-separated; default all but layer and head):

* accelerator: the whole accelerator (sequencer, layer engine, exit head, comparator) at every
  array size in --arrays, with yosys's cells by block (array, GEMM engine, each unit, layer
  controller, exit head, comparator, sequencer);
* layer: the layer engine alone at each size (its cells are also among the accelerator's blocks);
* units: each streaming unit alone (LayerNorm, softmax, the activation table, add, requantizer) at each size's lanes;
* gemm: the GEMM engine inside the layer engine (8x8, or the largest size);
* comparator: the exit comparator;
* head: with --head LAYER, that layer's exit head alone, its weights in a ROM.

nextpnr runs out of context (no IO buffers: the figures leave the IO out) at speed grade 6.
Writes reports/synth/summary.json: an ``accelerator`` list (rows, cols, fits, fmax_mhz, luts,
ffs, dsps, brams), the largest accelerator that fits at the top level, and every design's row;
a size that does not fit keeps nextpnr's own numbers. Results are cached by the Verilog's hash
(.cache/qexit/synth) and the committed RTL's ship in hw/tools/synth_results, so a fresh clone
reads them in seconds; a changed design is synthesized again (tens of minutes for a whole
accelerator).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from hw.tools import synth
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import load_intmodel
from qexit.commands.common import EXIT_PATH_DEFAULT, add_exit_path_args, positive, report_path
from qexit.render import synth as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary

HELP = "LUT, FF, DSP, BRAM and Fmax of the whole accelerator and its blocks on an ECP5 LFE5U-85F"


def arrays(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated array sizes like 4,8,16, got {value}") from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"must be positive array sizes like 4,8,16, got {value}")
    return sorted(set(out))


def tops(value: str) -> list[str]:
    out = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in out if v not in synth.TOPS]
    if not out or unknown:
        raise argparse.ArgumentTypeError(f"no top {', '.join(unknown) or repr(value)}; choose from {', '.join(synth.TOPS)}")
    return out


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--arrays", type=arrays, default=[4, 8],
                   help="square array sizes (lanes) to try; the largest accelerator that fits is reported")
    p.add_argument("--top", type=tops, default=list(synth.DEFAULT_TOPS),
                   help=f"what to synthesize, comma-separated, of {', '.join(synth.TOPS)} (default: "
                        f"{','.join(synth.DEFAULT_TOPS)})")
    p.add_argument("--freq-mhz", type=float, default=synth.TARGET_MHZ, help="nextpnr's target clock")
    p.add_argument("--head", type=int, default=None, metavar="LAYER",
                   help="also synthesize the exit head of this backbone layer")
    p.add_argument("--head-macs", type=positive, default=None,
                   help="--head: the head's int8 multipliers (default: L x L for the smallest array L x L)")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/synth/")


def _model(args):
    """(IntModel, exit path or None): the accelerator is built without exits when the default exit
    path was never written."""
    im = load_intmodel(args.intmodel)
    wants = "accelerator" in args.top or "head" in args.top
    if not wants:
        return im, None
    if not Path(args.exit_path).exists():
        if "head" in args.top or args.exit_path != EXIT_PATH_DEFAULT:
            raise QexitError(f"no exit path at {args.exit_path}; run `qexit exits`")
        print(f"no exit path at {args.exit_path} (run `qexit exits`): the accelerator is synthesized without exits")
        return im, None
    return im, exit_path.load(args.exit_path)


def run(args) -> int:
    t0 = time.time()
    if not args.freq_mhz > 0:
        raise QexitError(f"--freq-mhz {args.freq_mhz} must be > 0")
    synth.versions()                                   # refuses early when yowasp is missing
    im, ep = _model(args)
    rows = []
    for name, verilog, top, lanes in synth.designs(im, args.arrays, args.top, ep, args.head, args.head_macs):
        print(f"synthesizing {name} ({top}) ...", flush=True)
        r = synth.synthesize(name, verilog, top, args.freq_mhz)
        rows.append((r, lanes))
        fit = "fits" if r.fits else f"does not fit: {r.error}"
        print(f"  {r.luts:,} LUT4, {r.ffs:,} FF, {r.dsps} DSP, {r.brams} BRAM, Fmax "
              f"{r.fmax_mhz if r.fmax_mhz else '-'} MHz; {fit} (yosys {r.yosys_seconds} s, nextpnr {r.nextpnr_seconds} s)",
              flush=True)
    accel = [(r, n) for r, n in rows if r.design.startswith("accelerator")]
    summary = {"device": synth.DEVICE, "speed_grade": synth.SPEED_GRADE, "target_mhz": args.freq_mhz,
               "accelerator": [synth.accelerator_row(r, n) for r, n in accel],
               "designs": [dict(r.summary(), lanes=n) for r, n in rows], "out_of_context": True,
               "intmodel": report_path(args.intmodel), "exit_path": str(args.exit_path) if ep is not None else None}
    fitting = [(r, n) for r, n in accel if r.fits]
    if fitting:
        best, lanes = max(fitting, key=lambda x: x[1])
        summary.update({"luts": best.luts, "dsps": best.dsps, "ffs": best.ffs, "brams": best.brams,
                        "fmax_mhz": best.fmax_mhz, "rows": lanes, "cols": lanes, "available": best.available,
                        "meets_target": bool(best.fmax_mhz and best.fmax_mhz >= args.freq_mhz)})
    elif accel:                  # a finding, not an error: the summary and README say what is over
        summary.update({"rows": None, "cols": None, "fmax_mhz": None, "meets_target": False})
    summary["seconds"] = round(time.time() - t0, 1)
    with report_dir("synth", args.out) as folder:
        write_summary(folder, summary)
        (folder / "README.md").write_text(render.readme(summary))
    if fitting:
        print(f"largest accelerator that fits: {lanes}x{lanes}, {best.luts:,} LUT4, {best.dsps} DSP, "
              f"{best.brams} BRAM, Fmax {best.fmax_mhz} MHz (target {args.freq_mhz})")
    elif accel:
        print("no accelerator size fits the LFE5U-85F: " + "; ".join(
            f"{n}x{n} {r.error.split('(over: ')[-1].rstrip(')') if r.error else 'not placed'}" for r, n in accel))
    return 0
