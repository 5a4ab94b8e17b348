"""`qexit verify gemm --rows R --cols C --shapes MxKxN,... --seed S` builds the GEMM engine
(Verilator by default, Icarus as the fallback; builds are cached), runs every shape with
random int8 operands, then the corner operands (all -128, all 127, -128 x 127, alternating,
zero, and sums that saturate int32) on the first shape, with random valid/ready
back-pressure on every other case, and finally a reset in the middle of a GEMM followed by a
correct GEMM. Every output is compared with model.intops and every cycle count (start to
done) with the schedule of hw/cost/schedule.py. Prints `bit-exact: <matched>/<total>` and the
measured vs predicted cycles per shape; exits 1 on any mismatch or cycle error.
"""
from __future__ import annotations

from hw.cost import schedule
from hw.rtl import gemm
from qexit.commands.rtl import add_buffer_args
from qexit.commands.verify.shared import add_machine, add_simulator, machine, stream_text, write_report
from qexit.reports import report_dir
from sim import gemm as verify

HELP = "the systolic INT8 GEMM engine"


def add_arguments(p):
    add_machine(p, rows=4, bandwidth=None, latency=0)
    p.add_argument("--shapes", default="50x17x13,16x40x9",
                   help="comma-separated MxKxN shapes, e.g. 50x768x768,50x17x13")
    p.add_argument("--random-shapes", type=int, default=0, metavar="N",
                   help="also N random shapes up to 64x96x48 (mostly not multiples of R or C)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random shapes and operands (shape i uses seed+i)")
    add_simulator(p)
    p.add_argument("--waves", action="store_true", help="record a VCD of the run")
    p.add_argument("--int32", action="store_true",
                   help="check the int32 output path (sat32(A W^T + bias) on raw_out, as attention "
                        "scores need) instead of the requantized int8 one")
    p.add_argument("--token-bias", action="store_true",
                   help="a bias per token and channel (M, N) from the tbias buffer, as the patch "
                        "embedding's position embedding needs, instead of one per channel")
    p.add_argument("--no-extras", action="store_true",
                   help="only the random shapes: no corner operands, back-pressure or reset test")
    add_buffer_args(p)


def run(args) -> int:
    shapes = verify.parse_shapes(args.shapes) + verify.random_shapes(args.random_shapes, args.seed)
    m = machine(args)
    cfg = gemm.GemmConfig(m.rows, m.cols, max_m=args.max_m, max_k=args.max_k, max_n=args.max_n,
                          max_raw_n=args.max_raw_n, max_bias_n=args.max_bias_n)
    for shape in shapes:
        cfg.check_shape(*shape, raw=args.int32, token_bias=args.token_bias)
    extras = not args.no_extras
    print(f"verifying the {cfg.rows}x{cfg.cols} GEMM engine on {len(shapes)} shape(s), seed {args.seed}",
          flush=True)
    with report_dir("verify-gemm") as folder:
        res = verify.verify_gemm(m, shapes, args.seed, corners=extras, backpressure=extras, max_m=cfg.max_m,
                                 max_k=cfg.max_k, max_n=cfg.max_n, raw=args.int32, max_raw_n=cfg.max_raw_n,
                                 token_bias=args.token_bias, max_bias_n=cfg.max_bias_n, simulator=args.simulator,
                                 waves=args.waves, folder=folder / "sim")
        reset = None
        if extras:
            reset = verify.verify_reset(cfg, shapes[0], args.seed, simulator=args.simulator,
                                        folder=folder / "sim-reset")
        rows = []
        for c in res.records:
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
        kinds = ", ".join(f"{v} {k}" for k, v in res.outputs_by_kind.items())
        print(f"bit-exact: {res.matched}/{res.total} ({kinds}; synthetic operands)")
        stream = stream_text(m)
        print(f"cycles (weights streamed {stream}; cases without random stalls): measured "
              f"{res.cycles_measured}, predicted {res.cycles_predicted}, {res.cycle_errors} case(s) with an error")
        if reset is not None:
            print(f"reset mid-GEMM, then a GEMM: {'passed' if reset.passed else 'FAILED'}")
        ok = res.passed and (reset is None or reset.passed)
        if not ok:
            print((res.log or (reset.log if reset else "")) or "(no simulator log)")
        summary = {**res.summary(), "seed": args.seed, "shapes": [f"{a}x{b}x{c}" for a, b, c in shapes],
                   "reset_mid_gemm": None if reset is None else reset.passed, "passed": ok, "cases": res.records}
        write_report(folder, summary, f"gemm: {cfg.rows}x{cfg.cols} engine on {res.simulator}", [
            f"bit-exact: **{res.matched}/{res.total}** outputs equal `model.intops` ({kinds}). The operands are "
            f"synthetic: uniform random int8, corner patterns and int32-saturating sums on the given shapes; no "
            f"IntModel weight runs here.",
            f"The weights stream from external memory during the run, {stream}. Over the cases without random "
            f"stream stalls: cycles measured {res.cycles_measured} vs predicted {res.cycles_predicted} "
            f"({res.cycle_errors} case(s) off); utilization {res.utilization:.3f} from start to done (weight "
            f"stalls included), {res.utilization_with_io:.3f} counting the {res.io_cycles} cycles the engine "
            f"waits, idle, for its activation and parameter loads and the unload."
            + ("" if reset is None else
               f" Reset in the middle of a GEMM, then a GEMM: {'passed' if reset.passed else 'FAILED'}."),
            "Cycles count the edges from the one that samples `start` to the one that raises `done`; `io` is the "
            "load and unload beats around them (`hw/cost/schedule.py`)."],
            [(["case", "seed", "bit-exact", "cycles", "predicted", "error", "io", "utilization", "with io"], rows)])
    return 0 if ok else 1
