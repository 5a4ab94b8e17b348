"""Throughput of the integer golden model against the FP32 model and the paper's dynamic INT8.

Prints images/s for each and the ratios (machines here are noisy: quote the ratios).
Run: .venv/bin/python benchmarks/bench_golden.py [--images 1000] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.golden import run_batched
from model.quantize import dynamic_int8, quantize
from model.train import evaluate


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint()
    test = load_fashion_mnist("test").subset(args.images)
    im = quantize(model, load_fashion_mnist("gate").images[:256])
    dyn = dynamic_int8(model)
    with torch.no_grad():
        t_fp32 = timed(lambda: evaluate(model, test))
        t_dyn = timed(lambda: evaluate(dyn, test))
    t_int = timed(lambda: run_batched(im, test.images))
    n = len(test)
    print(f"{n} images, {args.threads} thread(s)")
    for name, t in (("fp32", t_fp32), ("dynamic int8", t_dyn), ("golden int8 (int64 tensors)", t_int)):
        print(f"  {name:30s} {n / t:9.1f} images/s")
    print(f"golden / fp32 time ratio: {t_int / t_fp32:.1f}x; golden / dynamic: {t_int / t_dyn:.1f}x")


if __name__ == "__main__":
    main()
