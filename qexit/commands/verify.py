"""Verify hardware blocks bit-exact against the integer golden model (model/intops.py) under cocotb.

`qexit verify gemm --rows R --cols C --shapes MxKxN,... --seed S` builds the GEMM engine
(Verilator by default, Icarus as the fallback; builds are cached), runs every shape with
random int8 operands, then the corner operands (all -128, all 127, -128 x 127, alternating,
zero, and sums that saturate int32) on the first shape, with random valid/ready
back-pressure on every other case, and finally a reset in the middle of a GEMM followed by a
correct GEMM. Every output is compared with model.intops and every cycle count (start to
done) with the schedule of hw/schedule.py. Prints `bit-exact: <matched>/<total>` and the
measured vs predicted cycles per shape; exits 1 on any mismatch or cycle error.

`qexit verify units --vectors N --seed S` runs the streaming units beside the array
(requantizer, residual add, i-GELU, LayerNorm, softmax) on N random rows each, with random
valid constants, the corner rows (constant rows, zero variance, -128/127 extremes, attention
rows across the full int32 range) and random back-pressure on every other case, and compares
every output integer with model.intops; exits 1 on any mismatch.

`qexit verify model --images K` runs every operation of the shipped IntModel on K test images
through the RTL: each GEMM (patch embedding, QKV, attention per head, projection, FC1, FC2,
head, logits) on the engine with its real weights streamed, and each LayerNorm, softmax,
GELU and residual add on its unit, fed the golden model's own inputs; every output integer,
and the predictions, must equal model/golden.py's. The host sequences the operations (the
on-chip layer controller is not built yet).
"""
from __future__ import annotations

import argparse

from hw import gemm, schedule
from qexit.commands.rtl import add_buffer_args
from qexit.reports import markdown_table, report_dir, write_summary
from pathlib import Path

from model.errors import QexitError
from qexit.commands.common import INTMODEL_DEFAULT, positive
from sim import model_ops, runner, verify
from sim import units as sim_units

HELP = ("bit-exact RTL checks under cocotb against model.intops: `verify gemm` (the GEMM engine), "
        "`verify units` (requantizer, add, GELU, LayerNorm, softmax)")


def _block_doc(command: str) -> str:
    """The module docstring's paragraph about ``qexit verify <command>``."""
    return next(par for par in __doc__.split("\n\n") if par.startswith(f"`qexit verify {command}"))


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
    mo.add_argument("--rows", type=positive, default=8, help="array rows R")
    mo.add_argument("--cols", type=positive, default=8, help="array columns C")
    mo.add_argument("--bandwidth", type=float, default=4.0, help="weight stream bandwidth, bytes/cycle")
    mo.add_argument("--latency", type=int, default=20, help="weight stream first-word latency, cycles")
    mo.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                    help="default: Verilator if installed, else Icarus")
    mo.set_defaults(_block=run_model)

    u = sub.add_parser("units", help="the streaming units: requantizer, add, GELU, LayerNorm, softmax",
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
              "`done`; `io` is the load and unload beats around them (`hw/schedule.py`).\n\n"
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


def run_model(args) -> int:
    import torch

    from model.checkpoint import load_checkpoint
    from model.data import load_fashion_mnist
    from model.quantize import load_intmodel, quantize

    from hw.schedule import WeightSource
    WeightSource(args.bandwidth, args.latency)
    runner.pick(args.simulator)
    if args.intmodel.exists():
        im = load_intmodel(args.intmodel)
    else:
        model, _ = load_checkpoint()
        im = quantize(model, load_fashion_mnist("gate").subset(512).images)
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
