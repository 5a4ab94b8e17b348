"""Verify hardware blocks bit-exact against the integer golden model (model/intops.py) under cocotb.

`qexit verify gemm --rows R --cols C --shapes MxKxN,... --seed S` builds the GEMM engine
(Verilator by default, Icarus as the fallback; builds are cached), runs every shape with
random int8 operands, then the corner operands (all -128, all 127, -128 x 127, alternating,
zero, and sums that saturate int32) on the first shape, with random valid/ready
back-pressure on every other case, and finally a reset in the middle of a GEMM followed by a
correct GEMM. Every output is compared with model.intops and every cycle count (start to
done) with the schedule of hw/cost/schedule.py. Prints `bit-exact: <matched>/<total>` and the
measured vs predicted cycles per shape; exits 1 on any mismatch or cycle error.

`qexit verify units --vectors N --seed S` runs the streaming units beside the array, 4 lanes
wide (requantizer, residual add, i-GELU, LayerNorm, softmax), on N random rows each, with
random valid constants, the corner rows (constant rows, zero variance, -128/127 extremes,
attention rows across the full int32 range) and random back-pressure on every other case, and
compares every output integer with model.intops; and the exit comparator on N random
decisions (ties, gates at their thresholds, pruned layers) against model/exits/decision.py.
Exits 1 on any mismatch.

`qexit verify model --images K` runs every operation of the shipped IntModel on K test images
through the RTL: each GEMM (patch embedding, QKV, attention per head, projection, FC1, FC2,
head, logits) on the engine with its real weights streamed, and each LayerNorm, softmax,
GELU and residual add on its unit, fed the golden model's own inputs; every output integer,
and the predictions, must equal model/golden.py's. The host sequences the operations (the
on-chip layer controller runs the same operations in `verify block`).

`qexit verify block --images K` runs the layer engine (hw/rtl/layer.py: the GEMM engine, the
LayerNorm, softmax, GELU and add units, an on-chip scratchpad and a controller that runs the
program of descriptors of hw/program.py) on K test images, from pixels to logits: one start
per segment (patch embedding, each encoder layer, head), weights and parameters streamed from
the external-memory model (`--bandwidth B --latency L`). Every layer's output tokens, the
embedding and the logits are compared with model/golden.py (equal integers), and every
segment's cycles, start to done, with the cycle model of hw/program.py, which reads the same
program. `--layers N` stops after N layers (no head). `--random --width W --heads H --mlp F
--tokens T --seed S` builds a random, valid IntModel of that size (3 channels, patch 32, as
ViT-B/32) instead of the shipped one, and runs it on random images. Writes
reports/verify-block/summary.json and a README with the per-layer table; exits 1 on any
mismatch or cycle error.

`qexit verify comparator` replays the test split through the exit comparator (hw/rtl/comparator.py)
under cocotb: the class scores and gates of the fixed-point head that `qexit exits` evaluated
(saved in its exit_path.pt with the threshold registers), image by image, candidate layer by
candidate layer until the comparator exits, as the layer sequencer feeds it. Every decision
(exit bit, class, layer) must equal model/exits/decision.py, and every image's exit layer and
class the evaluation's. Writes reports/verify-comparator/summary.json (matched, total,
images, decisions, images_matched); exits 1 on any mismatch.

`qexit verify head --layers L1,L2 --sets N` builds the exit head of each chosen candidate
layer (by default the middle one; `all` for every one) as RTL (hw/rtl/head.py: its three dense
layers on --head-macs int8 multipliers with the weights in a ROM (--head mac, the default), or
as da4ml constant-matrix adder graphs in Verilog (--head da4ml, cached under .cache/qexit/da4ml);
the token sums, the requantizers, the LayerNorm, the norm, the reciprocal, the 15-bit softmax
and the gate in Amaranth) and runs it under cocotb on
the golden model's tokens of the first test images at that layer, N token sets in all. Every
output (the class scores and the gate, as the comparator takes them) must equal
model/exits/fixed.py on the same tokens, and every image's cycles, first token to last output,
the head's cycle count (hw/rtl/head.py head_cycles). Writes reports/verify-head/summary.json
(matched, total, latency_cycles); exits 1 on any mismatch or cycle error.

`qexit verify run --images N --seed S --rows R --cols C --bandwidth B` runs the early-exit
accelerator in RTL (sim/run.py): the layer engine runs each image layer by layer; after every
candidate layer whose exit is on, that layer's exit head (hw/rtl/head.py) takes the layer's tokens
from the engine's tap and the exit comparator decides; on exit the sequencer ends the image.
Images: N test images drawn with seed S (seed -1: the first N). Every image's exit layer and
class must equal the reference (the golden model's tokens, model/exits/fixed.py and the
threshold registers, computed on the host), every decision word the reference's, and every
image's total cycles (pixels to decision, from the RTL's own counters) the cost model's
(hw/cost/) exactly. Writes reports/verify-run/summary.json (images, decisions_matched,
matched, total, cycles_measured, cycles_predicted, exit_layers); exits 1 on any mismatch.
Each enabled candidate's head is built into the design, by default with rows x cols
multipliers (--head-macs); --head da4ml builds da4ml heads instead, one large design per
candidate at full size (see `verify head`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hw.cost import schedule
from hw.cost.schedule import WeightSource
from hw.rtl import gemm, head as hw_head
from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import load_intmodel, quantize
from qexit.commands.common import INTMODEL_DEFAULT, add_exit_path_args, add_head_args, head_macs, positive
from qexit.commands.rtl import add_buffer_args
from qexit.reports import markdown_table, report_dir, write_summary
from sim import (
    block as layer, dist, exit as sim_exit, gemm as verify, model as model_ops, run as sim_run, simulator as runner,
    units as sim_units
)

HELP = ("bit-exact RTL checks under cocotb: `verify gemm` (the GEMM engine), "
        "`verify units` (requantizer, add, GELU, LayerNorm, softmax, exit comparator), "
        "`verify model` and `verify block` (the IntModel through the RTL), "
        "`verify comparator` (the exit decisions of the test split), `verify head` (the exit head as RTL), "
        "`verify run` (the early-exit accelerator, image by image)")


def _block_doc(command: str) -> str:
    """The module docstring's paragraph about ``qexit verify <command>``."""
    return next(par for par in __doc__.split("\n\n") if par.startswith(f"`qexit verify {command}"))


