"""reports/index.md: the headline table, the plots and one line per step, from every step's
summary.json (``summaries``: step folder name -> its summary, in the order to list them)."""
from __future__ import annotations

from qexit.render.markdown import markdown_table

HEADLINES = {  # the headline keys of each step (docs/architecture.md); other steps show their first keys
    "eval": ["top1", "images", "params"],
    "quantize": ["top1_fp32", "top1_int8", "top1_dynamic_int8", "saturated_values"],
    "exits": ["mode", "top1_full", "top1_lraee", "flops_saving", "rescue", "loss"],
    "verify-gemm": ["matched", "total", "mismatches", "cycles_measured", "cycles_predicted", "utilization",
                    "utilization_with_io"],
    "verify-units": ["matched", "total", "mismatches"],
    "synth": ["rows", "cols", "luts", "dsps", "ffs", "brams", "fmax_mhz", "device"],
    "cost": ["cycles_full", "cycles_exit", "cycle_saving", "energy_full_pj", "energy_exit_pj", "energy_saving",
             "latency_us", "throughput_ips", "clock_mhz"],
    "hls": ["matched", "total", "mismatches", "token_sets"],
    "verify-comparator": ["matched", "total", "decisions", "images", "images_matched"],
    "verify-head": ["matched", "total", "token_sets", "latency_cycles"],
    "verify-model": ["images", "matched", "total", "predictions_matched", "cycles_measured", "cycles_predicted"],
    "verify-run": ["images", "matched", "total", "decisions_matched", "decisions", "cycles_measured",
                   "cycles_predicted"],
    "verify-block": ["images", "layers", "matched", "total", "cycles_measured", "cycles_predicted", "utilization",
                     "onchip_bits", "predictions_matched"],
    "mixed": ["top1_uniform8", "top1_mixed", "bops_saving", "energy_saving", "assignment"],
}

PLOTS = [  # (step folder, file, caption): the figures index.md shows
    ("quantize", "qirc.png", "Quantization noise (NSR) per layer, integer-only INT8 against FP32"),
    ("exits", "exit_distribution.png", "Where the test images exit"),
    ("cost", "pareto.png", "Accuracy against energy saving for every LCT budget (and against FLOPs)"),
    ("cost", "cost.png", "Cycles per layer and energy per category: INT8 full depth against early exit"),
]


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def headline_rows(summaries: dict[str, dict]) -> list[tuple[str, str, str]]:
    """(what, value, source folder) for the figures a reader looks for first; steps without a
    summary are left out."""
    rows = []
    ev, q, ex, c, sy = (summaries.get(k) or {} for k in ("eval", "quantize", "exits", "cost", "synth"))
    if ev:
        rows.append(("FP32 top-1", _pct(ev.get("top1")), "eval"))
    if q:
        rows.append(("INT8 (integer-only) top-1", _pct(q.get("top1_int8")), "quantize"))
    if ex:
        rows.append(("LRA-EE top-1 / FLOPs saving", f"{_pct(ex.get('top1_lraee'))} / {_pct(ex.get('flops_saving'))}",
                     "exits"))
    if c:
        seed = f" (seed {c.get('seed')})" if "seed" in c else ""
        mach = c.get("machine") or {}
        size = f", {mach['rows']}x{mach['cols']}" if "rows" in mach and "cols" in mach else ""
        rows.append((f"cycles per image{size}, full depth -> early exit{seed}",
                     f"{c['cycles_full']:,.0f} -> {c['cycles_exit']:,.0f} ({_pct(c['cycle_saving'])} saved)", "cost"))
        for suffix in ("", "_fpga"):
            if f"energy_full_pj{suffix}" not in c:
                continue
            table = c.get(f"energy_table{suffix}")
            name = (table.get("kind") or table.get("name")) if isinstance(table, dict) else "table not named"
            dram = (f"; DRAM {_pct(c[f'dram_share_full{suffix}'])} -> {_pct(c[f'dram_share_exit{suffix}'])}"
                    if f"dram_share_full{suffix}" in c else "")
            rows.append((f"energy per image, {name}",
                         f"{c[f'energy_full_pj{suffix}'] / 1e6:,.1f} -> {c[f'energy_exit_pj{suffix}'] / 1e6:,.1f} uJ "
                         f"({_pct(c[f'energy_saving{suffix}'])} saved{dram})", "cost"))
        what_if = {"user": " (a what-if)", "synth": " (synthesized)"}.get(c.get("clock_source"), "")
        rows.append((f"latency at {c['clock_mhz']:g} MHz{what_if} / throughput (batch)",
                     f"{c['latency_us']:,.0f} us / {c['throughput_ips']:,.0f} img/s", "cost"))
    if sy.get("rows"):
        rows.append((f"ECP5 {sy.get('device')}: largest accelerator that fits",
                     f"{sy['rows']}x{sy['cols']}, {sy['luts']:,} LUT4, {sy['dsps']} DSP, {sy['brams']} BRAM, "
                     f"Fmax {sy['fmax_mhz']} MHz", "synth"))
    elif sy.get("accelerator"):
        rows.append((f"ECP5 {sy.get('device')}: no accelerator fits",
                     "; ".join(f"{a['rows']}x{a['cols']} needs {a['dsps']} DSP" for a in sy["accelerator"])
                     + f" of {sy['designs'][0]['available'].get('dsps', '?') if sy.get('designs') else '?'}", "synth"))
    for step in [n for n in summaries if n.startswith(("verify-", "hls"))]:
        s = summaries[step] or {}
        if "matched" in s and "total" in s:
            extra = ""
            if "cycles_measured" in s and "cycles_predicted" in s:
                extra = f"; cycles {s['cycles_measured']:,} measured, {s['cycles_predicted']:,} predicted"
            rows.append((f"{step}: bit-exact", f"{s['matched']:,}/{s['total']:,}{extra}", step))
    return rows


def index(summaries: dict[str, dict], plots: list[tuple[str, str, str]], title: str | None = None) -> str:
    """index.md: the headline table, ``plots`` (those of ``PLOTS`` that exist) and one line per
    step that has a summary."""
    rows = headline_rows(summaries)
    lines = ["# qexit reports" + (f": {title}" if title else ""), "",
             markdown_table(["", "value", "report"], [[what, value, f"[{src}]({src}/README.md)"]
                                                      for what, value, src in rows]), ""]
    for step, png, caption in plots:
        lines += [f"## {caption}", "", f"![{caption}]({step}/{png})", ""]
    lines += ["## Every step", ""]
    for step, s in summaries.items():
        if s is None:
            continue
        flat = {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        keys = [k for k in HEADLINES.get(step, []) if k in flat] or list(flat)[:8]
        head = ", ".join(f"{k}={flat[k]:.4g}" if isinstance(flat[k], float) else f"{k}={flat[k]}" for k in keys)
        lines.append(f"- [{step}]({step}/README.md): {head}")
    return "\n".join(lines) + "\n"


def table_text(rows: list[tuple[str, str, str]]) -> str:
    """The headline table for the console."""
    w = max((len(r[0]) for r in rows), default=0)
    return "\n".join(f"{what:<{w}}  {value}" for what, value, _ in rows)
