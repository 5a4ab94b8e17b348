"""Top-1 accuracy of an FP32 checkpoint on the test split; writes reports/eval/."""
from __future__ import annotations

from model.train import evaluate
from qexit.commands.common import add_model_args, load_model, load_split, model_name, positive
from qexit.render import eval as render
from qexit.reports import report_dir, write_summary

HELP = "top-1 of the FP32 model on the test split"


def add_arguments(p):
    add_model_args(p)
    p.add_argument("--images", type=positive, default=None, help="evaluate only the first N test images")


def run(args) -> int:
    model, blob = load_model(args)
    test = load_split(args, "test", args.images, model.cfg)
    top1 = evaluate(model, test, progress=True)
    summary = {"top1": top1, "images": len(test), "params": model.num_params(),
               "checkpoint": model_name(args)}
    trained = blob.get("metrics", {})
    with report_dir("eval") as d:
        write_summary(d, summary)
        (d / "README.md").write_text(render.readme(summary, trained, model.cfg.to_dict()))
    print(f"top-1 {top1:.4f} on {len(test)} test images ({model.num_params()} parameters)")
    return 0
