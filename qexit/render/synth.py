"""The synth step's README.md, from the summary the command writes."""
from __future__ import annotations

from hw.tools.synth import accelerator_blocks
from qexit.render.markdown import markdown_table


def _fmax(d: dict) -> str:
    return f"{d['fmax_mhz']}" if d.get("fmax_mhz") else "-"


def readme(s: dict) -> str:
    table = [[d["design"], d["top"], f"{d['luts']:,}", f"{d['ffs']:,}", d["dsps"], d["brams"], _fmax(d),
              "yes" if d["fits"] else f"no: {d['error']}",
              f"{d['yosys_seconds'] + d['nextpnr_seconds']:.0f}"] for d in s["designs"]]
    av = next((d["available"] for d in s["designs"] if d.get("available")), {})
    head = (f"# Synthesis on an ECP5 {s['device']}\n\n"
            f"yosys `synth_ecp5` and nextpnr-ecp5 (YoWASP builds), speed grade {s.get('speed_grade', 6)}, target "
            f"{s['target_mhz']} MHz, out of context (no IO buffers; the figures leave the IO out). The device has "
            f"{av.get('luts', 0):,} LUT4, {av.get('ffs', 0):,} FF, {av.get('dsps', 0)} MULT18X18D and "
            f"{av.get('brams', 0)} DP16KD.\n\n")
    if s.get("rows"):
        head += (f"**The largest accelerator that fits: {s['rows']}x{s['cols']}**, {s['luts']:,} LUT4, {s['ffs']:,} FF, "
                 f"{s['dsps']} MULT18X18D, {s['brams']} DP16KD, Fmax {s['fmax_mhz']} MHz "
                 f"({'meets' if s['meets_target'] else 'misses'} the {s['target_mhz']} MHz target).\n\n")
    elif s.get("accelerator"):
        head += ("**No accelerator size fits the device**: " + "; ".join(
            f"{a['rows']}x{a['cols']} needs {a['luts']:,} LUT4, {a['dsps']} MULT18X18D, {a['brams']} DP16KD"
            for a in s["accelerator"]) + f" (the device has {av.get('dsps', 0)} MULT18X18D). Without a placement "
            "there is no Fmax: `qexit cost` then needs --clock-mhz, a what-if.\n\n")
    blocks = ""
    for d in s["designs"]:
        if d["design"].startswith("accelerator") and d.get("blocks"):
            rows = [[n, f"{c['luts']:,}", f"{c['ffs']:,}", c["dsps"], c["brams"]]
                    for n, c in accelerator_blocks(d["blocks"]).items()]
            blocks += (f"\n\n## {d['design']}, by block\n\nyosys's mapped cells by the block they came from, "
                       "before placement (a CCU2C carry cell counts 2 LUT4s, a distributed-RAM cell 4); nextpnr's "
                       "totals above add route-through LUTs and pack some away.\n\n"
                       + markdown_table(["block", "LUT4", "FF", "MULT18X18D", "DP16KD"], rows))
    return (head + markdown_table(["design", "top", "LUT4", "FF", "DSP", "BRAM", "Fmax (MHz)", "fits", "tool s"], table)
            + blocks
            + "\n\n## Critical paths (nextpnr: where the slowest path starts and ends)\n\n"
            + "\n".join(f"- {d['design']}: " + "; ".join(f"`{c}`" for c in d["critical_path"])
                        for d in s["designs"] if d.get("critical_path"))
            + "\n")
