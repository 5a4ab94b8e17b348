"""Options and loaders shared by several subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path

from hw.cost import Machine
from hw.tools import synth as synthesis
from model.checkpoint import SHIPPED_WEIGHTS, load_checkpoint
from model.clip import load_clip
from model.data import Dataset, folder_classes, load_images
from model.errors import QexitError
from model.quantize import SHIPPED_INTMODEL

# every step after quantize reads the shipped IntModel by default (the same integers on every CPU);
# `qexit quantize` writes its own to INTMODEL_OUT
INTMODEL_DEFAULT = SHIPPED_INTMODEL
INTMODEL_OUT = Path("reports") / "quantize" / "intmodel.pt"
EXIT_PATH_DEFAULT = Path("reports") / "exits" / "exit_path.pt"


MACHINE_OPTIONS = ("rows", "cols", "bandwidth", "latency", "clock")


def add_machine_args(p: argparse.ArgumentParser, *, rows: int = 8, bandwidth: float | None = 8.0, latency: int = 20,
                     clock_mhz: float | None = 100.0, synth: bool = False, square: bool = True,
                     options: tuple[str, ...] = MACHINE_OPTIONS) -> None:
    """Declare the options of the machine a step runs or prices; ``machine_from_args`` reads them.

    ``add_machine_args(p, *, rows=8, bandwidth=8.0, latency=20, clock_mhz=100.0, synth=None,
    square=True, options=MACHINE_OPTIONS)`` adds, of ``options``:

    * "rows", "cols": ``--rows R`` and ``--cols C``, the array (default ``rows`` for R and R for C;
      a step that declares "rows" alone has C = R). ``square``: the step needs R = C (the layer
      engine), which ``machine_from_args`` checks; False for the GEMM engine (any R x C);
    * "bandwidth": ``--bandwidth B``, the weight stream in bytes per cycle (fractions allowed);
      default ``bandwidth``; None: a source that always has the next word;
    * "latency": ``--latency N``, the weight stream's first-word latency in cycles (default
      ``latency``);
    * "clock": ``--clock-mhz F``, the clock that turns cycles into time (default ``clock_mhz``).
      With ``synth``, ``--clock-mhz`` is a what-if (``clock_source`` "user") and the clock is
      otherwise the synthesized Fmax of the R x R accelerator (``hw.tools.synth.clock``: the
      shipped result of exactly that Verilog, or ``--synth PATH``, a ``qexit synth`` summary);
      ``clock_mhz`` must then be None and ``machine_from_args`` needs the IntModel and exit path.

    An option left out of ``options`` takes the default given here in ``machine_from_args``.
    Values are checked there (``hw.cost.Machine``), each a one-line ``QexitError``; a step that
    reads only part of the machine (the clock's source: ``clock_from_args``) reads it there too."""
    unknown = set(options) - set(MACHINE_OPTIONS)
    if unknown:
        raise ValueError(f"unknown machine options {sorted(unknown)}; known: {MACHINE_OPTIONS}")
    if synth and clock_mhz is not None:
        raise ValueError("add_machine_args: with synth, the clock comes from it (give clock_mhz=None)")
    note = " (the layer engine is square: R = C)" if square else ""
    if "rows" in options:
        p.add_argument("--rows", type=int, default=rows, help=f"array rows R{note}")
    if "cols" in options:
        p.add_argument("--cols", type=int, default=None, help=f"array columns C (default: R, {rows} when --rows is not given)")
    if "bandwidth" in options:
        p.add_argument("--bandwidth", type=float, default=bandwidth,
                       help="weight stream from external memory, bytes per cycle"
                            + ("" if bandwidth is not None else " (None: a source that always has the next word)"))
    if "latency" in options:
        p.add_argument("--latency", type=int, default=latency, help="weight stream's first-word latency, cycles")
    if "clock" in options:
        p.add_argument("--clock-mhz", type=float, default=clock_mhz,
                       help="clock for latency and throughput, MHz" + (
                           " (a what-if); not given: the Fmax synthesis measured for this accelerator (the shipped "
                           "result for this array size, or --synth)" if synth else ""))
        if synth:
            p.add_argument("--synth", type=Path, default=None,
                           help="a `qexit synth` summary.json to take the clock from (default: the shipped synthesis "
                                "result of this exact accelerator, hw/tools/synth_results)")
    p.set_defaults(machine_defaults={"rows": rows, "bandwidth": bandwidth, "latency": latency,
                                     "clock_mhz": clock_mhz, "square": square})


def clock_from_args(args, im=None, ep=None) -> tuple[float, dict]:
    """The clock in MHz and where it comes from (``{"clock_source": ...}``): "user" for
    --clock-mhz (or a step's fixed clock), else "synth", the Fmax of the R x R accelerator for
    ``im`` and ``ep`` (``hw.tools.synth.clock``; a size without a result is a one-line error)."""
    d = _machine_defaults(args)
    if getattr(args, "clock_mhz", None) is not None:
        return args.clock_mhz, {"clock_source": "user"}
    if d["clock_mhz"] is not None:
        return d["clock_mhz"], {"clock_source": "user"}
    if im is None and getattr(args, "synth", None) is None:
        raise ValueError("clock_from_args: a step that prices at the synthesized clock passes the IntModel")
    found = synthesis.clock(im, ep, getattr(args, "rows", d["rows"]), getattr(args, "synth", None))
    return found.pop("clock_mhz"), found


def _machine_defaults(args) -> dict:
    return getattr(args, "machine_defaults", None) or {
        "rows": Machine.lanes, "bandwidth": Machine.bandwidth, "latency": Machine.latency,
        "clock_mhz": Machine.clock_mhz, "square": True}


def machine_from_args(args, *, scalable: bool = False, im=None, ep=None, clock_mhz: float | None = None) -> Machine:
    """The ``hw.cost.Machine`` of the options ``add_machine_args`` declared: an R x C array, the
    weight stream, the clock (``clock_mhz`` when the step has it already, else
    ``clock_from_args``, which takes ``im`` and ``ep``); ``scalable``: precision-scalable PEs. A bad
    value (R or C < 1, R != C where the step declared ``square``, a bandwidth or clock <= 0, a
    negative latency) is a one-line ``QexitError``."""
    d = _machine_defaults(args)
    rows = getattr(args, "rows", d["rows"])
    cols = getattr(args, "cols", None)
    cols = rows if cols is None else cols
    if d["square"] and rows != cols:
        raise QexitError(f"the layer engine needs a square array (--rows {rows} --cols {cols}): a GEMM's "
                         f"output words are the next GEMM's input words")
    return Machine(rows, getattr(args, "bandwidth", d["bandwidth"]), getattr(args, "latency", d["latency"]),
                   clock_mhz if clock_mhz is not None else clock_from_args(args, im, ep)[0], scalable, cols)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=SHIPPED_WEIGHTS,
                   help="FP32 checkpoint written by `qexit train` (default: the shipped weights)")
    p.add_argument("--model", default=None, metavar="clip:DIR",
                   help="a local Hugging Face CLIP folder (CLIPModel and tokenizer, save_pretrained) or open_clip folder "
                        "(open_clip_config.json, weights, tokenizer files) instead of "
                        "--checkpoint: zero-shot, class names from --data's test/ sub-folders, images cropped as "
                        "CLIP does (needs pip install -e .[clip])")
    add_data_args(p)


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="a folder with train/, gate/ and test/ sub-folders, each one sub-folder per class "
                        "(default: the embedded Fashion-MNIST)")