def _engine_args(p, bandwidth: float, square: bool = False) -> None:
    """--rows --cols --bandwidth --latency --simulator of the steps that run the engine on a model."""
    note = " (the layer engine needs R = C)" if square else ""
    p.add_argument("--rows", type=positive, default=8, help=f"array rows R{note}")
    p.add_argument("--cols", type=positive, default=8, help="array columns C")
    p.add_argument("--bandwidth", type=float, default=bandwidth, help="weight stream bandwidth, bytes/cycle")
    p.add_argument("--latency", type=int, default=20, help="weight stream first-word latency, cycles")
    p.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                   help="default: Verilator if installed, else Icarus")


def add_arguments(p):
    sub = p.add_subparsers(dest="block", metavar="<block>", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    g = sub.add_parser("gemm", help="the systolic INT8 GEMM engine", description=_block_doc("gemm"),
                       formatter_class=fmt)
    g.add_argument("--rows", type=int, default=4, help="array rows R")
    g.add_argument("--cols", type=int, default=4, help="array columns C")
    g.add_argument("--shapes", default="50x17x13,16x40x9",
                   help="comma-separated MxKxN shapes, e.g. 50x768x768,50x17x13")
    g.add_argument("--random-shapes", type=int, default=0, metavar="N",
                   help="also N random shapes up to 64x96x48 (mostly not multiples of R or C)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the random shapes and operands (shape i uses seed+i)")
    g.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                   help="default: Verilator if installed, else Icarus")
    g.add_argument("--waves", action="store_true", help="record a VCD of the run")
    g.add_argument("--bandwidth", type=float, default=None,
                   help="weight stream from external memory, in bytes/cycle (default: a source that "
                        "always has the next word); the cycle model predicts the stalls")
    g.add_argument("--latency", type=int, default=0, help="first-word latency of the weight stream, cycles")
    g.add_argument("--int32", action="store_true",
                   help="check the int32 output path (sat32(A W^T + bias) on raw_out, as attention "
                        "scores need) instead of the requantized int8 one")
    g.add_argument("--token-bias", action="store_true",
                   help="a bias per token and channel (M, N) from the tbias buffer, as the patch "
                        "embedding's position embedding needs, instead of one per channel")
    g.add_argument("--no-extras", action="store_true",
                   help="only the random shapes: no corner operands, back-pressure or reset test")
    add_buffer_args(g)
    g.set_defaults(_block=run_gemm)

    mo = sub.add_parser("model", help="every operation of the IntModel on real test images, through the RTL",
                        description=_block_doc("model"), formatter_class=fmt)
    mo.add_argument("--images", type=positive, default=2, help="test images (the first N of the test split)")
    mo.add_argument("--intmodel", type=Path, default=INTMODEL_DEFAULT,
                    help="IntModel file (default: the one `qexit quantize` wrote; quantizes the shipped "
                         "model when it is missing)")
    _engine_args(mo, 4.0)
    mo.set_defaults(_block=run_model)

    bl = sub.add_parser("block", help="the layer engine: whole encoder layers from pixels to logits, bit-exact and cycle-exact",
                        description=_block_doc("block"), formatter_class=fmt)
    bl.add_argument("--images", type=positive, default=1, help="images (the first K of the test split, or random)")
    bl.add_argument("--layers", type=positive, default=None, help="encoder layers to run (default: all, then the head)")
    bl.add_argument("--intmodel", type=Path, default=INTMODEL_DEFAULT,
                    help="IntModel file (default: the one `qexit quantize` wrote; quantizes the shipped "
                         "model when it is missing)")
    _engine_args(bl, 4.0, square=True)
    bl.add_argument("--random", action="store_true", help="a random IntModel of the size below instead of the shipped one")
    bl.add_argument("--width", type=positive, default=768, help="--random: model width")
    bl.add_argument("--heads", type=positive, default=12, help="--random: attention heads")
    bl.add_argument("--mlp", type=positive, default=3072, help="--random: MLP width")
    bl.add_argument("--tokens", type=positive, default=50, help="--random: tokens (1 + a square number of patches)")
    bl.add_argument("--seed", type=int, default=0, help="--random: seed of the model and the images")
    bl.add_argument("--waves", action="store_true", help="write a waveform (FST) into the report folder")
    bl.set_defaults(_block=run_block)

    u = sub.add_parser("units", help="the streaming units: requantizer, add, GELU, LayerNorm, softmax, exit comparator",
                       description=_block_doc("units"), formatter_class=fmt)
    u.add_argument("--vectors", type=int, default=10_000,
                   help="random rows per unit (a beat of 4 lanes for the element-wise units, a token "
                        "row for LayerNorm, an attention row for softmax)")
    u.add_argument("--seed", type=int, default=0, help="seed of the constants and rows")
    u.add_argument("--units", default=",".join(sim_units.UNITS),
                   help=f"comma-separated units from {', '.join(sim_units.UNITS)}")
    u.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                   help="default: Verilator if installed, else Icarus")
    u.set_defaults(_block=run_units)

    co = sub.add_parser("comparator", help="the exit comparator on the fixed-point head's outputs for the test split",
                        description=_block_doc("comparator"), formatter_class=fmt)
    add_exit_path_args(co, intmodel=False)
    co.add_argument("--images", type=positive, default=None, help="the first N test images (default: all)")
    co.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                    help="default: Verilator if installed, else Icarus")
    co.set_defaults(_block=run_comparator)

    hd = sub.add_parser("head", help="the exit head as RTL (Amaranth, dense layers on MACs or da4ml) on real tokens",
                        description=_block_doc("head"), formatter_class=fmt)
    add_exit_path_args(hd)
    hd.add_argument("--layers", default=None,
                    help="candidate layers to build and run (1-based, e.g. 2,6), or 'all' (default: the middle "
                         "candidate layer; a full-size head takes about 10 minutes to build in Verilator)")
    hd.add_argument("--sets", type=positive, default=2000,
                    help="token sets in all (one image at one layer), spread evenly over the layers")
    hd.add_argument("--lanes", type=positive, default=8, help="int8 token values per input beat")
    add_head_args(hd, "64, an 8x8 array's")
    hd.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                    help="default: Verilator if installed, else Icarus")
    hd.add_argument("--quiet", action="store_true", help="no progress bar")
    hd.set_defaults(_block=run_head)

    rn = sub.add_parser("run", help="the early-exit accelerator in RTL: engine, exit heads, comparator, sequencer",
                        description=_block_doc("run"), formatter_class=fmt)
    add_exit_path_args(rn)
    rn.add_argument("--images", type=positive, default=20, help="test images to run")
    rn.add_argument("--layers", default=None,
                    help="only these candidate layers' exits on (e.g. 2,6; the others off, as a threshold register "
                         "switched off); default: every exit the exit path has on. Each on layer builds a head")
    rn.add_argument("--seed", type=int, default=0, help="which test images: a random draw with this seed (-1: the first N)")
    _engine_args(rn, 8.0, square=True)
    add_head_args(rn, "rows x cols, as many as the array")
    rn.add_argument("--workers", type=int, default=1,
                    help="processes that run shards at once: 1 runs them here; more start a local Dask cluster")
    rn.add_argument("--cluster", default=None, metavar="ADDRESS",
                    help="attach to a running Dask scheduler (e.g. tcp://10.0.0.1:8786) instead of a local cluster")
    rn.add_argument("--shard-size", type=int, default=10, help="images per shard (a task; written as it finishes)")
    rn.add_argument("--work", type=Path, default=Path("reports/.verify-run-shards"),
                    help="where finished shards are kept until the run ends")
    rn.add_argument("--resume", action="store_true",
                    help="keep the finished shards in --work (same configuration only) and run the rest")
    rn.add_argument("--quiet", action="store_true", help="no progress bar")
    rn.set_defaults(_block=run_run)


