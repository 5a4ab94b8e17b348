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
from qexit.commands.common import INTMODEL_OUT
from qexit.render import report as render
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
            ["exits", *m, "--intmodel", str(INTMODEL_OUT), "--threads", "2"] + n,
            # no ViT-B/32-size accelerator is synthesized: the time figures at a 100 MHz what-if
            ["cost", "--quiet", "--intmodel", str(INTMODEL_OUT), "--clock-mhz", "100", *m]]


def steps(fast: bool) -> list[list[str]]:
    """The flow as the `qexit` command lines a user would type."""
    n = ["--test-images", "1000"] if fast else []
    out = [
        ["eval"] + (["--images", "1000"] if fast else []),
        ["quantize"] + n,
        # two torch threads: the golden model's features are the flow's longest step
        ["exits", "--threads", "2"] + n,     # on the shipped IntModel
        # the exit head through hls4ml (C simulation) on >= 5,000 real token sets
        ["hls", "--quiet"] + (["--sets", "1000"] if fast else []),
        # ECP5 resources and Fmax of the whole accelerator, each unit (4x4, 8x8), the GEMM engine
        # and the comparator; the committed RTL's results ship in hw/tools/synth_results,
        # so this takes seconds
        ["synth"],
        # cycles and energy of the exits' routing on the whole accelerator at 4x4 (8 B/cycle), the
        # largest that fits the LFE5U-85F, priced at the Fmax synth reached for it (clock_source "synth")
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
    print(f"\n{render.table_text(rows)}\n\nwrote {REPORTS_DIR / 'index.md'}")
    return 0


def _load(root: Path, step: str) -> dict | None:
    f = root / step / "summary.json"
    return json.loads(f.read_text()) if f.exists() else None


def _steps(root: Path, only: set[str] | None) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (only is None or p.name in only))


def write_index(root: Path = REPORTS_DIR, only: set[str] | None = None, title: str | None = None
                ) -> list[tuple[str, str, str]]:
    """reports/index.md: the headline table, the plots, and one line per step (of ``only``, when
    given: the steps a run wrote). Returns the table."""
    summaries = {step: _load(root, step) for step in _steps(root, only)}
    plots = [(step, png, caption) for step, png, caption in render.PLOTS
             if step in summaries and (root / step / png).exists()]
    (root / "index.md").write_text(render.index(summaries, plots, title))
    return render.headline_rows(summaries)
