"""The rtl step's README.md (reports/rtl-gemm/), from the command's summary."""
from __future__ import annotations

from qexit.render.markdown import markdown_table


def gemm_readme(s: dict) -> str:
    rows = [[k, b["words"], b["bits_per_word"], b["words"] * b["bits_per_word"] // 8192] for k, b in s["buffers"].items()]
    return (f"# RTL: INT8 GEMM engine {s['rows']}x{s['cols']}\n\n"
            f"`{s['verilog']}`, top module `{s['top']}` ({s['verilog_lines']} lines): "
            f"{s['macs_per_cycle']} int8 MACs, buffers for up to "
            f"{s['max_m']}x{s['max_k']}x{s['max_n']} (MxKxN).\n\n"
            + markdown_table(["buffer", "words", "bits/word", "KiB"], rows) + "\n\n"
            "Dataflow, schedule and host protocol: see `hw/cost/schedule.py` and `hw/rtl/gemm.py`.\n")