def run(args) -> int:
    return args._block(args)


def run_gemm(args) -> int:
    shapes = verify.parse_shapes(args.shapes) + verify.random_shapes(args.random_shapes, args.seed)
    cfg = gemm.GemmConfig(args.rows, args.cols, max_m=args.max_m, max_k=args.max_k, max_n=args.max_n,
                          max_raw_n=args.max_raw_n, max_bias_n=args.max_bias_n)
    for shape in shapes:
        cfg.check_shape(*shape, raw=args.int32, token_bias=args.token_bias)
    extras = not args.no_extras
    print(f"verifying the {cfg.rows}x{cfg.cols} GEMM engine on {len(shapes)} shape(s), seed {args.seed}",
          flush=True)
    with report_dir("verify-gemm") as folder:
        res = verify.verify_gemm(cfg.rows, cfg.cols, shapes, args.seed, corners=extras,
                                 backpressure=extras, max_m=cfg.max_m, max_k=cfg.max_k,
                                 max_n=cfg.max_n, bandwidth=args.bandwidth, latency=args.latency,
                                 raw=args.int32, max_raw_n=cfg.max_raw_n, token_bias=args.token_bias,
                                 max_bias_n=cfg.max_bias_n, simulator=args.simulator,
                                 waves=args.waves,
                                 folder=folder / "sim")
        reset = None
        if extras:
            reset = verify.verify_reset(cfg, shapes[0], args.seed, simulator=args.simulator,
                                        folder=folder / "sim-reset")
        rows = []
        for c in res.cases:
            timed = c["cycles_predicted"] is not None       # random stream stalls: values only
            err = c["cycles_measured"] - c["cycles_predicted"] if timed else "-"
            plan = schedule.plan(cfg.rows, cfg.cols, *verify.case_shape(c))
            util = schedule.utilization(plan.macs, cfg.rows, cfg.cols, c["cycles_measured"])
            util_io = schedule.utilization(plan.macs, cfg.rows, cfg.cols, c["cycles_measured"] + plan.io_cycles)
            rows.append([c["name"], c["seed"], f"{c['matched']}/{c['total']}", c["cycles_measured"],
                         c["cycles_predicted"] if timed else "random stalls", err, plan.io_cycles,
                         f"{util:.3f}", f"{util_io:.3f}"])
            print(f"  {c['name']:<28} bit-exact {c['matched']}/{c['total']}  cycles measured "
                  f"{c['cycles_measured']} predicted {c['cycles_predicted'] if timed else '- (random stalls)'} "
                  f"(error {err})  utilization {util:.3f} start to done, {util_io:.3f} with loads/unload")
        kinds = ", ".join(f"{v} {k}" for k, v in res.outputs_by_kind().items())
        print(f"bit-exact: {res.matched}/{res.total} ({kinds}; synthetic operands)")
        source = "ideal" if args.bandwidth is None else f"{args.bandwidth:g} B/cycle, latency {args.latency}"
        print(f"cycles (weights streamed: {source}; cases without random stalls): measured "
              f"{res.cycles_measured}, predicted {res.cycles_predicted}, {res.cycle_errors} case(s) with an error")
        if reset is not None:
            print(f"reset mid-GEMM, then a GEMM: {'passed' if reset.passed else 'FAILED'}")
        ok = res.passed and (reset is None or reset.passed)
        if not ok:
            print((res.log or (reset.log if reset else "")) or "(no simulator log)")
        summary = {**{k: v for k, v in res.summary().items() if k != "cases"},
                   "seed": args.seed, "shapes": [f"{m}x{k}x{n}" for m, k, n in shapes],
                   "reset_mid_gemm": None if reset is None else reset.passed, "passed": ok,
                   "sim_seconds": res.sim_seconds, "cases": res.cases}
        write_summary(folder, summary)
        (folder / "README.md").write_text(
            f"# verify gemm: {cfg.rows}x{cfg.cols} engine on {res.simulator}\n\n"
            f"bit-exact: **{res.matched}/{res.total}** outputs equal `model.intops` ({kinds}). "
            f"The operands are synthetic: uniform random int8, corner patterns and int32-saturating "
            f"sums on the given shapes; no IntModel weight runs here.\n\n"
            f"The weights stream from external memory during the run ({source}). Over the cases "
            f"without random stream stalls: cycles measured {res.cycles_measured} vs predicted "
            f"{res.cycles_predicted} ({res.cycle_errors} case(s) off); utilization "
            f"{res.utilization:.3f} from start to done (weight stalls included), "
            f"{res.utilization_with_io:.3f} counting the {res.io_cycles} cycles the engine waits, idle, "
            f"for its activation and parameter loads and the unload.\n"
            + ("" if reset is None else
               f"Reset in the middle of a GEMM, then a GEMM: {'passed' if reset.passed else 'FAILED'}.\n")
            + "\nCycles count the edges from the one that samples `start` to the one that raises "
              "`done`; `io` is the load and unload beats around them (`hw/cost/schedule.py`).\n\n"
            + markdown_table(["case", "seed", "bit-exact", "cycles", "predicted", "error", "io",
                              "utilization", "with io"], rows) + "\n")
    return 0 if ok else 1


