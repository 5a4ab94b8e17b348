"""The cost model at real CLIP ViT-B/32 size: cycles and energy per image, full depth
against the paper's operating point (LRA-EE, 13.38% fewer FLOPs on ImageNet-1K).

No CLIP weights can be downloaded here, so the backbone is a random model of ViT-B/32's exact
layout (224 px, patch 32, width 768, 12 layers of 12 heads, MLP 3072, pre-LN, quick_gelu,
projection 512, 1,000 classes), quantized like a trained one (``random_intmodel``): the cost
model's cycles and energy depend on the shapes and the program, not on the weights' values. The
exit heads (SSA MLP, hidden 128, on the paper's candidate layers 8, 10 and 11; Layer 9 is pruned
in the paper) are random ones quantized on this model's tokens, as the tests' exit paths are. They
run as the accelerator runs them: one head of L multipliers whose block (scalars, LayerNorm words,
fc1 and fc2 rows, the 1,000 class embeddings) streams through the memory port per decision
(``StreamDense``).

The paper names the candidate layers but its text lost the per-layer shares of Figure 2(b). This
backs a distribution out of the 13.38% FLOPs saving: equal shares at layers 8, 10 and 11, their
sum ``a`` solved (bisection) so that the expected FLOPs, heads included (``model.flops``), are
86.62% of full depth; the rest run to full depth. Other shapes of the same saving (more at 8,
less at 11) move the cycles by the same FLOPs-weighted amount, to first order.

Run: .venv/bin/python benchmarks/bench_clip_cost.py [--machines 8x8@8,16x16@16] [--out FILE]
Prints the table and writes benchmarks/results/bench_clip_cost.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hw import cost
from hw.cost import tables
from hw.rtl.dense import StreamDense
from model import flops
from model.clip import CLIP_MEAN, CLIP_STD
from model.exits import fixed
from model.exits.gate import Gate
from model.exits.heads import HEAD_HIDDEN, ExitHeads
from model.golden import Golden
from model.quantize import random_intmodel
from model.vit import ViTConfig

VIT_B32 = ViTConfig(image_size=224, patch=32, channels=3, width=768, depth=12, heads=12, mlp_ratio=4, embed_dim=512,
                    num_classes=1000, pre_ln=True, act="quick_gelu", pixel_mean=CLIP_MEAN, pixel_std=CLIP_STD)
CANDIDATES = (8, 10, 11)
PAPER_SAVING = 0.1338


def backed_out_distribution(cfg: ViTConfig, candidates=CANDIDATES, saving: float = PAPER_SAVING) -> list[float]:
    """Equal shares a/3 at the candidates, 1 - a at full depth, with 1 - E[FLOPs]/full = saving."""
    f = flops.early_exit_flops(cfg, list(candidates), HEAD_HIDDEN)
    full = flops.full_depth_flops(cfg)

    def save(a):
        return 1 - (sum(a / len(candidates) * x for x in f[:-1]) + (1 - a) * f[-1]) / full
    lo, hi = 0.0, 1.0
    if save(hi) < saving:
        raise SystemExit(f"no distribution over {candidates} saves {saving:.2%}")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if save(mid) < saving else (lo, mid)
    a = (lo + hi) / 2
    return [a / len(candidates)] * len(candidates) + [1 - a]


def exit_head(im, candidates, images: int = 8):
    """A random SSA head and gate for ``candidates``, quantized on the model's own tokens."""
    cfg = im.config
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (images, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g)
    out = Golden(im).forward(pixels)
    sums = [fixed.token_sums(out.blocks[k - 1]) for k in candidates]
    s, v = torch.stack([a for a, _ in sums], 1), torch.stack([b for _, b in sums], 1)
    torch.manual_seed(0)
    heads = ExitHeads(len(candidates), cfg.width, cfg.embed_dim, hidden=HEAD_HIDDEN, seed=1)
    gate = Gate(torch.tensor([[4.0, 6.0, -1e-4]] * len(candidates)), torch.tensor([-3.0] * len(candidates)))
    s_x = [im.scales[f"b{k - 1}.x_out"] for k in candidates]
    return fixed.quantize_head(heads, gate, torch.randn(cfg.num_classes, cfg.embed_dim), s_x, s, v, cfg.num_patches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", default="8x8@8,16x16@16", help="LxL@bytes-per-cycle, comma-separated")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_clip_cost.json"))
    args = ap.parse_args()
    t0 = time.time()
    im = random_intmodel(VIT_B32, seed=0)
    head = exit_head(im, CANDIDATES)
    fractions = backed_out_distribution(VIT_B32)
    layers = list(CANDIDATES) + [VIT_B32.depth]
    dist = cost.Distribution(tuple(layers), tuple(fractions), CANDIDATES)
    f = flops.early_exit_flops(VIT_B32, list(CANDIDATES), HEAD_HIDDEN)
    flops_saving = 1 - sum(x * p for x, p in zip(f, fractions)) / flops.full_depth_flops(VIT_B32)
    rows = []
    for spec in args.machines.split(","):
        size, bw = spec.split("@")
        lanes = int(size.split("x")[0])
        machine = cost.Machine(lanes, float(bw), 20, 100.0)
        c = cost.build(im, machine, tables.load(), {k: StreamDense(lanes) for k in CANDIDATES}, head)
        full = c.route_full()
        c_full, e_full = c.cycles(full), c.energy_pj(full)
        ex = cost.expected(c, dist)
        rows.append({"array": f"{lanes}x{lanes}", "bandwidth": float(bw), "clock_mhz": 100.0,
                     "cycles_full": c_full, "cycles_exit": ex["cycles"], "cycle_saving": 1 - ex["cycles"] / c_full,
                     "energy_full_uj": e_full / 1e6, "energy_exit_uj": ex["energy_pj"] / 1e6,
                     "energy_saving": 1 - ex["energy_pj"] / e_full,
                     "latency_full_ms": c_full / 100.0 / 1e3, "latency_exit_ms": ex["cycles"] / 100.0 / 1e3})
    result = {"model": "CLIP ViT-B/32 layout (random weights, quantized)", "config": VIT_B32.to_dict(),
              "candidates": list(CANDIDATES), "distribution": dict(zip(map(str, layers), fractions)),
              "flops_saving": flops_saving, "paper_flops_saving": PAPER_SAVING, "machines": rows,
              "energy_table": "horowitz_45nm", "seconds": round(time.time() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ViT-B/32 layout; exits at {list(CANDIDATES)}: "
          + ", ".join(f"{k}: {p:.2%}" for k, p in zip(layers, fractions)) + f" (FLOPs saving {flops_saving:.2%})")
    for r in rows:
        print(f"  {r['array']} @ {r['bandwidth']:g} B/cycle, 100 MHz: full {r['cycles_full']:,} cycles "
              f"({r['latency_full_ms']:.2f} ms), {r['energy_full_uj']:,.1f} uJ -> exit {r['cycles_exit']:,.0f} "
              f"({r['latency_exit_ms']:.2f} ms), {r['energy_exit_uj']:,.1f} uJ: {r['cycle_saving']:.2%} fewer cycles, "
              f"{r['energy_saving']:.2%} less energy")
    print(f"wrote {args.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
