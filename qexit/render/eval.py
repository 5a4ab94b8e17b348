"""The eval step's README.md, from the summary and the checkpoint's training metrics."""
from __future__ import annotations

from qexit.render.markdown import markdown_table


def readme(s: dict, trained: dict, config: dict) -> str:
    rows = [["top-1 (test)", f"{s['top1']:.4f}"], ["images", s["images"]], ["parameters", s["params"]]]
    if "train_time_s" in trained:
        rows += [["training time (s)", trained["train_time_s"]], ["trained on", trained.get("machine", "?")]]
    return ("# FP32 evaluation\n\n" + markdown_table(["", "value"], rows)
            + f"\n\nCheckpoint: `{s['checkpoint']}`; config: `{config}`\n")