def run_units(args) -> int:
    names = [n.strip() for n in args.units.split(",") if n.strip()]
    bad = [n for n in names if n not in sim_units.UNITS]
    if bad or not names:
        raise QexitError(f"unknown --units {args.units!r}; choose from {', '.join(sim_units.UNITS)}")
    if args.vectors < 1:
        raise QexitError(f"--vectors {args.vectors} must be at least 1")
    runner.pick(args.simulator)
    print(f"verifying {len(names)} unit(s) on {args.vectors} random rows each, seed {args.seed}", flush=True)
    with report_dir("verify-units") as folder:
        results = []
        for name in names:
            res = sim_units.verify_unit(name, args.vectors, args.seed, simulator=args.simulator,
                                        folder=folder / f"sim-{name}")
            results.append(res)
            print(f"  {name:<10} {res.rows} rows: bit-exact {res.matched}/{res.total} "
                  f"({res.seconds:.0f} s){'' if res.passed else '  FAILED'}", flush=True)
            if not res.passed:
                print(res.log or "(no simulator log)")
        matched, total = sum(r.matched for r in results), sum(r.total for r in results)
        ok = all(r.passed for r in results)
        print(f"bit-exact: {matched}/{total}")
        write_summary(folder, {"matched": matched, "total": total, "mismatches": total - matched,
                               "vectors": args.vectors, "seed": args.seed, "passed": ok,
                               "units": {r.name: r.summary() for r in results}})
        rows = [[r.name, r.rows, f"{r.matched}/{r.total}", r.total - r.matched, f"{r.seconds:.0f}"]
                for r in results]
        (folder / "README.md").write_text(
            f"# verify units: {matched}/{total} outputs bit-exact\n\n"
            "Each unit's RTL (Verilator under cocotb) against `model.intops` computed on the host, on "
            f"random rows with random valid constants (seed {args.seed}), the corner rows, and random "
            "back-pressure on every other case.\n\n"
            + markdown_table(["unit", "rows", "bit-exact", "mismatches", "sim seconds"], rows) + "\n")
    return 0 if ok else 1


