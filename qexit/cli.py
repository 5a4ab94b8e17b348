"""The ``qexit`` console command: one subcommand per step of the flow.

Each subcommand lives in ``qexit/commands/<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. A ``QexitError`` anywhere below is
printed as one line (``qexit: error: ...``) with exit status 2, never as a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from model.errors import QexitError

# Order is the order of the flow; `report` runs the whole of it.
COMMANDS = ["train", "eval", "quantize", "exits", "hls", "cost", "synth", "sweep", "mixed", "rtl", "verify", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qexit",
        description="Early-exit INT8 vision transformers: FP32 model, integer golden model, "
                    "LRA-EE exits, Amaranth RTL verified bit-exact under cocotb, cost reports.",
        epilog="Run `qexit <command> --help` for a command's options. "
               "`qexit report` runs the whole flow on the embedded default (Fashion-MNIST).")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        mod = importlib.import_module(f"qexit.commands.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except QexitError as err:
        print(f"qexit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qexit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
