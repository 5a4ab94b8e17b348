"""Verify the hardware under cocotb against the integer golden model: every output integer
equal, and every cycle count the cycle model's. One verb per rung of the ladder, each with its
own --help: gemm (the GEMM engine on synthetic operands), units (the streaming units and the
exit comparator on random rows), model (every operation of the IntModel on its RTL block, the
host sequencing them), block (the layer engine, whole layers from pixels to logits),
comparator (the exit decisions of the test split), head (the exit head as RTL on real tokens)
run (the whole accelerator, image by image) and faults (its error codes). Each writes reports/verify-<verb>/
(summary.json and README.md) and exits 1 on any mismatch or cycle error.
"""
from __future__ import annotations

import argparse

# `run` is both a verb (the module) and this package's entry point (the function below)
from qexit.commands.verify import block, comparator, faults, gemm, head, model, run as run_verb, units

VERBS = {"gemm": gemm, "units": units, "model": model, "block": block, "comparator": comparator, "head": head,
         "run": run_verb, "faults": faults}

HELP = ("bit-exact RTL checks under cocotb: `verify gemm` (the GEMM engine), "
        "`verify units` (requantizer, add, GELU, LayerNorm, softmax, exit comparator), "
        "`verify model` and `verify block` (the IntModel through the RTL), "
        "`verify comparator` (the exit decisions of the test split), `verify head` (the exit head as RTL), "
        "`verify run` (the whole accelerator, image by image), `verify faults` (its error codes)")


def add_arguments(p):
    sub = p.add_subparsers(dest="verb", metavar="<verb>", required=True)
    for name, verb in VERBS.items():
        v = sub.add_parser(name, help=verb.HELP, description=verb.__doc__,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        verb.add_arguments(v)
        v.set_defaults(_verb=verb.run)


def run(args) -> int:
    return args._verb(args)
