"""`qexit verify units --vectors N --seed S` runs the streaming units beside the array, 4 lanes
wide (requantizer, residual add, i-GELU, LayerNorm, softmax), on N random rows each, with
random valid constants, the corner rows (constant rows, zero variance, -128/127 extremes,
attention rows across the full int32 range) and random back-pressure on every other case, and
compares every output integer with model.intops; and the exit comparator on N random
decisions (ties, gates at their thresholds, pruned layers) against model/exits/decision.py.
Exits 1 on any mismatch.
"""
from __future__ import annotations

from model.errors import QexitError
from qexit.commands.verify.shared import add_simulator, write_report
from qexit.reports import report_dir
from sim import simulator as runner, units as sim_units

HELP = "the streaming units: requantizer, add, GELU, LayerNorm, softmax, exit comparator"


def add_arguments(p):
    p.add_argument("--vectors", type=int, default=10_000,
                   help="random rows per unit (a beat of 4 lanes for the element-wise units, a token "
                        "row for LayerNorm, an attention row for softmax)")
    p.add_argument("--seed", type=int, default=0, help="seed of the constants and rows")
    p.add_argument("--units", default=",".join(sim_units.UNITS),
                   help=f"comma-separated units from {', '.join(sim_units.UNITS)}")
    add_simulator(p)


def run(args) -> int:
    names = [n.strip() for n in args.units.split(",") if n.strip()]
    bad = [n for n in names if n not in sim_units.UNITS]
    if bad or not names:
        raise QexitError(f"unknown --units {args.units!r}; choose from {', '.join(sim_units.UNITS)}")
    if args.vectors < 1:
        raise QexitError(f"--vectors {args.vectors} must be at least 1")
    simulator = runner.pick(args.simulator)
    print(f"verifying {len(names)} unit(s) on {args.vectors} random rows each, seed {args.seed}", flush=True)
    with report_dir("verify-units") as folder:
        results = []
        for name in names:
            res = sim_units.verify_unit(name, args.vectors, args.seed, simulator=args.simulator,
                                        folder=folder / f"sim-{name}")
            results.append(res)
            print(f"  {name:<10} {res.rows} rows: bit-exact {res.matched}/{res.total} "
                  f"({res.sim_seconds:.0f} s){'' if res.passed else '  FAILED'}", flush=True)
            if not res.passed:
                print(res.log or "(no simulator log)")
        matched, total = sum(r.matched for r in results), sum(r.total for r in results)
        ok = all(r.passed for r in results)
        print(f"bit-exact: {matched}/{total}")
        summary = {"matched": matched, "total": total, "mismatches": total - matched, "vectors": args.vectors,
                   "seed": args.seed, "passed": ok, "units": {r.unit: r.summary() for r in results}}
        rows = [[r.unit, r.rows, f"{r.matched}/{r.total}", r.mismatches, f"{r.sim_seconds:.0f}"] for r in results]
        write_report(folder, summary, f"units: {matched}/{total} outputs bit-exact", [
            f"Each unit's RTL ({simulator} under cocotb) against `model.intops` computed on the host, on random "
            f"rows with random valid constants (seed {args.seed}), the corner rows, and random back-pressure on "
            f"every other case."],
            [(["unit", "rows", "bit-exact", "mismatches", "sim seconds"], rows)])
    return 0 if ok else 1
