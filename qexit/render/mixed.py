"""The mixed step's report: frontier.png, rescue.png, README.md and the console line, from the
summary that ``studies.mixed.study`` builds (plus the command's keys: ``checkpoint``,
``machine``, ``energy_table`` and its ``energy_table_label``, ``_kind`` and ``_source``,
``seconds_bench``, ``seconds``)."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from qexit.render.markdown import markdown_table

matplotlib.use("Agg")

ALLOCATOR_STYLE = {"uniform 8-bit": ("k", "s"), "uniform 6-bit": ("tab:gray", "s"), "uniform 4-bit": ("tab:brown", "s"),
                   "PMQ": ("tab:blue", "o"), "MAQEE": ("tab:orange", "^")}

HEAD = ["allocator", "budget", "widths w/a per block", "top-1 (test)", "flips (gate)", "E[GBOPs]",
        "energy INT8 (µJ)", "energy scalable (µJ)", "cycles scalable"]


def table_label(s: dict) -> str:
    """How the report names the energy table the summary is priced under."""
    return s.get("energy_table_label") or s.get("energy_table") or "energy table not named"


def head(s: dict) -> list[str]:
    """The points' table header, its energy columns naming the table."""
    return [h.replace("(µJ)", f"(µJ, {table_label(s)})") for h in HEAD]


