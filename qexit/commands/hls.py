"""Build the exit head with hls4ml and check its C simulation bit-exact.

For every candidate layer of the exit path that `qexit exits` wrote (int8 mode), converts
the fixed-point head and gate (hw/tools/hls.py: hls4ml's PyTorch frontend, Vitis backend,
io_parallel) into an HLS project, compiles its C simulation with g++ and runs it on the golden
model's real int8 tokens of the first test images at that layer. Every output (the class
scores and the gate's pre-activation) must equal model/exits/fixed.py computed on the host from
the same tokens. The projects stay in reports/hls/layerNN/ with hls4ml's build_prj.tcl, for a
Vitis HLS user to synthesize. Writes reports/hls/summary.json (matched, total, mismatches,
layers) and a README with the per-layer table and the precision of every stage; exits 1 on any
mismatch.
"""
from __future__ import annotations

import time
from pathlib import Path

import hls4ml

from hw.tools import hls as head_hls
from model.exits import exit_path
from qexit.commands.common import add_exit_path_args, positive, report_path
from qexit.render import hls as render
from qexit.reports import REPORTS_DIR, report_dir, write_summary
from sim import head as sim_head

HELP = "the exit head through hls4ml: HLS projects, C simulation bit-exact against the fixed-point head"


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--sets", type=positive, default=5000,
                   help="token sets in all (one image at one candidate layer is one set), spread evenly "
                        "over the candidate layers")
    p.add_argument("--out", type=Path, default=REPORTS_DIR, help="reports root; writes <out>/hls/")
    p.add_argument("--jobs", type=positive, default=None, help="g++ builds at a time (default: one per CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    t0 = time.time()
    ep = exit_path.load(args.exit_path)
    head_hls.check_gxx()
    n, tokens = sim_head.test_tokens(ep, args.intmodel, args.sets, len(ep.layers))
    print(f"hls4ml {hls4ml.__version__}: {len(ep.layers)} candidate layers x {n} test images = "
          f"{n * len(ep.layers)} token sets", flush=True)
    with report_dir("hls", args.out) as folder:
        t1 = time.time()
        checks = sim_head.verify_hls(ep, tokens, folder, progress=not args.quiet, jobs=args.jobs)
        build_wall = time.time() - t1
        matched, total = sum(c.matched for c in checks), sum(c.total for c in checks)
        same = sum(c.evaluation_matched for c in checks)
        ok = matched == total
        for c in checks:
            print(f"  layer {c.layer:2d}: {c.sets} token sets, {c.matched}/{c.total} outputs bit-exact  (compile {c.compile_seconds:.1f} s, "
                  f"C-sim {c.csim_seconds:.2f} s)")
        print(f"bit-exact: {matched}/{total} ({n * len(ep.layers)} token sets)")
        print(f"the reference on these tokens equals the head outputs `qexit exits` evaluated for {same}/"
              f"{n * len(ep.layers)} sets" + ("" if same == n * len(ep.layers) else
                                             " (was the exit path made on another IntModel?)"))
        summary = {"matched": matched, "total": total, "mismatches": total - matched, "passed": ok,
                   "token_sets": n * len(ep.layers), "images": n, "sets_equal_to_evaluation": same, "layers": [c.summary() for c in checks],
                   "hls4ml": hls4ml.__version__, "backend": head_hls.BACKEND, "io_type": "io_parallel",
                   "compile_seconds": round(sum(c.compile_seconds for c in checks), 1),
                   "convert_compile_csim_wall_seconds": round(build_wall, 1),
                   "csim_seconds": round(sum(c.csim_seconds for c in checks), 2),
                   "seconds_total": round(time.time() - t0, 1), "exit_path": str(args.exit_path),
                   "intmodel": report_path(args.intmodel)}
        write_summary(folder, summary)
        (folder / "README.md").write_text(render.readme(summary, checks))
    return 0 if ok else 1
