"""Throughput of the integer golden model against the FP32 model and the paper's dynamic INT8.

Prints images/s for each and the ratios (machines here are noisy: quote the ratios).
Run: .venv/bin/python benchmarks/bench_golden.py [--images 1000] [--threads 2] [--batches 250,50]
"""
from __future__ import annotations

import argparse
import time

import torch

from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.golden import BATCH, run_batched
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
    ap.add_argument("--batches", default=f"250,{BATCH}", help="golden batch sizes to time (images per forward)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint()
    test = load_fashion_mnist("test").subset(args.images)
    im = quantize(model, load_fashion_mnist("gate").images[:256])
    dyn = dynamic_int8(model)
    with torch.no_grad():
        t_fp32 = timed(lambda: evaluate(model, test))
        t_dyn = timed(lambda: evaluate(dyn, test))
    batches = [int(b) for b in args.batches.split(",")]
    t_int = {b: timed(lambda: run_batched(im, test.images, batch_size=b)) for b in batches}
    n = len(test)
    print(f"{n} images, {args.threads} thread(s)")
    rows = [("fp32", t_fp32), ("dynamic int8", t_dyn)] + [(f"golden int8, batch {b}", t) for b, t in t_int.items()]
    for name, t in rows:
        print(f"  {name:30s} {n / t:9.1f} images/s")
    t = t_int[batches[-1]]
    print(f"golden (batch {batches[-1]}) / fp32 time ratio: {t / t_fp32:.1f}x; golden / dynamic: {t / t_dyn:.1f}x"
          + (f"; batch {batches[0]} / batch {batches[-1]}: {t_int[batches[0]] / t:.2f}x" if len(batches) > 1 else ""))


if __name__ == "__main__":
    main()