def plot_frontier(s: dict, path) -> None:
    """Test top-1 against expected energy (precision-scalable engine) and against E[BOPs]."""
    m = s.get("machine", {})
    engine = f"{m.get('rows', 8)}x{m.get('cols', 8)}"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, key, scale, label in ((axes[0], "energy_pj_scalable", 1e-6,
                                   f"expected energy per image (µJ, {table_label(s)}), precision-scalable {engine} engine"),
                                  (axes[1], "bops", 1e-9, "expected GBOPs per image")):
        for name, (color, marker) in ALLOCATOR_STYLE.items():
            pts = [p for p in s["points"] if p["allocator"] == name]
            if pts:
                ax.scatter([p[key] * scale for p in pts], [100 * p["top1_test"] for p in pts], s=14, c=color,
                           marker=marker, alpha=0.6, label=name)
        fr = s["frontier_energy" if key.startswith("energy") else "frontier_bops"]
        ax.plot([p[key] * scale for p in fr], [100 * p["top1_test"] for p in fr], "k--", lw=1, label="frontier")
        for name, color in (("chosen", "r"), ("chosen_bops", "m")):
            if s.get(name):
                ax.scatter([s[name][key] * scale], [100 * s[name]["top1_test"]], s=120, facecolors="none",
                           edgecolors=color, label="chosen (energy)" if name == "chosen" else "cheapest in BOPs")
        ax.axhline(100 * (s["top1_uniform8"] - s["max_drop"]), color="r", lw=0.6, ls=":")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Mixed precision with exits: every assignment at every LCT budget (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rescue(rows: list[dict], path) -> None:
    """NSR at the deepest block against net rescue (rescue - loss), one point per setting."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for a in sorted({r["activation_bits"] for r in rows}, reverse=True):
        pts = [r for r in rows if r["activation_bits"] == a]
        ax.plot([r["nsr_deepest"] for r in pts], [100 * r["net_rescue"] for r in pts], "o-",
                label=f"a = {a} bits" if a < 8 else "uniform 8-bit")
        for r in pts:
            ax.annotate(f"k={r['last_blocks']}", (r["nsr_deepest"], 100 * r["net_rescue"]), fontsize=7)
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0.5, color="r", lw=0.6, ls=":")
    ax.set_xlabel("NSR at the deepest block")
    ax.set_ylabel("net rescue = rescue - loss (% of test images)")
    ax.set_title("Rescue Effect: lower the activation bits of the last k blocks")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plots(s: dict, folder) -> None:
    """frontier.png and (with a Rescue-Effect sweep) rescue.png of a search; nothing for one given assignment."""
    if "nsr" in s:
        return
    plot_frontier(s, folder / "frontier.png")
    if s["rescue_sweep"]:
        plot_rescue(s["rescue_sweep"], folder / "rescue.png")


def headline(s: dict) -> str:
    """The console line."""
    if s.get("top1_mixed") is None:
        if "nsr" in s:
            p = s["points"][0]
            return (f"mixed: assignment {s['assignment']}: top-1 {100 * p['top1_test']:.2f}% at full depth "
                    f"(uniform 8-bit {100 * s['top1_uniform8']:.2f}%), E[BOPs] {p['bops'] / 1e9:.3f} G")
        return "mixed: no assignment met the accuracy and risk bounds"
    return (f"mixed: top-1 {100 * s['top1_mixed']:.2f}% (uniform INT8 full depth {100 * s['top1_uniform8']:.2f}%), "
            f"{100 * s['bops_saving']:.1f}% fewer BOPs, {100 * s['energy_saving']:.1f}% less energy ({table_label(s)}, "
            f"precision-scalable engine; {100 * s['energy_int8_saving']:.1f}% on the INT8 engine)"
            + (f"; the cheapest in BOPs: {100 * s['chosen_bops']['savings']['bops_saving']:.1f}% fewer"
               if s.get("chosen_bops") else "") + f"; {s['seconds']:.0f} s")


def _row(p: dict) -> list[str]:
    return [p["allocator"], f"{p['budget']:g}", " ".join(f"{w}/{a}" for w, a in p["widths"]),
            f"{100 * p['top1_test']:.2f}%", f"{100 * p.get('flips_gate', 0):.1f}%", f"{p['bops'] / 1e9:.3f}",
            f"{p['energy_pj_int8'] / 1e6:.1f}", f"{p['energy_pj_scalable'] / 1e6:.1f}",
            f"{p['cycles_scalable']:,.0f}"]


def savings_table(sv: dict, table: str = "") -> str:
    on = f" ({table})" if table else ""
    return markdown_table(
        ["saving against uniform INT8 full depth", "total", "exits only (8-bit, same budget)",
         "bit-widths only (full depth)"],
        [[name, f"{100 * sv[f'{k}_saving']:.1f}%", f"{100 * sv[f'{k}_saving_exits_only']:.1f}%",
          f"{100 * sv[f'{k}_saving_bits_only']:.1f}%"]
         for name, k in (("E[BOPs]", "bops"), (f"energy{on}, precision-scalable engine", "energy"),
                         ("cycles, precision-scalable engine", "cycles"), (f"energy{on}, INT8 engine", "energy_int8"))])


def readme(s: dict) -> str:
    """README.md of reports/mixed/: one given assignment (``nsr`` in ``s``) or the whole search."""
    if "nsr" in s:
        return ("# Mixed precision: one assignment\n\n"
                + markdown_table(head(s), [_row(p) for p in s["points"]]) + "\n\nNSR per block: "
                + ", ".join(f"{x:.3f}" for x in s["nsr"]) + "\n")
    parts = [f"# Mixed precision with exits (`qexit mixed`)\n\n"
             f"Model `{s['checkpoint']}`, {s['depth']} blocks; exit candidates {s['candidates']}; "
             f"{s['images']['gate']} gating and {s['images']['test']} test images; heads and gate trained on the "
             f"8-bit features; every figure from the test split unless it says gate. Costs: `hw/cost/` on the "
             f"{s['machine']['rows']}x{s['machine']['cols']} layer engine at {s['machine']['bandwidth_bytes_per_cycle']} "
             f"B/cycle, {s['machine']['clock_mhz']} MHz, energy under {table_label(s)}; 'scalable' is the same engine with "
             f"precision-scalable PEs (two 4x4 MACs a cycle), 'INT8' the engine as built (bit-widths change nothing "
             f"there). How each number is made: `studies/mixed.py`'s docstring.\n"
             + (f"\nEnergy table: **{table_label(s)}** ({s.get('energy_table_kind', 'kind not given')}): "
                f"{s['energy_table_source']}\n" if s.get("energy_table_source") else "")]
    if s.get("chosen"):
        c = s["chosen"]
        parts.append(
            f"\n## Chosen\n\n{c['allocator']} at LCT budget {c['budget']:g}: widths (w/a) "
            f"{' '.join(f'{w}/{a}' for w, a in c['widths'])}. Top-1 {100 * c['top1_test']:.2f}% against uniform "
            f"INT8 full depth {100 * s['top1_uniform8']:.2f}% (FP32 {100 * s['top1_fp32']:.2f}%); decision flips "
            f"{100 * c.get('flips_gate', 0):.1f}% (gate) and {100 * c.get('flips_test', 0):.1f}% (test).\n\n"
            + savings_table(s, table_label(s)) + "\n")
    else:
        parts.append(f"\n## Chosen\n\nNo point met top-1 within {100 * s['max_drop']:.1f} pt and flips within "
                     f"{100 * s['risk']:.1f}%.\n")
    c = s.get("chosen_bops")
    if c and s.get("chosen") and c["widths"] == s["chosen"]["widths"] and c["budget"] == s["chosen"]["budget"]:
        parts.append("\nThe cheapest point in BOPs under the same bounds is the same point.\n")
    elif c:
        parts.append(
            f"\n## The cheapest in BOPs under the same bounds\n\n{c['allocator']} at LCT budget {c['budget']:g}: "
            f"widths (w/a) {' '.join(f'{w}/{a}' for w, a in c['widths'])}. Top-1 {100 * c['top1_test']:.2f}%; "
            f"decision flips {100 * c.get('flips_gate', 0):.1f}% (gate) and {100 * c.get('flips_test', 0):.1f}% "
            f"(test).\n\n" + savings_table(c["savings"], table_label(s)) + "\n")
    parts.append("\n## Frontier (test top-1 against expected energy on the precision-scalable engine)\n\n"
                 "![frontier](frontier.png)\n\n" + markdown_table(head(s), [_row(p) for p in s["frontier_energy"]]) + "\n")
    parts.append("\n## Frontier against E[BOPs]\n\n" + markdown_table(head(s), [_row(p) for p in s["frontier_bops"]]) + "\n")
    parts.append("\n## Allocator run time\n\n" + markdown_table(
        ["allocator", "seconds (incl. the shared per-move sensitivity)"],
        [[k, f"{v:.1f}"] for k, v in s["seconds_allocators"].items()])
        + f"\n\nThe bench (calibration, 8-bit traces, heads, gate) took {s['seconds_bench']:.0f} s; the whole "
          f"run {s['seconds']:.0f} s.\n")
    if s["rescue_sweep"]:
        sweep = s["rescue_sweep"]
        q = [r["quadrants"] for r in sweep]
        rows = [[f"{r['activation_bits']}", f"{r['last_blocks']}", f"{r['nsr_deepest']:.3f}",
                 f"{100 * r['top1_full_depth']:.2f}%", f"{100 * r['top1_exit']:.2f}%",
                 *(f"{100 * x[k]:.2f}%" for k in ("both_correct", "rescue", "loss", "both_wrong")),
                 f"{100 * r['net_rescue']:+.2f}%"] for r, x in zip(sweep, q)]
        nsr = [[f"{r['activation_bits']}", f"{r['last_blocks']}", *(f"{v:.2f}" for v in r["nsr"])] for r in sweep]
        parts.append(f"\n## Rescue-Effect sweep (activation bits of the last k blocks; exits at budget "
                     f"{s['operating_budget']:g})\n\n![rescue](rescue.png)\n\nThe four quadrants: the exits "
                     f"against the same model's full depth, as shares of the test images.\n\n"
                     + markdown_table(["a bits", "k", "NSR deepest", "top-1 full depth", "top-1 exits", "both correct",
                                       "rescue", "loss", "both wrong", "net"], rows)
                     + "\n\nNSR per block (against FP32, test images):\n\n"
                     + markdown_table(["a bits", "k", *(str(i + 1) for i in range(s["depth"]))], nsr) + "\n")
    return "".join(parts)
