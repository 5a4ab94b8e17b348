"""Run the whole flow on the embedded default and gather reports/index.md.

Steps: eval (FP32 top-1 of the shipped weights) → quantize (IntModel, both INT8 modes, QIRC)
→ exits (LRA-EE on that IntModel, with the fixed-point head) → hls (the exit head through hls4ml,
C-simulated bit-exact on real tokens) → synth (ECP5 resources and Fmax) → cost (the exits'
routing in cycles and energy on the layer engine, full depth against early exit) → verify gemm (the model's GEMM shapes on an 8x8 array with
the weights streamed, RTL bit-exact and cycle-exact) → verify units (the streaming units on
random rows, bit-exact) → verify comparator (the exit comparator RTL on the whole test split's
head outputs) → verify block (the layer engine runs the shipped IntModel on one test
image from pixels to logits: every layer's tokens and the logits bit-exact against the golden
model, every segment's cycles equal to the program's cycle model) → verify run (the early-exit
accelerator in RTL, engine + exit head + comparator, on a few test images: exit layers, classes
and decisions against the reference, cycles against the cost model). Each step writes
reports/<step>/; a step that fails stops the flow with its one-line error.

With --model clip:DIR --data DIR the model steps run on a local CLIP folder instead: eval,
quantize, exits and cost (its cycles and energy on the layer engine, pre-LN and activation
table included). The RTL checks and synthesis are left out (at 224 px they are hours of
Verilator); index.md then lists only the steps this run wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

from model.checkpoint import SHIPPED_WEIGHTS
from qexit.cli import main as cli_main
from qexit.commands.common import INTMODEL_DEFAULT
from qexit.reports import REPORTS_DIR

HELP = "run the whole flow on the embedded default and write reports/index.md"


def add_arguments(p):
    p.add_argument("--fast", action="store_true", help="subsample the test split (1000 images) for a quick look")
    p.add_argument("--model", default=None, metavar="clip:DIR",
                   help="run eval, quantize, exits and cost on a local Hugging Face or open_clip CLIP folder (with --data) "
                        "instead of the whole flow on the embedded default")
    p.add_argument("--data", type=Path, default=None,
                   help="with --model: an ImageFolder tree with train/, gate/ and test/ sub-folders")


def clip_steps(model: str, data: Path | None, fast: bool) -> list[list[str]]:
    """The model steps on a CLIP folder (module docstring)."""
    m = ["--model", model] + (["--data", str(data)] if data is not None else [])
    n = ["--test-images", "1000"] if fast else []
    return [["eval", *m] + (["--images", "1000"] if fast else []), ["quantize", *m] + n,
            ["exits", *m, "--intmodel", str(INTMODEL_DEFAULT), "--threads", "2"] + n, ["cost", "--quiet", *m]]


def steps(fast: bool) -> list[list[str]]:
    """The flow as the `qexit` command lines a user would type."""
    n = ["--test-images", "1000"] if fast else []
    out = [
        ["eval"] + (["--images", "1000"] if fast else []),
        ["quantize"] + n,
        # two torch threads: the golden model's features are the flow's longest step
        ["exits", "--intmodel", str(INTMODEL_DEFAULT), "--threads", "2"] + n,
        # the exit head through hls4ml (C simulation) on >= 5,000 real token sets
        ["hls", "--quiet"] + (["--sets", "1000"] if fast else []),
        # ECP5 resources and Fmax of the layer engine (4x4, 8x8), GEMM engine and comparator;
        # the committed RTL's results ship in hw/tools/synth_results, so this takes seconds
        ["synth"],
        # cycles and energy of the exits' routing on the layer engine (8x8, 8 B/cycle; the clock
        # is the synthesized Fmax of that size, else the 100 MHz target)
        ["cost", "--quiet"],
        # the shipped model's own GEMM shapes (QKV, proj, fc1, fc2 at 50 tokens) on an 8x8 array,
        # weights streamed at 4 B/cycle after 20 cycles (an 8x8 tile needs 64 B per 50-cycle period)
        ["verify", "gemm", "--rows", "8", "--cols", "8", "--shapes", "50x64x192,50x64x64,50x64x256,50x256x64",
         "--bandwidth", "4", "--latency", "20"],
        ["verify", "units", "--vectors", "200" if fast else "1000"],
        # the exit comparator on the whole test split's head outputs
        ["verify", "comparator"],
        # the whole model through the layer engine on a real test image, pixels to logits
        ["verify", "block", "--images", "1"],
        # the early-exit accelerator in RTL on a few test images, cycles against the cost model
        ["verify", "run", "--images", "2" if fast else "4"],
    ]
    if not SHIPPED_WEIGHTS.exists():  # train-or-load: the shipped weights are normally there
        out.insert(0, ["train", "--out", str(SHIPPED_WEIGHTS)])
    return out


def run(args) -> int:

    flow = steps(args.fast) if args.model is None else clip_steps(args.model, args.data, args.fast)
    for argv in flow:
        print(f"== qexit {' '.join(argv)}", flush=True)
        rc = cli_main(argv)
        if rc:
            return rc
    rows = write_index(only=None if args.model is None else {a[0] for a in flow}, title=args.model)
    print(f"\n{table_text(rows)}\n\nwrote {REPORTS_DIR / 'index.md'}")
    return 0


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


def _load(root: Path, step: str) -> dict:
    f = root / step / "summary.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "-"


def _steps(root: Path, only: set[str] | None) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (only is None or p.name in only))


def headline_rows(root: Path = REPORTS_DIR, only: set[str] | None = None) -> list[tuple[str, str, str]]:
    """(what, value, source folder) for the figures a reader looks for first; steps that have
    not run (or are not in ``only``) are left out."""
    rows = []
    present = _steps(root, only)
    ev, q, ex, c, sy = (_load(root, k) if k in present else {} for k in ("eval", "quantize", "exits", "cost", "synth"))
    if ev:
        rows.append(("FP32 top-1", _pct(ev.get("top1")), "eval"))
    if q:
        rows.append(("INT8 (integer-only) top-1", _pct(q.get("top1_int8")), "quantize"))
    if ex:
        rows.append(("LRA-EE top-1 / FLOPs saving", f"{_pct(ex.get('top1_lraee'))} / {_pct(ex.get('flops_saving'))}",
                     "exits"))
    if c:
        seed = f" (seed {c.get('seed')})" if "seed" in c else ""
        rows.append((f"cycles per image, full depth -> early exit{seed}",
                     f"{c['cycles_full']:,.0f} -> {c['cycles_exit']:,.0f} ({_pct(c['cycle_saving'])} saved)", "cost"))
        rows.append((f"energy per image, full depth -> early exit{seed}",
                     f"{c['energy_full_pj'] / 1e6:,.1f} -> {c['energy_exit_pj'] / 1e6:,.1f} uJ "
                     f"({_pct(c['energy_saving'])} saved)", "cost"))
        rows.append((f"latency at {c['clock_mhz']:g} MHz / throughput (batch)",
                     f"{c['latency_us']:,.0f} us / {c['throughput_ips']:,.0f} img/s", "cost"))
    if sy:
        rows.append((f"ECP5 {sy.get('device')}: largest layer engine",
                     f"{sy['rows']}x{sy['cols']}, {sy['luts']:,} LUT4, {sy['dsps']} DSP, {sy['brams']} BRAM, "
                     f"Fmax {sy['fmax_mhz']} MHz", "synth"))
    for step in [n for n in present if n.startswith(("verify-", "hls"))]:
        s = _load(root, step)
        if "matched" in s and "total" in s:
            extra = ""
            if "cycles_measured" in s and "cycles_predicted" in s:
                extra = f"; cycles {s['cycles_measured']:,} measured, {s['cycles_predicted']:,} predicted"
            rows.append((f"{step}: bit-exact", f"{s['matched']:,}/{s['total']:,}{extra}", step))
    return rows


def write_index(root: Path = REPORTS_DIR, only: set[str] | None = None, title: str | None = None
                ) -> list[tuple[str, str, str]]:
    """reports/index.md: the headline table, the plots, and one line per step (of ``only``, when
    given: the steps a run wrote). Returns the table."""
    rows = headline_rows(root, only)
    lines = ["# qexit reports" + (f": {title}" if title else ""), "", "| | value | report |", "|---|---|---|"]
    lines += [f"| {what} | {value} | [{src}]({src}/README.md) |" for what, value, src in rows]
    lines.append("")
    for step, png, caption in PLOTS:
        if (root / step / png).exists() and (only is None or step in only):
            lines += [f"## {caption}", "", f"![{caption}]({step}/{png})", ""]
    lines += ["## Every step", ""]
    for d in (root / n for n in _steps(root, only)):
        f = d / "summary.json"
        if not f.exists():
            continue
        s = json.loads(f.read_text())
        flat = {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
        keys = [k for k in HEADLINES.get(d.name, []) if k in flat] or list(flat)[:8]
        head = ", ".join(f"{k}={flat[k]:.4g}" if isinstance(flat[k], float) else f"{k}={flat[k]}" for k in keys)
        lines.append(f"- [{d.name}]({d.name}/README.md): {head}")
    (root / "index.md").write_text("\n".join(lines) + "\n")
    return rows


def table_text(rows: list[tuple[str, str, str]]) -> str:
    w = max((len(r[0]) for r in rows), default=0)
    return "\n".join(f"{what:<{w}}  {value}" for what, value, _ in rows)
