"""`qexit verify block --images K` runs the layer engine (hw/rtl/layer.py: the GEMM engine, the
LayerNorm, softmax, GELU and add units, an on-chip scratchpad and a controller that runs the
program of descriptors of hw/program.py) on K test images, from pixels to logits: one start
per segment (patch embedding, each encoder layer, head), weights and parameters streamed from
the external-memory model (`--bandwidth B --latency L`). Every layer's output tokens, the
embedding and the logits are compared with model/golden.py (equal integers), and every
segment's cycles, start to done, with the cycle model of hw/program.py, which reads the same
program. `--layers N` stops after N layers (no head). `--random --width W --heads H --mlp F
--tokens T --seed S` builds a random, valid IntModel of that size (3 channels, patch 32, as
ViT-B/32) instead of the shipped one, and runs it on random images. Writes
reports/verify-block/summary.json and a README with the per-layer table; exits 1 on any
mismatch or cycle error.
"""
from __future__ import annotations

from pathlib import Path

import torch

from qexit.commands.common import INTMODEL_DEFAULT, positive
from qexit.commands.verify.shared import (
    INTMODEL_HELP, add_machine, add_simulator, first_test_images, intmodel, machine, stream_text, write_report
)
from qexit.reports import report_dir
from sim import block as layer, simulator as runner

HELP = "the layer engine: whole encoder layers from pixels to logits, bit-exact and cycle-exact"


def add_arguments(p):
    p.add_argument("--images", type=positive, default=1, help="images (the first K of the test split, or random)")
    p.add_argument("--layers", type=positive, default=None, help="encoder layers to run (default: all, then the head)")
    p.add_argument("--intmodel", type=Path, default=INTMODEL_DEFAULT, help=INTMODEL_HELP)
    add_machine(p, bandwidth=4.0, square=True)
    add_simulator(p)
    p.add_argument("--random", action="store_true", help="a random IntModel of the size below instead of the shipped one")
    p.add_argument("--width", type=positive, default=768, help="--random: model width")
    p.add_argument("--heads", type=positive, default=12, help="--random: attention heads")
    p.add_argument("--mlp", type=positive, default=3072, help="--random: MLP width")
    p.add_argument("--tokens", type=positive, default=50, help="--random: tokens (1 + a square number of patches)")
    p.add_argument("--seed", type=int, default=0, help="--random: seed of the model and the images")
    p.add_argument("--waves", action="store_true", help="write a waveform (FST) into the report folder")


def run(args) -> int:
    m = machine(args)
    runner.pick(args.simulator)
    torch.set_num_threads(1)
    if args.random:
        im = layer.random_block_model(args.width, args.heads, args.mlp, args.tokens, args.layers or 1, args.seed)
        g = torch.Generator().manual_seed(args.seed)
        c = im.config
        images = torch.randint(0, 256, (args.images, c.channels, c.image_size, c.image_size), dtype=torch.uint8,
                               generator=g)
        what = f"a random IntModel (width {c.width}, {c.heads} heads, MLP {c.hidden}, {c.tokens} tokens)"
    else:
        im = intmodel(args.intmodel)
        images = first_test_images(args.images)
        what = "the shipped IntModel"
    layers = args.layers if args.layers else None
    stream = stream_text(m)
    print(f"layer engine {m.rows}x{m.cols}: {what}, {len(images)} image(s), "
          f"{layers or im.config.depth} layer(s){'' if layers else ' and the head'}, weights streamed {stream}",
          flush=True)
    with report_dir("verify-block") as folder:
        res = layer.verify_block(im, images, m, layers, args.simulator, args.waves, folder if args.waves else None)
        segments = layer.by_segment(res)
        rows = []
        for name, s in segments.items():
            util = s["macs"] / (m.rows * m.cols * max(1, s["cycles_measured"]))
            rows.append([name, f"{s['matched']}/{s['total']}", s["cycles_measured"], s["cycles_predicted"],
                         f"{100 * util:.1f}%"])
            print(f"  {name:<6} bit-exact {s['matched']}/{s['total']}  cycles {s['cycles_measured']} "
                  f"(predicted {s['cycles_predicted']})  utilization {100 * util:.1f}%")
        print(f"bit-exact: {res.matched}/{res.total}; cycles measured {res.cycles_measured}, predicted "
              f"{res.cycles_predicted}; utilization {100 * res.utilization:.2f}%; on-chip {res.onchip_bits:,} bits; "
              f"predictions equal the golden model's: {res.predictions_matched}")
        if res.log:
            print(res.log)
        summary = {**res.summary(), "rows": m.rows, "cols": m.cols, "bandwidth": m.bandwidth, "latency": m.latency,
                   "model": what, "segments": segments}
        write_report(folder, summary, f"block: {res.matched}/{res.total} integers bit-exact, cycles "
                     f"{res.cycles_measured} measured = {res.cycles_predicted} predicted", [
            f"The layer engine ({m.rows}x{m.cols}) ran {what} on {res.images} image(s), one start per segment, "
            f"with the weights streamed {stream}. Every layer's tokens (and the embedding and logits) were "
            "compared with `model/golden.py`; every segment's cycles (start to done) with `hw/program.py`'s cycle "
            "model. Utilization is all MACs over R·C·cycles, every cycle counted (parameter and activation moves, "
            "LayerNorm, softmax, GELU, add, weight stalls); loading the program, streams and image before each "
            "start is not counted."],
            [(["segment", "bit-exact", "cycles measured", "cycles predicted", "utilization"], rows)])
    return 0 if res.passed else 1
