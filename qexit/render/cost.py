"""The cost step's report: cost.png, pareto.png, the console table and README.md, from the
summary that ``hw.cost.summary`` builds (plus the command's own keys: ``pareto``,
``clock_source``, ``seed``, ``exits``)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from qexit.render.markdown import markdown_table

matplotlib.use("Agg")

COLORS = {"mac": "#1f77b4", "alu": "#ff7f0e", "sram": "#2ca02c", "dram": "#d62728"}


def label(table: dict) -> str:
    """How a report names an energy table (a summary's ``energy_table``): its label, else its name."""
    return table.get("label") or table["name"]


def priced_by(s: dict) -> list[tuple[str, str]]:
    """(key suffix, table label) of every table the summary prices energy under: the default
    (no suffix), then the FPGA estimate where the summary has it."""
    out = [("", label(s["energy_table"]))]
    if "energy_table_fpga" in s:
        out.append(("_fpga", label(s["energy_table_fpga"])))
    return out


def plot(s: dict, path) -> None:
    """cost.png: per backbone layer, full-depth cycles against the expected cycles with exits
    (and the exit decisions), and energy per image by category, full depth against early exit."""
    parts = {p["part"]: p for p in s["parts"]}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    xs = list(range(1, len(s["layer_cycles_full"]) + 1))
    per_layer_full = s["layer_cycles_full"]
    exp_layer = [parts.get(f"layer {i}", {}).get("cycles", 0) for i in xs]
    exp_exit = [parts.get(f"exit {i}", {}).get("cycles", 0) for i in xs]
    ax1.bar([x - 0.2 for x in xs], per_layer_full, 0.4, label="full depth", color="#999999")
    ax1.bar([x + 0.2 for x in xs], exp_layer, 0.4, label="early exit: layer", color="#1f77b4")
    ax1.bar([x + 0.2 for x in xs], exp_exit, 0.4, bottom=exp_layer, label="early exit: decision", color="#d62728")
    ax1.set_xlabel("backbone layer")
    ax1.set_ylabel("cycles per image (expected)")
    ax1.set_title(f"cycles: {s['cycles_full']:,.0f} full, {s['cycles_exit']:,.0f} with exits")
    ax1.legend(fontsize=8)
    cats = list(s["energy_by_category_full_pj"])
    ticks, names = [], []
    for t, (suffix, name) in enumerate(priced_by(s)):
        for j, (key, what) in enumerate((("full", "full depth"), ("exit", "early exit"))):
            x, bottom = 2.5 * t + j, 0.0
            for c in cats:
                v = s[f"energy_by_category_{key}_pj{suffix}"][c] / 1e6
                ax2.bar(x, v, 0.8, bottom=bottom, color=COLORS.get(c), label=c if x == 0 else None)
                bottom += v
            ax2.annotate(f"DRAM {100 * s.get(f'dram_share_{key}{suffix}', 0):.0f}%", (x, bottom), ha="center",
                         va="bottom", fontsize=7)
            ticks.append(x)
            names.append(f"{what}\n{name}" if j == 0 else what)
    ax2.set_xticks(ticks, names, fontsize=7)
    ax2.set_ylabel("energy per image (uJ)")
    ax2.set_title("\n".join(f"energy saved: {100 * s[f'energy_saving{suffix}']:.1f}% ({name})"
                            for suffix, name in priced_by(s)), fontsize=9)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(points: list[dict], chosen: dict, path, table: str = "") -> None:
    """pareto.png: top-1 against the energy saving of every LCT budget, and against its FLOPs
    saving, with the operating point the cost report prices (``chosen``: energy_saving, top1,
    top1_full_depth); ``table`` names the energy table the savings are under."""
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = sorted(points, key=lambda p: p["energy_saving"])
    ax.plot([100 * p["energy_saving"] for p in pts], [100 * p["top1"] for p in pts], "o-",
            label=f"energy saving ({table})" if table else "energy saving")
    ax.plot([100 * p["flops_saving"] for p in pts], [100 * p["top1"] for p in pts], "s--", color="#999999",
            label="FLOPs saving", alpha=0.7)
    if chosen.get("top1") is not None:
        ax.plot([100 * chosen["energy_saving"]], [100 * chosen["top1"]], "r*", markersize=14, label="this report")
    if chosen.get("top1_full_depth"):
        ax.axhline(100 * chosen["top1_full_depth"], color="k", lw=0.8, ls=":", label="INT8 full depth")
    ax.set_xlabel("saving against INT8 full depth (%)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("LCT budgets: accuracy against energy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plots(s: dict, folder) -> None:
    """cost.png, and pareto.png when the summary prices the exits' LCT budgets."""
    plot(s, folder / "cost.png")
    if s.get("pareto"):
        plot_pareto(s["pareto"], {"energy_saving": s["energy_saving"], "top1": s.get("top1_exit"),
                                  "top1_full_depth": s.get("top1_full_depth")}, folder / "pareto.png",
                     label(s["energy_table"]))


def energy_rows(s: dict) -> list[tuple[str, str, str, str]]:
    """The table's energy rows: energy per image and its DRAM share under each table."""
    rows = []
    for suffix, name in priced_by(s):
        rows.append((f"energy per image (uJ, {name})", f"{s[f'energy_full_pj{suffix}'] / 1e6:,.2f}",
                     f"{s[f'energy_exit_pj{suffix}'] / 1e6:,.2f}", f"{100 * s[f'energy_saving{suffix}']:.1f}%"))
        if f"dram_share_full{suffix}" in s:
            rows.append((f"  of which DRAM ({name})", f"{100 * s[f'dram_share_full{suffix}']:.1f}%",
                         f"{100 * s[f'dram_share_exit{suffix}']:.1f}%", ""))
    return rows


def table_text(s: dict) -> str:
    """The console table: full depth against early exit, with the savings."""
    rows = [("cycles per image", f"{s['cycles_full']:,.0f}", f"{s['cycles_exit']:,.0f}", f"{100 * s['cycle_saving']:.1f}%"),
            ("latency (us)", f"{s['latency_full_us']:,.1f}", f"{s['latency_us']:,.1f}", ""),
            *energy_rows(s),
            (f"throughput, batch {s['throughput_mode']['exit']['batch']} (img/s)", f"{s['throughput_full_ips']:,.0f}",
             f"{s['throughput_ips']:,.0f}", ""),
            ("MACs per image", f"{s['macs_full']:,.0f}", f"{s['macs_exit']:,.0f}", f"{100 * s['bop_saving']:.1f}%")]
    if s.get("top1_exit") is not None and s.get("top1_full_depth") is not None:
        rows.append(("top-1 (the exits step's test split)", f"{100 * s['top1_full_depth']:.2f}%",
                     f"{100 * s['top1_exit']:.2f}%", ""))
    w = max(len(r[0]) for r in rows)
    m = s["machine"]
    head = (f"cost at {m['rows']}x{m['cols']}, {m['bandwidth_bytes_per_cycle']} B/cycle, {m['clock_mhz']} MHz "
            f"(energy: {' / '.join(name for _, name in priced_by(s))})\n"
            f"{'':<{w}}  {'full depth':>14}  {'early exit':>14}  {'saving':>7}")
    return head + "\n" + "\n".join(f"{a:<{w}}  {b:>14}  {c:>14}  {d:>7}" for a, b, c, d in rows)


def readme(s: dict) -> str:
    """README.md of reports/cost/."""
    m, a = s["machine"], s["atheena"]
    own = label(s["energy_table"])
    parts = [[p["part"], f"{p['reach']:.4f}", f"{p['cycles']:,.0f}", f"{p['energy_pj'] / 1e6:,.3f}"]
             for p in s["parts"]]
    tabs = priced_by(s)
    cats = [[k, *(f"{s[f'energy_by_category_{w}_pj{suffix}'][k] / 1e6:,.2f}" for suffix, _ in tabs
                  for w in ("full", "exit"))] for k in s["energy_by_category_full_pj"]]
    cats.append(["**DRAM share**", *(f"{100 * s.get(f'dram_share_{w}{suffix}', 0):.1f}%" for suffix, _ in tabs
                                     for w in ("full", "exit"))])
    cat_head = ["category", *(f"{w}, {name}" for _, name in tabs for w in ("full depth", "early exit"))]
    sources = "".join(f"\n- **{name}** (`{s[f'energy_table{suffix}']['name']}`, "
                      f"{s[f'energy_table{suffix}'].get('kind', 'kind not given')}): {s[f'energy_table{suffix}']['source']}"
                      for suffix, name in tabs)
    kinds = [[k, f"{v:,.0f}", f"{s['cycles_by_kind_exit'].get(k, 0):,.0f}"] for k, v in s["cycles_by_kind_full"].items()]
    kinds += [["exit", "0", f"{s['cycles_by_kind_exit'].get('exit', 0):,.0f}"]]
    stages = [[f"{st['layers'][0]}-{st['layers'][1]}", f"{st['cycles']:,}", f"{st['reach']:.4f}",
               f"{st['rate_ips']:,.0f}", f"{st['bound_ips']:,.0f}"] for st in a["stages"]]
    tm = s["throughput_mode"]
    pareto = ""
    if s.get("pareto"):
        rows = [[f"{p['budget']:g}", f"{100 * p['top1']:.2f}%", f"{100 * p['flops_saving']:.1f}%",
                 f"{100 * p['cycle_saving']:.1f}%", f"{100 * p['energy_saving']:.1f}%"] for p in s["pareto"]]
        pareto = ("\n\n## Accuracy against energy: every LCT budget of the exits' sweep (same seed)\n\n"
                  "The exits step's Pareto sweep (float gate; the operating point above is the fixed-point "
                  "gate's), each budget's routing priced on this machine.\n\n![pareto](pareto.png)\n\n"
                  + markdown_table(["budget", "top-1", "FLOPs saving", "cycle saving", f"energy saving ({own})"], rows))
    return (f"# Cost of early exit on the layer engine\n\n"
            f"`qexit cost` (hw/cost/) on the layer engine at {m['rows']}x{m['cols']}, weights streamed at "
            f"{m['bandwidth_bytes_per_cycle']} B/cycle after {m['weight_latency_cycles']} cycles, clocked at "
            f"{m['clock_mhz']} MHz ({clock_text(s)}); exit distribution: seed {s['seed']} of `{s['exits']}` (candidates on: "
            f"{s['distribution']['candidates']}).\n\nEnergy tables (the same counts priced under each):\n{sources}\n\n"
            "Cycles come from the layer engine's program (`hw/program.py`, checked against the RTL by "
            "`qexit verify block`) plus the exit head's decision time (`hw/rtl/head.py` `head_cycles`, checked "
            "by `qexit verify head`) and the comparator's latency. Energy is counts times the table: dynamic "
            "energy only; leakage, clock and control, and loading each segment's program are left out.\n\n```\n"
            + table_text(s) + "\n```\n\n![cost](cost.png)\n\n"
            "## Per part (expected over the distribution)\n\n"
            + markdown_table(["part", "P(reach)", "cycles", f"energy (uJ, {own})"], parts)
            + "\n\n## Energy by category (uJ per image), under each table\n\n"
            + markdown_table(cat_head, cats)
            + "\n\nmac: int8 MACs in the array (and the head's dense layers); alu: the units, requantizers "
              "and adders; sram: on-chip memories by size; dram: the weight and parameter streams. The counts "
              "are the same under every table; DRAM share is dram over the total.\n\n"
              "## Cycles by descriptor kind\n\n"
            + markdown_table(["kind", "full depth", "early exit"], kinds)
            + f"\n\n## Throughput mode and ATHEENA\n\nBatch {tm['exit']['batch']}: every streamed weight tile "
              f"serves the batch once; exited images are replaced, so B·P(reach l) images run layer l. "
              f"Full depth {tm['full']['throughput_ips']:,.0f} img/s at {tm['full']['energy_pj'] / 1e6:,.2f} uJ/img, "
              f"early exit {tm['exit']['throughput_ips']:,.0f} img/s at {tm['exit']['energy_pj'] / 1e6:,.2f} uJ/img "
              f"({100 * tm['energy_saving']:.1f}% less energy; {own}). A model only: the engine's buffers hold one image.\n\n"
              f"ATHEENA (Biggs et al., 2023) gives each stage between exits its own hardware and pipelines them: "
              f"throughput = min over stages of T_s / p_s (`min(T1, T2/p)` for two stages). With each of the "
              f"{a['engines']} stages on its own copy of this engine:\n\n"
            + markdown_table(["layers", "cycles", "p_s", "T_s (img/s)", "T_s / p_s"], stages)
            + f"\n\nATHEENA: {a['throughput_ips']:,.0f} img/s on {a['engines']} engines, "
              f"{a['atheena_per_engine_ips']:,.0f} per engine. This design time-shares one engine across all "
              f"layers, so its throughput is f / E[cycles] = {a['this_engine_ips']:,.0f} img/s on one engine: it "
              f"never idles a stage, so per engine it is at least ATHEENA's (E[cycles] = Σ p_s C_s ≤ S max p_s C_s), "
              f"and equal only when every stage's p_s C_s is the same.\n" + pareto + "\n")


def clock_text(s: dict) -> str:
    """Where the cost's clock comes from, in words (``clock_source`` and ``synthesis``)."""
    if s.get("clock_source") == "synth":
        y = s["synthesis"]
        return (f"the Fmax nextpnr-ecp5 reached for this {y['rows']}x{y['cols']} accelerator on the {y['device']}, "
                f"speed grade 6: {y['luts']:,} LUT4, {y['ffs']:,} FF, {y['dsps']} MULT18X18D, {y['brams']} DP16KD; "
                f"`{y['from']}`")
    return "--clock-mhz, a what-if: no design was synthesized at this clock"