def _shipped_intmodel(path: Path):

    if path.exists():
        im = load_intmodel(path)
        im.require_uniform8("qexit verify")
        return im
    model, _ = load_checkpoint()
    return quantize(model, load_fashion_mnist("gate").subset(512).images)


def _test_images(n: int):
    return load_fashion_mnist("test").subset(n).images


def run_model(args) -> int:

    WeightSource(args.bandwidth, args.latency)
    runner.pick(args.simulator)
    im = _shipped_intmodel(args.intmodel)
    test = load_fashion_mnist("test").subset(args.images)
    torch.set_num_threads(1)
    print(f"verifying every operation of the IntModel on {len(test)} test image(s), "
          f"{args.rows}x{args.cols} engine, weights at {args.bandwidth:g} B/cycle after {args.latency}", flush=True)
    with report_dir("verify-model") as folder:
        res = model_ops.verify_model_ops(im, test.images, rows=args.rows, cols=args.cols, bandwidth=args.bandwidth,
                                         latency=args.latency, simulator=args.simulator)
        for kind, v in res.by_op.items():
            print(f"  {kind:<10} bit-exact {v['matched']}/{v['total']}")
        g = res.gemm
        print(f"bit-exact: {res.matched}/{res.total}; GEMM cycles measured {g.cycles_measured}, predicted "
              f"{g.cycles_predicted} ({g.cycle_errors} case(s) off); predictions equal the golden model's: "
              f"{res.predictions_match}")
        write_summary(folder, {"images": res.images, "matched": res.matched, "total": res.total,
                               "mismatches": res.total - res.matched, "predictions_matched": res.predictions_match,
                               "cycles_measured": g.cycles_measured, "cycles_predicted": g.cycles_predicted,
                               "cycle_errors": g.cycle_errors, "rows": args.rows, "cols": args.cols,
                               "bandwidth": args.bandwidth, "latency": args.latency, "passed": res.passed,
                               "by_op": res.by_op, "by_layer": res.by_layer, "units": res.units})
        rows = [[k, v["matched"], v["total"]] for k, v in res.by_op.items()]
        layers = [[k, v["matched"], v["total"]] for k, v in res.by_layer.items()]
        (folder / "README.md").write_text(
            f"# verify model: {res.matched}/{res.total} integers bit-exact on {res.images} test image(s)\n\n"
            "Every operation of the IntModel ran on its RTL block (GEMMs on the "
            f"{args.rows}x{args.cols} engine with the real weights streamed at {args.bandwidth:g} B/cycle "
            f"after {args.latency} cycles; LayerNorm, softmax, GELU and add on their units), fed the golden "
            "model's own inputs, and every output was compared with `model/golden.py`. The host sequenced "
            "the operations; the on-chip layer controller is not built yet.\n\n"
            f"GEMM cycles measured {g.cycles_measured}, predicted {g.cycles_predicted}; predictions equal "
            f"the golden model's: {res.predictions_match}.\n\n"
            + markdown_table(["operation", "matched", "total"], rows) + "\n\n"
            + markdown_table(["layer", "matched", "total"], layers) + "\n")
    return 0 if res.passed else 1


