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


def accelerator_readme(top: str, lanes: int, regmap: dict, img, layout, exits: bool, summary: dict) -> str:
    """The accelerator's README: its ports, registers, error codes, what it stores on chip and a
    memory image's layout."""
    blocks = sorted(set(summary["by_block"]["memory"]) | set(summary["by_block"]["registers"]))
    store = [[b or "(top: sequencer)", f"{summary['by_block']['memory'].get(b, 0):,}",
              f"{summary['by_block']['registers'].get(b, 0):,}"] for b in blocks]
    regs = [[name, f"0x{off:02X}", "rw" if name in regmap["writable"] else "r"] for name, off in regmap["registers"].items()]
    errs = [[name, code] for name, code in regmap["errors"].items()]
    regions = [[name, f"0x{base:08X}", len(words), len(words) * img.word_bytes]
               for name, (base, words) in img.regions.items() if name != "results"]
    regions.append(["results", f"0x{layout.results:08X}", "-", f"{regmap['record']['bytes']} a record"])
    m = regmap["memory"]
    return (f"# The qexit accelerator, {lanes}x{lanes}\n\n"
            f"`{top}.v`, top module `{top}`: the layer engine, "
            + ("the exit head and " if exits else "") + "the exit comparator, sequenced in RTL "
            "(`hw/rtl/accelerator.py`). One `start` runs `IMAGES` images; nothing is needed from the host "
            "until `STATUS.done` (or `irq`).\n\n"
            f"- `mem_*`: AXI4 read port, {m['data_bits']}-bit data, {m['addr_bits']}-bit byte addresses, INCR bursts "
            f"of at most {m['max_burst']} beats, up to {m['max_outstanding']} in flight; a read that gets no beat "
            f"for {m['watchdog_cycles']} cycles stops the run (`WATCHDOG`).\n"
            "- `res_*`: AXI4 write port: one result record per image.\n"
            "- `csr_*`: Wishbone classic, 32-bit registers (`registers.json`, `qexit_accelerator.h`).\n\n"
            f"## On chip\n\n{summary['verilog_lines']:,} Verilog lines. Every bit stored on chip, from the "
            f"elaborated netlist (`hw.rtl.emit.storage_bits`): {summary['onchip_bits']:,} "
            f"({summary['onchip_bits'] / 2 ** 20:.2f} Mbit); no weight is stored, weights and the head's "
            "blocks stream through `mem_*`.\n\n"
            + markdown_table(["block", "memory bits", "register bits"], store) + "\n\n"
            "## Registers\n\n" + markdown_table(["register", "byte offset", "access"], regs) + "\n\n"
            "## Error codes (`ERROR`)\n\n" + markdown_table(["error", "code"], errs) + "\n\n"
            "## Memory image\n\n"
            "`qexit rtl image` writes one (`sim/image.py`). Every region starts on a 4 KB boundary; this "
            "is the layout for one image:\n\n"
            + markdown_table(["region", "address", "words", "bytes"], regions) + "\n\n"
            f"Result record ({regmap['record']['bytes']} bytes): cycles in bits 0..31 (from the image's start to "
            "its result's write), class 32..47, exit layer 48..55, candidate 56..63 "
            f"({regmap['table']['no_candidate']}: full depth). The run table, the thresholds and the "
            "program regions are described in `hw/rtl/accelerator.py`.\n")
