"""`qexit verify run --images N --seed S --rows R --cols C --bandwidth B --latency L` runs the
whole accelerator in RTL (hw/rtl/accelerator.py, sim/run.py): one start runs a batch of test
images with no host action until done; its RTL sequencer runs each image segment by segment,
after every candidate layer whose exit is on the exit head (hw/rtl/head.py) takes the layer's
tokens and the exit comparator decides, and on exit the sequencer writes the image's result and
goes on to the next. Everything comes through one AXI4 memory port, modelled in HDL with B
bytes/cycle and an L-cycle first-word latency. Images: N test images drawn with seed S (seed
-1: the first N). Every image's exit layer and class must equal the reference (the golden
model's tokens, model/exits/fixed.py and the threshold registers, computed on the host), every
decision word the reference's, every image's cycles (its start to its result's write, from the
RTL's own counter) the cost model's (hw/cost/) for the reference's route, and the control-bus
writes while busy 0. Writes reports/verify-run/summary.json (images, decisions_matched,
matched, total, cycles_measured, cycles_predicted, exit_layers, sequencer,
host_writes_while_busy, cycles_per_second, memory); exits 1 on any mismatch. One exit head
with rows multipliers serves every candidate: its constants, dense rows and class embeddings
stream through the memory port after each candidate layer (no ROM). --model clip:DIR with
--data runs a CLIP-layout model (its IntModel and its exit path) on that folder's test images.
"""
from __future__ import annotations

from pathlib import Path

import torch

from model.data import load_images
from model.quantize import load_intmodel
from model.exits import exit_path
from qexit.commands.common import add_data_args, add_exit_path_args, clip_folder, load_model, positive, report_path
from qexit.commands.verify.shared import (
    add_machine, add_simulator, exit_layers, machine, prose, stream_text, write_report
)
from qexit.reports import report_dir
from hw import program
from sim import dist, run as sim_run, simulator as runner

HELP = "the early-exit accelerator in RTL: engine, exit heads, comparator, sequencer"


def add_arguments(p):
    add_exit_path_args(p)
    p.add_argument("--model", default=None, metavar="clip:DIR",
                   help="the IntModel is a CLIP-layout model's (quantized with `qexit quantize --model clip:DIR`): "
                        "its test images come from --data, cropped as CLIP does")
    add_data_args(p)
    p.add_argument("--images", type=positive, default=20, help="test images to run")
    p.add_argument("--layers", default=None,
                   help="only these candidate layers' exits on (e.g. 2,6; the others off, as a threshold register "
                        "switched off); default: every exit the exit path has on. Each on layer builds a head")
    p.add_argument("--seed", type=int, default=0, help="which test images: a random draw with this seed (-1: the first N)")
    add_machine(p, square=True)
    add_simulator(p)
    p.add_argument("--workers", type=int, default=1,
                   help="processes that run shards at once: 1 runs them here; more start a local Dask cluster")
    p.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="attach to a running Dask scheduler (e.g. tcp://10.0.0.1:8786) instead of a local cluster")
    p.add_argument("--shard-size", type=int, default=10, help="images per shard (a task; written as it finishes)")
    p.add_argument("--work", type=Path, default=Path("reports/.verify-run-shards"),
                   help="where finished shards are kept until the run ends")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished shards in --work (same configuration only) and run the rest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    m = machine(args)
    dist.check_workers(args.workers)
    simulator = runner.pick(args.simulator)
    ep = exit_path.load(args.exit_path)
    layers = None
    if args.layers:
        layers = tuple(exit_layers(args.layers, ep))
        ep = sim_run.only(ep, list(layers))
    clip = clip_folder(args) is not None
    cfg = load_intmodel(args.intmodel, load_model(args)[0].cfg if clip else None).config    # refuses another model's
    n_test = len(load_images("test", args.data, cfg.image_size, cfg.channels, clip))
    n = min(args.images, n_test)
    idx = (torch.arange(n) if args.seed < 0 else
           torch.randperm(n_test, generator=torch.Generator().manual_seed(args.seed))[:n])
    spec = dist.RunSpec(str(args.intmodel), str(args.exit_path), m, layers, args.simulator,
                        None if args.data is None else str(args.data), clip)
    torch.set_num_threads(1)
    on = [ep.layers[k] for k in program.enabled(ep)]
    stream = stream_text(m)
    print(f"early-exit run: {n} test image(s), {m.rows}x{m.cols}, weights streamed {stream}; heads at layers {on}; "
          f"shards of {args.shard_size} on {args.cluster or f'{args.workers} worker(s)'}", flush=True)
    res, t = dist.run(spec, idx.tolist(), args.shard_size, args.workers, args.cluster, args.work, args.resume,
                      not args.quiet)
    s = sim_run.summary(res, t["sim_s"])
    print(f"images matched: {s['matched']}/{s['images']}; decisions bit-exact: {s['decisions_matched']}/"
          f"{s['decisions']}; cycles measured {s['cycles_measured']:,}, predicted {s['cycles_predicted']:,}"
          f" ({'equal' if s['cycles_equal'] else 'DIFFERENT'} image by image); {t['images_computed']} image(s) "
          f"computed in {t['wall_s']:.0f} s")
    for log in s["logs"]:
        print(log)
    with report_dir("verify-run") as folder:
        summary = {**s, "timing": t, "seed": args.seed, "rows": m.rows, "cols": m.cols, "bandwidth": m.bandwidth,
                   "latency": m.latency, "head_macs": m.lanes, "shard_size": args.shard_size,
                   "exit_path": str(args.exit_path), "intmodel": report_path(args.intmodel)}
        rows = [[r["image"], r["exit_layer"], r["expected_layer"], r["class"], r["expected_class"],
                 r["cycles_measured"], r["cycles_predicted"]] for r in res.records]
        heads = f"one streamed exit head with {m.lanes} multipliers for every candidate"
        write_report(folder, summary, f"run: {s['matched']}/{s['images']} images, {s['decisions_matched']}/"
                     f"{s['decisions']} decisions, cycles {s['cycles_measured']:,} measured = "
                     f"{s['cycles_predicted']:,} predicted", [
            prose(__doc__),
            f"This run: {m.rows}x{m.cols}, weights streamed {stream}; {heads}; candidates on: {on}; {simulator}; "
            f"shards of {args.shard_size} on {t['workers']} worker(s): {t['images_computed']} image(s) computed in "
            f"{t['wall_s']:.0f} s ({t['shards_resumed']} shard(s) resumed)."],
            [(["test image", "exit layer", "expected", "class", "expected", "cycles measured", "cycles predicted"],
              rows)])
    return 0 if s["passed"] else 1
