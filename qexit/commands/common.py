"""Options and loaders shared by several subcommands."""
from __future__ import annotations

from functools import partial
import argparse
from pathlib import Path

from model.checkpoint import SHIPPED_WEIGHTS, load_checkpoint
from model.clip import clip_crop, load_clip
from model.data import Dataset, folder_classes, load_dataset
from model.errors import QexitError

INTMODEL_DEFAULT = Path("reports") / "quantize" / "intmodel.pt"
EXIT_PATH_DEFAULT = Path("reports") / "exits" / "exit_path.pt"


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


def add_head_args(p: argparse.ArgumentParser, default_macs: str) -> None:
    """--head and --head-macs: how the exit heads' dense layers are built (hw/rtl/head.py)."""
    p.add_argument("--head", choices=("mac", "da4ml"), default="mac",
                   help="the exit head's dense layers: 'mac' (weights in a ROM, --head-macs multipliers) or "
                        "'da4ml' (constant-matrix adder graphs: a few cycles, but a large design per candidate "
                        "and tens of seconds of da4ml solving each)")
    p.add_argument("--head-macs", type=positive, default=None,
                   help=f"--head mac: the head's int8 multipliers (default: {default_macs})")


def head_macs(args, default: int) -> int | None:
    """The head's multipliers for ``hw.rtl.head.head_dense_plan`` (None: da4ml)."""
    return None if args.head == "da4ml" else (args.head_macs or default)


def parse_assignment(text: str) -> list[tuple[int, int]]:
    """--assignment W:A,W:A,...: (weight bits, activation bits) per block (checked by
    ``model.quantize.check_widths`` against the model)."""
    try:
        return [(int(w), int(a)) for w, a in (pair.split(":") for pair in text.split(","))]
    except ValueError:
        raise QexitError(f"--assignment {text!r} must be W:A pairs, one per block, e.g. 8:8,8:8,6:6,4:4") from None


def model_name(args) -> str:
    """The model a report names: --model, or the checkpoint (relative to the working folder when inside it)."""
    if args.model:
        return args.model
    path = Path(args.checkpoint).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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
    crop = None
    if clip_folder(args) is not None:
        crop = partial(clip_crop, size=size)
    return load_dataset(split, args.data, size, ch, crop).subset(n)
