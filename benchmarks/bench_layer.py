"""Whole-layer cycles and utilization of the layer engine against the weight stream's
bandwidth, from the program's cycle model (hw/program.py), which `qexit verify block` checks
against the RTL cycle for cycle.

Utilization = all MACs of the layer over R*C*cycles, every cycle of the segment counted:
parameter and activation moves, the K transpose, LayerNorm, softmax, GELU, add, the weight
stream's stalls and the controller's fetches. Not counted: loading the segment's program
before its start (one word per descriptor).

    python benchmarks/bench_layer.py            # table, JSON and plot in benchmarks/results/
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from hw import program  # noqa: E402
from hw.cost import timeline
from hw.cost.schedule import WeightSource  # noqa: E402
from model.checkpoint import load_checkpoint
from model.data import load_fashion_mnist
from model.quantize import quantize
from sim.block import random_block_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


BANDWIDTHS = [1, 2, 4, 8, 16]
LATENCY = 20
KINDS = ["gemm", "ln", "softmax", "gelu", "add", "transpose", "move", "params", "tap", "end"]


def sweep(im, lanes: int) -> list[dict]:
    plan, segs = program.model_program(im, lanes, layers=1)
    seg = segs[1]
    macs = program.segment_macs(seg)
    rows = []
    for bw in BANDWIDTHS:
        src = WeightSource(bw, LATENCY)
        cycles = sum(timeline.predict(seg, lanes, src))
        shares = timeline.shares(seg, lanes, src)
        rows.append({"bandwidth": bw, "cycles": cycles, "utilization": macs / (lanes * lanes * cycles),
                     "shares": {k: shares.get(k, 0) / cycles for k in KINDS}})
    return rows


def main() -> int:


    torch.set_num_threads(1)
    model, _ = load_checkpoint()
    shipped = quantize(model, load_fashion_mnist("gate").subset(256).images)
    b32 = random_block_model(768, 12, 3072, 50, 1)
    out = {"latency": LATENCY, "vit_b32_16x16": sweep(b32, 16), "shipped_8x8": sweep(shipped, 8)}
    for name, rows in (("ViT-B/32 layer on 16x16", out["vit_b32_16x16"]), ("shipped layer on 8x8", out["shipped_8x8"])):
        print(f"\n{name} (weights after {LATENCY} cycles)")
        print(f"{'B/cycle':>8} {'cycles':>10} {'util':>7} " + " ".join(f"{k:>9}" for k in KINDS[:7]))
        for r in rows:
            print(f"{r['bandwidth']:>8} {r['cycles']:>10,} {100 * r['utilization']:>6.1f}% "
                  + " ".join(f"{100 * r['shares'][k]:>8.1f}%" for k in KINDS[:7]))
    res = Path(__file__).parent / "results"
    res.mkdir(exist_ok=True)
    (res / "bench_layer.json").write_text(json.dumps(out, indent=1) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("vit_b32_16x16", "ViT-B/32 layer, 16x16"), ("shipped_8x8", "shipped layer, 8x8")):
        ax.plot(BANDWIDTHS, [100 * r["utilization"] for r in out[key]], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("weight stream bandwidth (bytes/cycle)")
    ax.set_ylabel("whole-layer utilization (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Layer engine: every cycle counted (hw/program.py)")
    fig.tight_layout()
    fig.savefig(res / "bench_layer.png", dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
