"""The sweep step's report: pareto.png and README.md, from ``studies.sweep``'s points and front
and the command's summary."""
from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt

from qexit.render.markdown import markdown_table

matplotlib.use("Agg")

ABOUT = ("Each machine of the grid (the L x L accelerator with its L-multiplier exit head, weights streamed "
         "at B bytes/cycle after the stream latency, clocked at the Fmax synthesis measured for that "
         "accelerator on the LFE5U-85F, or at --clock-mhz as a what-if) is priced at every exit budget: the operating point the exit path "
         "holds, every LCT budget of `qexit exits`'s Pareto sweep, and full depth. Cycles, latency and "
         "energy are the cost model's (`hw/cost/`), per image in latency mode; top-1 is what the exits step "
         "measured for that routing.")


def label(table: dict | None) -> str:
    """How the report names the energy table (the summary's ``energy_table``)."""
    return (table.get("label") or table["name"]) if table else "energy table not named"


def plot(points: list[dict], front: list[dict], path, table: dict | None = None) -> None:
    """Energy per image against latency, every point coloured by top-1; the front circled;
    ``table`` is the energy table the points are priced under."""
    pts = [p for p in points if "error" not in p and p.get("top1") is not None and p.get("latency_us") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sc = ax.scatter([p["latency_us"] / 1e3 for p in pts], [p["energy_uj"] for p in pts],
                    c=[100 * p["top1"] for p in pts], cmap="viridis", s=18)
    ax.scatter([p["latency_us"] / 1e3 for p in front], [p["energy_uj"] for p in front], facecolors="none",
               edgecolors="r", s=70, label=f"Pareto front ({len(front)})")
    for a in sorted({p["rows"] for p in pts}):
        sub = [p for p in pts if p["rows"] == a and p["budget"] == "full depth"]
        for p in sub[:1]:
            ax.annotate(f"{a}x{a}", (p["latency_us"] / 1e3, p["energy_uj"]), fontsize=8)
    if pts:
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no machine of the grid has a synthesized clock\n(none of its sizes fits the device; see the README)",
                ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency per image (ms)")
    ax.set_ylabel(f"energy per image (uJ, {label(table)})")
    fig.colorbar(sc, label="top-1 (%)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("qexit sweep: array x bandwidth x exit budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def readme(s: dict) -> str:
    """README.md of reports/sweep/ from the summary the command writes."""
    g, front = s["grid"], s["front"]
    table = s.get("energy_table")
    rows = [[f"{p['rows']}x{p['cols']}", f"{p['bandwidth']:g}", f"{p['clock_mhz']:g}", str(p["budget"]),
             f"{100 * p['top1']:.2f}%", f"{p['latency_us'] / 1e3:,.2f}", f"{p['energy_uj']:,.1f}",
             f"{100 * p['dram_share']:.1f}%" if "dram_share" in p else "-"]
            for p in sorted(front, key=lambda p: p["energy_uj"])]
    source = (f" Energy table: **{label(table)}** ({table.get('kind', 'kind not given')}): {table['source']}"
              if table else "")
    budgets = g["budgets"] if g["budgets"] == "all" else tuple(g["budgets"])
    return (f"# qexit sweep: {s['points']} design points, {len(front)} on the Pareto front\n\n"
            + ABOUT + source + "\n\n"
            + f"Grid: arrays {g['arrays']}, bandwidths {g['bandwidths']} B/cycle, budgets "
            + f"{budgets}, stream latency {g['latency']} cycles; seed {s['seed']} of `{s['exits']}`. "
            + f"{s['machines']} machines in {s['seconds']:.1f} s on {s['workers']} worker(s).\n\n"
            + "![sweep](pareto.png)\n\n## The Pareto front (energy, latency, top-1)\n\n"
            + markdown_table(["array", "B/cycle", "MHz", "budget", "top-1", "latency (ms)",
                              f"energy (uJ, {label(table)})", "DRAM share"], rows)
            + "\n\nEvery point is in `points.csv`." + fit_text(s) + "\n"
            + confirm_text(s["confirmations"]))


def fit_text(s: dict) -> str:
    """The README's line on the sizes without a clock: not fitting the device, or never synthesized
    (priced in cycles and energy only, kept off the front)."""
    clocks = s.get("clocks", {})
    out = [f"{a}x{a}" for a, c in clocks.items() if c.get("fits") is False]
    never = [f"{a}x{a}" for a, c in clocks.items() if c.get("fits") is None and c.get("clock_mhz") is None]
    text = ""
    if out:
        text += (f" The accelerator at {', '.join(out)} does not fit the device (`qexit synth`): it has no clock, "
                 "so its points keep cycles and energy, are marked `fits: false` and stay off the front.")
    if never:
        text += (f" The accelerator at {', '.join(never)} has no synthesis result (run `qexit synth --top "
                 "accelerator`, or give --clock-mhz): its points have no latency and stay off the front.")
    return text


def confirm_text(confirmed: list[dict]) -> str:
    """The README's section on the RTL runs of the front's machines (empty without any)."""
    if not confirmed:
        return ""
    rows = [[f"{c['rows']}x{c['cols']}", f"{c['bandwidth']:g}", f"{c['matched']}/{c['images']}",
             f"{c['decisions_matched']}/{c['decisions']}", f"{c['cycles_measured']:,}", f"{c['cycles_predicted']:,}",
             "yes" if c["cycles_equal"] else "**no**", f"{c['wall_s']:.0f}"] for c in confirmed]
    return ("\n## RTL confirmation of the front's machines\n\nThe first test images through the early-exit RTL on "
            "each machine, checked as `qexit verify run` checks them: exit layer and class, every decision word, "
            "and each image's cycles against the cost model that priced the sweep.\n\n"
            + markdown_table(["array", "B/cycle", "images matched", "decisions", "cycles measured", "cycles predicted",
                              "equal", "seconds"], rows) + "\n")


def confirmations_text(confirmed: list[dict]) -> str:
    """The console lines on the RTL runs of the front's machines."""
    return "\n".join(
        f"  RTL {c['rows']}x{c['cols']} at {c['bandwidth']:g} B/cycle: {c['matched']}/{c['images']} images, "
        f"{c['decisions_matched']}/{c['decisions']} decisions, cycles {c['cycles_measured']:,} measured, "
        f"{c['cycles_predicted']:,} predicted ({'equal' if c['cycles_equal'] else 'DIFFERENT'})" for c in confirmed)
