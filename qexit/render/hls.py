"""The hls step's README.md, from the command's summary and the per-layer checks
(``sim.head.verify_hls``); the datapath's precisions are ``hw.tools.hls``'s docstring table."""
from __future__ import annotations

from hw.tools import hls as head_hls
from qexit.render.markdown import markdown_table


def readme(s: dict, checks) -> str:
    rows = [[c.layer, c.sets, f"{c.matched}/{c.total}", c.total - c.matched, f"{c.compile_seconds:.1f}",
             f"{c.csim_seconds:.2f}"] for c in checks]
    datapath = head_hls.__doc__.split("\n\n")
    return (f"# hls4ml exit head: {s['matched']}/{s['total']} outputs bit-exact\n\n"
            f"hls4ml {s['hls4ml']}, {s['backend']} backend, {s['io_type']}. One project per candidate layer "
            f"(`layerNN/`, with hls4ml's `build_prj.tcl`), compiled with g++ and run (`predict()`, the C "
            f"simulation) on the golden model's int8 tokens of the first {s['images']} test images at that layer: "
            f"{s['token_sets']} token sets. Each output (the class scores, then the gate's pre-activation) is "
            f"compared with `model/exits/fixed.py` computed on the host from the same tokens.\n\n"
            + markdown_table(["layer", "token sets", "outputs bit-exact", "mismatches", "compile s", "C-sim s"], rows)
            + f"\n\nCompile {s['compile_seconds']} s (g++, summed over the projects, built in parallel) and C "
              f"simulation {s['csim_seconds']} s in all; conversion, builds and C simulation took "
              f"{s['convert_compile_csim_wall_seconds']} s of wall time, {s['seconds_total']} s with the golden "
              f"model's tokens.\n\n## The datapath and its precisions\n\n"
            + datapath[1] + "\n\n" + datapath[2] + "\n")