def run_block(args) -> int:


    source = WeightSource(args.bandwidth, args.latency)
    if args.rows != args.cols:
        raise QexitError(f"the layer engine needs a square array (--rows {args.rows} --cols {args.cols}): a GEMM's "
                         f"output words are the next GEMM's input words")
    runner.pick(args.simulator)
    torch.set_num_threads(1)
    if args.random:
        im = layer.random_block_model(args.width, args.heads, args.mlp, args.tokens, args.layers or 1, args.seed)
        g = torch.Generator().manual_seed(args.seed)
        c = im.config
        images = torch.randint(0, 256, (args.images, c.channels, c.image_size, c.image_size), dtype=torch.uint8,
                               generator=g)
        what = f"a random IntModel (width {c.width}, {c.heads} heads, MLP {c.hidden}, {c.tokens} tokens)"
    else:
        im = _shipped_intmodel(args.intmodel)
        images = _test_images(args.images)
        what = "the shipped IntModel"
    layers = args.layers if args.layers else None
    print(f"layer engine {args.rows}x{args.cols}: {what}, {len(images)} image(s), "
          f"{layers or im.config.depth} layer(s){'' if layers else ' and the head'}, weights at "
          f"{args.bandwidth:g} B/cycle after {args.latency}", flush=True)
    with report_dir("verify-block") as folder:
        res = layer.verify_block(im, images, args.rows, layers, source, args.simulator, args.waves,
                                 folder if args.waves else None)
        rows = []
        for name, s in res.by_segment().items():
            util = s["macs"] / (args.rows * args.cols * max(1, s["cycles_measured"]))
            rows.append([name, f"{s['matched']}/{s['total']}", s["cycles_measured"], s["cycles_predicted"],
                         f"{100 * util:.1f}%"])
            print(f"  {name:<6} bit-exact {s['matched']}/{s['total']}  cycles {s['cycles_measured']} "
                  f"(predicted {s['cycles_predicted']})  utilization {100 * util:.1f}%")
        bits = sum(res.onchip.values())
        print(f"bit-exact: {res.matched}/{res.total}; cycles measured {res.cycles_measured}, predicted "
              f"{res.cycles_predicted}; utilization {100 * res.utilization:.2f}%; on-chip {bits:,} bits; "
              f"predictions equal the golden model's: {res.predictions_matched}")
        if res.log:
            print(res.log)
        write_summary(folder, {"images": res.images, "layers": res.layers, "matched": res.matched,
                               "total": res.total, "mismatches": res.total - res.matched,
                               "cycles_measured": res.cycles_measured, "cycles_predicted": res.cycles_predicted,
                               "utilization": res.utilization, "onchip_bits": bits, "onchip": res.onchip,
                               "predictions_matched": res.predictions_matched, "rows": args.rows,
                               "cols": args.cols, "bandwidth": args.bandwidth, "latency": args.latency,
                               "model": what, "simulator": res.simulator, "sim_seconds": res.sim_seconds,
                               "build_seconds": res.build_seconds, "passed": res.passed,
                               "segments": res.by_segment()})
        (folder / "README.md").write_text(
            f"# verify block: {res.matched}/{res.total} integers bit-exact, cycles {res.cycles_measured} "
            f"measured = {res.cycles_predicted} predicted\n\n"
            f"The layer engine ({args.rows}x{args.cols}) ran {what} on {res.images} image(s), one start per "
            f"segment, with the weights streamed at {args.bandwidth:g} B/cycle after {args.latency} cycles. "
            "Every layer's tokens (and the embedding and logits) were compared with `model/golden.py`; every "
            "segment's cycles (start to done) with `hw/program.py`'s cycle model. Utilization is all MACs over "
            "R·C·cycles, every cycle counted (parameter and activation moves, LayerNorm, softmax, GELU, add, "
            "weight stalls); loading the program, streams and image before each start is not counted.\n\n"
            + markdown_table(["segment", "bit-exact", "cycles measured", "cycles predicted", "utilization"], rows)
            + "\n")
    return 0 if res.passed else 1


