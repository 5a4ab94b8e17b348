"""The synth step's README.md, from the summary the command writes."""
from __future__ import annotations

from qexit.render.markdown import markdown_table


def readme(s: dict) -> str:
    table = [[d["design"], d["top"], f"{d['luts']:,}", f"{d['ffs']:,}", d["dsps"], d["brams"],
              d["fmax_mhz"] if d["fmax_mhz"] else "-", "yes" if d["fits"] else f"no: {d['error']}",
              f"{d['yosys_seconds'] + d['nextpnr_seconds']:.0f}"] for d in s["designs"]]
    av = s["available"]
    return (f"# Synthesis on an ECP5 {s['device']}\n\n"
            f"yosys `synth_ecp5` and nextpnr-ecp5 (YoWASP builds), target {s['target_mhz']} MHz, out of context "
            f"(no IO buffers; the figures leave the IO out). The device has {av.get('luts', 0):,} LUT4, "
            f"{av.get('ffs', 0):,} FF, {av.get('dsps', 0)} MULT18X18D and {av.get('brams', 0)} DP16KD.\n\n"
            f"**The largest layer engine that fits: {s['rows']}x{s['cols']}**, {s['luts']:,} LUT4, {s['ffs']:,} FF, "
            f"{s['dsps']} DSP, {s['brams']} BRAM, Fmax {s['fmax_mhz']} MHz "
            f"({'meets' if s['meets_target'] else 'misses'} the {s['target_mhz']} MHz target).\n\n"
            + markdown_table(["design", "top", "LUT4", "FF", "DSP", "BRAM", "Fmax (MHz)", "fits", "tool s"], table)
            + "\n\n## Critical paths (nextpnr: where the slowest path starts and ends)\n\n"
            + "\n".join(f"- {d['design']}: " + "; ".join(f"`{c}`" for c in d["critical_path"])
                        for d in s["designs"] if d.get("critical_path"))
            + "\n")
