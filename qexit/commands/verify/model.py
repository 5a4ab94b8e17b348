"""`qexit verify model --images K` runs every operation of the shipped IntModel on K test images
through the RTL: each GEMM (patch embedding, QKV, attention per head, projection, FC1, FC2,
head, logits) on the GEMM engine with its real weights streamed, and each LayerNorm, softmax,
GELU and residual add on its unit, fed the golden model's own inputs; every output integer,
and the predictions, must equal model/golden.py's. The host sequences the operations here, one
block at a time; the layer engine, whose controller chains the same operations on chip, runs
the model in `verify block`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from qexit.commands.common import INTMODEL_DEFAULT, positive
from qexit.commands.verify.shared import (
    INTMODEL_HELP, add_machine, add_simulator, first_test_images, intmodel, machine, stream_text, write_report
)
from qexit.reports import report_dir
from sim import model as model_ops, simulator as runner

HELP = "every operation of the IntModel on real test images, through the RTL"


def add_arguments(p):
    p.add_argument("--images", type=positive, default=2, help="test images (the first N of the test split)")
    p.add_argument("--intmodel", type=Path, default=INTMODEL_DEFAULT, help=INTMODEL_HELP)
    add_machine(p, bandwidth=4.0)
    add_simulator(p)


def run(args) -> int:
    m = machine(args)
    runner.pick(args.simulator)
    im = intmodel(args.intmodel)
    images = first_test_images(args.images)
    torch.set_num_threads(1)
    stream = stream_text(m)
    print(f"verifying every operation of the IntModel on {len(images)} test image(s), "
          f"{m.rows}x{m.cols} engine, weights streamed {stream}", flush=True)
    with report_dir("verify-model") as folder:
        res = model_ops.verify_model_ops(im, images, m, simulator=args.simulator)
        for kind, v in res.by_op.items():
            print(f"  {kind:<10} bit-exact {v['matched']}/{v['total']}")
        print(f"bit-exact: {res.matched}/{res.total}; GEMM cycles measured {res.cycles_measured}, predicted "
              f"{res.cycles_predicted} ({res.cycle_errors} case(s) off); predictions equal the golden model's: "
              f"{res.predictions_matched}")
        if not res.passed:
            print(res.log or "(no simulator log)")
        summary = {**res.summary(), "rows": m.rows, "cols": m.cols, "bandwidth": m.bandwidth, "latency": m.latency}
        write_report(folder, summary,
                     f"model: {res.matched}/{res.total} integers bit-exact on {res.images} test image(s)", [
            f"Every operation of the IntModel ran on its RTL block (GEMMs on the {m.rows}x{m.cols} GEMM engine with "
            f"the real weights streamed {stream}; LayerNorm, softmax, GELU and add on their units), fed the golden "
            "model's own inputs, and every output was compared with `model/golden.py`. The host sequenced the "
            "operations here; `qexit verify block` runs the same model on the layer engine, whose controller "
            "chains them on chip.",
            f"GEMM cycles measured {res.cycles_measured}, predicted {res.cycles_predicted}; predictions equal the "
            f"golden model's: {res.predictions_matched}."],
            [(["operation", "matched", "total"], [[k, v["matched"], v["total"]] for k, v in res.by_op.items()]),
             (["layer", "matched", "total"], [[k, v["matched"], v["total"]] for k, v in res.by_layer.items()])])
    return 0 if res.passed else 1
