"""`qexit verify head --layers L1,L2 --sets N` builds the exit head of each chosen candidate
layer (by default the middle one; `all` for every one) as RTL (hw/rtl/head.py: its three dense
layers on --head-macs int8 multipliers with the weights in a ROM (--head mac, the default), or
as da4ml constant-matrix adder graphs in Verilog (--head da4ml, cached under .cache/qexit/da4ml);
the token sums, the requantizers, the LayerNorm, the norm, the reciprocal, the 15-bit softmax
and the gate in Amaranth) and runs it under cocotb on the golden model's tokens of the first
test images at that layer, N token sets in all. Every output beat (a class score, the gate,
the layer tag, as the comparator takes them) must equal model/exits/fixed.py on the same
tokens; the figures count each image's distinct integers, its class scores and one gate. Every
image without random back-pressure (every other one) must take the head's cycle count
(hw/rtl/head.py head_cycles) from its first token to its last output; each image's cycles are
kept. Writes reports/verify-head/summary.json (matched, total, latency_cycles); exits 1 on
any mismatch or cycle error.
"""
from __future__ import annotations

from hw.rtl import head as hw_head
from model.errors import QexitError
from model.exits import exit_path
from qexit.commands.common import add_exit_path_args, add_head_args, head_macs, positive, report_path
from qexit.commands.verify.shared import add_simulator, exit_layers, write_report
from qexit.reports import report_dir
from sim import head as sim_head, simulator as runner

HELP = "the exit head as RTL (Amaranth, dense layers on MACs or da4ml) on real tokens"


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--layers", default=None,
                   help="candidate layers to build and run (1-based, e.g. 2,6), or 'all' (default: the middle "
                        "candidate layer; a full-size head takes about 10 minutes to build in Verilator)")
    p.add_argument("--sets", type=positive, default=2000,
                   help="token sets in all (one image at one layer), spread evenly over the layers")
    p.add_argument("--lanes", type=positive, default=8, help="int8 token values per input beat")
    add_head_args(p, "64, an 8x8 array's")
    add_simulator(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def chosen_layers(text: str | None, ep) -> list[int]:
    """--layers as candidate indices: the middle candidate by default, 'all', or layer numbers."""
    if text is None:
        return [len(ep.layers) // 2]
    if text.strip().lower() == "all":
        return list(range(len(ep.layers)))
    return [ep.layers.index(x) for x in dict.fromkeys(exit_layers(text, ep))]


def run(args) -> int:
    ep = exit_path.load(args.exit_path)
    simulator = runner.pick(args.simulator)
    chosen = chosen_layers(args.layers, ep)
    if ep.head.width % args.lanes:
        raise QexitError(f"--lanes {args.lanes} must divide the head's width {ep.head.width}")
    n, tokens = sim_head.test_tokens(ep, args.intmodel, args.sets, len(chosen))
    print(f"the exit head as RTL: {len(chosen)} layer(s) x {n} test images = {n * len(chosen)} token sets",
          flush=True)
    macs = head_macs(args, 64)
    with report_dir("verify-head") as folder:
        checks = sim_head.verify_head(ep, tokens, chosen, args.lanes, args.simulator, folder / "sim",
                                      progress=not args.quiet, macs=macs)
        matched, total = sum(c.matched for c in checks), sum(c.total for c in checks)
        ok = all(c.passed for c in checks)

        def measured(c) -> str:
            return ", ".join(map(str, sorted({r["cycles"] for r in c.records if not r["stalled"]})))

        for c in checks:
            print(f"  layer {c.layer:2d}: {c.sets} token sets, {c.matched}/{c.total} integers bit-exact; "
                  f"cycles {c.latency_cycles} predicted, measured {measured(c)} without back-pressure "
                  f"(da4ml {c.dense_seconds:.0f} s, build {c.build_seconds:.0f} s, sim {c.sim_seconds:.0f} s)")
            if not c.passed:
                print(c.log or "(no simulator log)")
        print(f"bit-exact: {matched}/{total} ({n * len(chosen)} token sets)")
        summary = {"matched": matched, "total": total, "mismatches": total - matched, "passed": ok,
                   "token_sets": n * len(chosen), "images": n, "latency_cycles": max(c.latency_cycles for c in checks),
                   "lanes": args.lanes, "layers": [{**c.summary(), "per_image": c.records} for c in checks],
                   "exit_path": str(args.exit_path), "intmodel": report_path(args.intmodel)}
        rows = [[c.layer, c.sets, f"{c.matched}/{c.total}", c.latency_cycles, measured(c), f"{c.dense_seconds:.0f}",
                 f"{c.build_seconds:.0f}", f"{c.sim_seconds:.0f}"] for c in checks]
        dense = ("as da4ml constant-matrix adder graphs" if args.head == "da4ml"
                 else f"on {macs} int8 multipliers, weights in a ROM")
        write_report(folder, summary, f"head: {matched}/{total} integers bit-exact", [
            f"The exit head as RTL (`hw/rtl/head.py`: the three dense layers {dense}, Amaranth for the rest) "
            f"under cocotb ({simulator}), on the golden model's int8 tokens of the first {n} test images at each "
            f"layer, {args.lanes} values per beat. Each output beat (a class score, the gate, the layer tag, as "
            f"the comparator takes them) is compared with `model/exits/fixed.py` on the same tokens; the counts "
            f"are each image's distinct integers, its class scores and its gate. The cycles of every other image "
            f"(no stalls; the others run with random back-pressure) are compared with `head_cycles`; summary.json "
            f"keeps every image's."],
            [(["layer", "token sets", "bit-exact", "cycles predicted", "cycles measured", "da4ml s", "build s",
               "sim s"], rows)],
            tail="## The phases\n\n" + next(b for b in hw_head.__doc__.split("\n\n") if b.startswith("| phase")))
    return 0 if ok else 1