def add_exit_path_args(p: argparse.ArgumentParser, intmodel: bool = True) -> None:
    """--exit-path (and --intmodel) of the steps that read `qexit exits`'s exit path."""
    p.add_argument("--exit-path", type=Path, default=EXIT_PATH_DEFAULT,
                   help="the exit path `qexit exits` wrote (int8 mode)")
    if intmodel:
        p.add_argument("--intmodel", type=Path, default=INTMODEL_DEFAULT,
                       help="the IntModel whose tokens feed the head (the one the exits ran on)")


def add_head_args(p: argparse.ArgumentParser, default_macs: str, stream: bool = False) -> None:
    """--head and --head-macs: how the exit heads' dense layers are built (hw/rtl/head.py);
    with ``stream``, also the accelerator's own head, the default."""
    choices = ("stream", "mac", "da4ml") if stream else ("mac", "da4ml")
    p.add_argument("--head", choices=choices, default=choices[0],
                   help=("the exit head's dense layers: " + ("'stream' (the accelerator's: rows multipliers, its "
                         "constants and weights through the memory port after each candidate layer), " if stream else "")
                         + "'mac' (weights in a ROM, --head-macs multipliers) or 'da4ml' (constant-matrix adder "
                         "graphs: a few cycles, but a large design per candidate and tens of seconds of da4ml "
                         "solving each)"))
    p.add_argument("--head-macs", type=positive, default=None,
                   help=f"--head mac: the head's int8 multipliers (default: {default_macs})")


def head_macs(args, default: int) -> int | None:
    """The head's multipliers for ``hw.rtl.dense.head_dense_plan`` (None: da4ml)."""
    return None if args.head == "da4ml" else (args.head_macs or default)


def parse_assignment(text: str) -> list[tuple[int, int]]:
    """--assignment W:A,W:A,...: (weight bits, activation bits) per block (checked by
    ``model.quantize.check_widths`` against the model)."""
    try:
        return [(int(w), int(a)) for w, a in (pair.split(":") for pair in text.split(","))]
    except ValueError:
        raise QexitError(f"--assignment {text!r} must be W:A pairs, one per block, e.g. 8:8,8:8,6:6,4:4") from None


def report_path(path: Path | str) -> str:
    """A file as a report names it: relative to the working folder when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def model_name(args) -> str:
    """The model a report names: --model, or the checkpoint (``report_path``)."""
    return args.model or report_path(args.checkpoint)


def positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def clip_folder(args) -> Path | None:
    """--model clip:DIR's folder, or None for --checkpoint."""
    spec = getattr(args, "model", None)
    if spec is None:
        return None
    if not spec.startswith("clip:") or not spec[5:]:
        raise QexitError(f"--model {spec!r}: give clip:DIR, a folder saved with CLIPModel.save_pretrained")
    if args.data is None:
        raise QexitError("--model clip:DIR needs --data DIR: the class names are DIR/test's sub-folders")
    return Path(spec[5:])


def load_model(args):
    """(FP32 ViT, checkpoint blob): --checkpoint, or a CLIP folder with --model clip:DIR."""
    folder = clip_folder(args)
    if folder is None:
        return load_checkpoint(args.checkpoint)

    vit, _, _ = load_clip(folder, folder_classes(Path(args.data) / "test"))
    return vit, {"model": args.model}


def load_split(args, split: str, n: int | None = None, cfg=None) -> Dataset:
    size, ch = (cfg.image_size, cfg.channels) if cfg is not None else (28, 1)
    return load_images(split, args.data, size, ch, clip_folder(args) is not None).subset(n)