def run_comparator(args) -> int:

    ep = exit_path.load(args.exit_path)
    runner.pick(args.simulator)
    n = ep.test_scores.shape[0] if args.images is None else min(args.images, ep.test_scores.shape[0])
    print(f"replaying {n} test images through the exit comparator ({len(ep.layers)} candidate layers)", flush=True)
    with report_dir("verify-comparator") as folder:
        res = sim_exit.verify_comparator(ep, n, simulator=args.simulator, folder=folder / "sim")
        print(f"bit-exact: {res.matched}/{res.total} decisions ({res.decisions} fed); images whose exit layer "
              f"and class equal the evaluation's: {res.images_matched}/{res.images} ({res.seconds:.0f} s)")
        if not res.passed:
            print(res.log or "(no simulator log)")
        summary = {**res.summary(), "layers": ep.layers, "threshold_registers": ep.registers,
                   "exit_path": str(args.exit_path)}
        write_summary(folder, summary)
        k = len(ep.layers)
        exits = [int((ep.test_exit[:n] == j).sum()) for j in range(k + 1)]
        rows = [[lay if j < k else f"{ep.depth} (full depth)", "-" if j == k else
                 (ep.registers[j] if ep.registers[j] is not None else "off"), exits[j]]
                for j, lay in enumerate(ep.layers + [ep.depth])]
        (folder / "README.md").write_text(
            f"# verify comparator: {res.matched}/{res.total} decisions bit-exact\n\n"
            f"The exit comparator's RTL (`hw/rtl/comparator.py`, {runner.pick(args.simulator)} under cocotb) on the "
            f"fixed-point head's class scores and gates for the first {n} test images, as `qexit exits` "
            f"evaluated them: per image, the candidate layers in order until the comparator exits "
            f"({res.decisions} decisions, {res.decisions * ep.test_scores.shape[2]} score beats). Every decision "
            f"(exit bit, class, layer) equals `model/exits/decision.py`; {res.images_matched}/{n} images leave "
            f"at the layer and with the class the evaluation counted.\n\n"
            + markdown_table(["exit layer", "threshold register", "images"], rows) + "\n")
    return 0 if res.passed else 1


