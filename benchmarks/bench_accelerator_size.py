"""The whole accelerator's size (hw/rtl/accelerator.py): Verilog lines and every bit it stores
on chip, memories and registers, block by block (``sim.accelerator.size``, from the elaborated
netlist), for the shipped model with its exit path and for CLIP ViT-B/32's layout.

No ViT-B/32 weights can be downloaded here: its backbone is a random model of the exact layout
(``bench_clip_cost.VIT_B32``) with random exit heads at the paper's candidate layers 8, 10 and 11,
quantized as a trained model would be. The sizes depend on the layout, not on the weight values.
Weights, programs, parameters and the heads' blocks stream through the memory port: nothing on
chip is a weight ROM.

    python benchmarks/bench_accelerator_size.py [--arrays 8,16] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_clip_cost import CANDIDATES, VIT_B32, exit_head
from hw.rtl.emit import to_verilog
from model.exits import exit_path
from model.quantize import SHIPPED_INTMODEL, load_intmodel, random_intmodel
from hw.program import accelerator as design
from hw.rtl.accelerator import top_name
from sim.accelerator import size

SHIPPED_EXIT_PATH = Path("reports/exits/exit_path.pt")
GOAL_BITS = 4 * 2 ** 20


def measure(label: str, im, ep, lanes: int) -> dict:
    t0 = time.time()
    a = design(im, ep, lanes)
    row = {"model": label, "array": f"{lanes}x{lanes}", **size(a, to_verilog(a, top_name(lanes)))}
    row.update(within_4_mbit=row["onchip_bits"] <= GOAL_BITS, seconds=round(time.time() - t0, 1))
    print(f"  {label}, {lanes}x{lanes}: {row['verilog_lines']:,} Verilog lines; on chip {row['onchip_bits']:,} bits "
          f"({row['onchip_bits'] / 2 ** 20:.2f} Mbit: memories {row['memory_bits']:,}, "
          f"registers {row['register_bits']:,})")
    return row


def vit_b32_exit_path(im) -> exit_path.ExitPath:
    """Random heads at the paper's candidates, every exit on (the thresholds do not size anything)."""
    head = exit_head(im, CANDIDATES)
    k, none = len(CANDIDATES), torch.zeros(0, dtype=torch.int64)
    return exit_path.ExitPath(head, list(CANDIDATES), [0] * k, im.config.depth, im.config.num_patches + 1,
                              torch.zeros(0, k, im.config.num_classes, dtype=torch.int32),
                              torch.zeros(0, k, dtype=torch.int32), none, none)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arrays", default="8,16", help="ViT-B/32 array sizes L (LxL), comma-separated")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bench_accelerator_size.json"))
    args = ap.parse_args()
    shipped = load_intmodel(SHIPPED_INTMODEL)
    rows = [measure("shipped model", shipped, exit_path.load(SHIPPED_EXIT_PATH), 8)]
    vit = random_intmodel(VIT_B32, seed=0)
    ep = vit_b32_exit_path(vit)
    rows += [measure("CLIP ViT-B/32 layout", vit, ep, int(L)) for L in args.arrays.split(",")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"goal_bits": GOAL_BITS, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