def run_head(args) -> int:

    ep = exit_path.load(args.exit_path)
    runner.pick(args.simulator)
    if args.layers is None:
        chosen = [len(ep.layers) // 2]
    elif args.layers.strip().lower() == "all":
        chosen = list(range(len(ep.layers)))
    else:
        try:
            wanted = [int(x) for x in args.layers.split(",") if x.strip()]
        except ValueError:
            raise QexitError(f"--layers {args.layers!r} must be 'all' or layer numbers like 2,6") from None
        bad = [x for x in wanted if x not in ep.layers]
        if bad or not wanted:
            raise QexitError(f"--layers {args.layers}: {bad or 'none'} not among the exit layers {ep.layers}")
        chosen = [ep.layers.index(x) for x in dict.fromkeys(wanted)]
    if ep.head.width % args.lanes:
        raise QexitError(f"--lanes {args.lanes} must divide the head's width {ep.head.width}")
    n, tokens = sim_exit.test_tokens(ep, args.intmodel, args.sets, len(chosen))
    print(f"the exit head as RTL: {len(chosen)} layer(s) x {n} test images = {n * len(chosen)} token sets",
          flush=True)
    with report_dir("verify-head") as folder:
        checks = sim_exit.verify_head(ep, tokens, chosen, args.lanes, args.simulator, folder / "sim",
                                      progress=not args.quiet, macs=head_macs(args, 64))
        matched, total = sum(c.matched for c in checks), sum(c.total for c in checks)
        ok = matched == total and all(c.cycles_equal for c in checks)
        for c in checks:
            print(f"  layer {c.layer:2d}: {c.sets} token sets, {c.matched}/{c.total} outputs bit-exact; "
                  f"cycles {c.cycles_predicted} predicted, measured {sorted(set(c.cycles_measured))} "
                  f"(da4ml {c.dense_seconds:.0f} s, build {c.build_seconds:.0f} s, sim {c.sim_seconds:.0f} s)")
            if not (c.matched == c.total and c.cycles_equal):
                print(c.log or "(no simulator log)")
        print(f"bit-exact: {matched}/{total} ({n * len(chosen)} token sets)")
        latency = max(c.cycles_predicted for c in checks)
        summary = {"matched": matched, "total": total, "mismatches": total - matched, "passed": ok,
                   "token_sets": n * len(chosen), "images": n, "latency_cycles": latency, "lanes": args.lanes,
                   "layers": [c.summary() for c in checks], "exit_path": str(args.exit_path),
                   "intmodel": str(args.intmodel)}
        write_summary(folder, summary)
        rows = [[c.layer, c.sets, f"{c.matched}/{c.total}", c.cycles_predicted,
                 ", ".join(map(str, sorted(set(c.cycles_measured)))), f"{c.dense_seconds:.0f}",
                 f"{c.build_seconds:.0f}", f"{c.sim_seconds:.0f}"] for c in checks]
        (folder / "README.md").write_text(
            f"# verify head: {matched}/{total} outputs bit-exact\n\n"
            f"The exit head as RTL (`hw/rtl/head.py`: the three dense layers "
            f"{'as da4ml constant-matrix adder graphs' if args.head == 'da4ml' else f'on {head_macs(args, 64)} int8 multipliers, weights in a ROM'}, "
            f"Amaranth for the rest) under cocotb ({runner.pick(args.simulator)}), on the golden "
            f"model's int8 tokens of the first {n} test images at each layer, {args.lanes} values per beat. "
            f"Each output (the class scores, then the gate, as the comparator takes them) is compared with "
            f"`model/exits/fixed.py` on the same tokens; the cycles of every other image (no stalls; the "
            f"others run with random back-pressure) with `head_cycles`.\n\n"
            + markdown_table(["layer", "token sets", "bit-exact", "cycles predicted", "cycles measured",
                              "da4ml s", "build s", "sim s"], rows)
            + "\n\n## The phases\n\n" + next(b for b in hw_head.__doc__.split("\n\n") if b.startswith("| phase"))
            + "\n")
    return 0 if ok else 1


def run_run(args) -> int:


    source = WeightSource(args.bandwidth, args.latency)
    if args.rows != args.cols:
        raise QexitError(f"the layer engine needs a square array (--rows {args.rows} --cols {args.cols})")
    dist.check_workers(args.workers)
    runner.pick(args.simulator)
    ep = exit_path.load(args.exit_path)
    layers = None
    if args.layers:
        layers = tuple(_layer_list(args.layers, ep))
        ep = sim_run.only(ep, list(layers))
    n_test = len(load_fashion_mnist("test"))
    n = min(args.images, n_test)
    idx = (torch.arange(n) if args.seed < 0 else
           torch.randperm(n_test, generator=torch.Generator().manual_seed(args.seed))[:n])
    macs = head_macs(args, args.rows * args.cols)
    spec = dist.RunSpec(str(args.intmodel), str(args.exit_path), args.rows, source.bandwidth, source.latency, macs,
                        layers, args.simulator)
    torch.set_num_threads(1)
    print(f"early-exit run: {n} test image(s), {args.rows}x{args.cols}, weights at {args.bandwidth:g} B/cycle "
          f"after {args.latency}; heads at layers {[ep.layers[k] for k in sim_run.enabled(ep)]}; shards of "
          f"{args.shard_size} on {args.cluster or f'{args.workers} worker(s)'}", flush=True)
    res = dist.run(spec, idx.tolist(), args.shard_size, args.workers, args.cluster, args.work, args.resume,
                   not args.quiet)
    with report_dir("verify-run") as folder:
        s = {**res, "seed": args.seed, "rows": args.rows, "cols": args.cols, "bandwidth": args.bandwidth,
             "latency": args.latency, "head": args.head, "head_macs": macs, "shard_size": args.shard_size,
             "exit_path": str(args.exit_path), "intmodel": str(args.intmodel)}
        rows = [[i, lay, exp, cls, ecls, m, p] for i, lay, exp, cls, ecls, m, p in zip(
            res["test_indices"], res["exit_layers"], res["expected_layers"], res["classes"], res["expected_classes"],
            res["cycles_per_image_measured"], res["cycles_per_image_predicted"])]
        t = res["timing"]
        print(f"images matched: {res['matched']}/{res['images']}; decisions bit-exact: {res['decisions_matched']}/"
              f"{res['decisions']}; cycles measured {res['cycles_measured']:,}, predicted {res['cycles_predicted']:,}"
              f" ({'equal' if res['cycles_equal'] else 'DIFFERENT'} image by image); {t['images_computed']} image(s) "
              f"computed in {t['wall_s']:.0f} s")
        for log in res["logs"]:
            print(log)
        write_summary(folder, s)
        (folder / "README.md").write_text(
            f"# verify run: {res['matched']}/{res['images']} images, {res['decisions_matched']}/{res['decisions']} "
            f"decisions, cycles {res['cycles_measured']:,} measured = {res['cycles_predicted']:,} predicted\n\n"
            + _block_doc("run").replace("\n", " ") + "\n\n"
            + f"This run: {args.rows}x{args.cols}, weights at {args.bandwidth:g} B/cycle after {args.latency} cycles; "
            + (f"one MAC exit head with {macs} multipliers for every candidate" if macs else "one da4ml head per candidate")
            + f"; candidates on: {[ep.layers[k] for k in sim_run.enabled(ep)]}; {runner.pick(args.simulator)}; "
            + f"shards of {args.shard_size} on {t['workers']} worker(s): {t['images_computed']} image(s) computed in "
            + f"{t['wall_s']:.0f} s ({t['shards_resumed']} shard(s) resumed).\n\n"
            + markdown_table(["test image", "exit layer", "expected", "class", "expected", "cycles measured",
                              "cycles predicted"], rows) + "\n")
    return 0 if res["passed"] else 1


def _layer_list(text: str, ep) -> list[int]:
    try:
        layers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise QexitError(f"--layers {text!r} must be comma-separated backbone layers like 2,6") from None
    bad = [k for k in layers if k not in ep.layers]
    if bad or not layers:
        raise QexitError(f"--layers {text}: the exit path has candidate layers {ep.layers}")
    return layers
