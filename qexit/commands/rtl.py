"""Generate Verilog for the hardware blocks, and the memory image that feeds the accelerator.

`qexit rtl gemm --rows R --cols C` writes the INT8 GEMM engine (an R x C weight-stationary
systolic array with its activation, weight, parameter, accumulator and output buffers, the
tile controller and the requantize unit) as one Verilog file, reports/rtl-gemm/gemm_RxC.v
(and a copy at --out), with summary.json (array size, buffer sizes, Verilog lines) and a README.

`qexit rtl accelerator --rows R --cols C --out DIR` writes the whole accelerator for an
IntModel and exit path (hw/rtl/accelerator.py: the layer engine, the exit head, the comparator
and the RTL sequencer, one AXI4 read port, one AXI4 write port, Wishbone control registers):
its Verilog, the register map as JSON and as a C header, and a README with the memory image's
layout. `qexit rtl image --images N --out DIR` writes a memory image of the first N test
images for it (sim/image.py): memory.hex, one `<word address> <word>` line per word (hex), and
memory.json with the control registers' values, the regions, the image's SHA-256 and the
digests of the IntModel and exit path it was made from.

`qexit rtl run --image DIR` runs such an image through the accelerator under Verilator, as an SoC
would: it writes the registers, waits for done and reads each image's record (class, exit layer,
cycles). Before any simulation it refuses, in one line, an image whose words no longer match its
hash or that another IntModel, exit path or array size made (naming the region that differs,
the run table first). `qexit verify run` is the run checked against the golden model.
"""
from __future__ import annotations

from pathlib import Path

import json

from hw.cost import schedule
from hw.rtl import accelerator, gemm
from hw.rtl.accelerator import to_verilog
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import load_intmodel
from qexit.commands.common import EXIT_PATH_DEFAULT, add_exit_path_args, add_machine_args, machine_from_args, positive
from sim import accelerator as sim_accelerator
from hw.program import accelerator as design
from hw.rtl.accelerator import top_name
from sim.accelerator import MAX_BATCH, build_for, size
from sim.image import load_image, memory_image, save_image
from qexit.render import rtl as render
from qexit.reports import report_dir, write_summary, write_text

HELP = "generate Verilog: the GEMM engine, the whole accelerator, and its memory image"


def add_buffer_args(p) -> None:
    p.add_argument("--max-m", type=positive, default=gemm.GemmConfig.max_m,
                   help="largest M (tokens) the buffers hold")
    p.add_argument("--max-k", type=positive, default=gemm.GemmConfig.max_k,
                   help="largest K (inner dimension) the buffers hold")
    p.add_argument("--max-n", type=positive, default=gemm.GemmConfig.max_n,
                   help="largest N (output channels) the buffers hold")
    p.add_argument("--max-raw-n", type=positive, default=gemm.GemmConfig.max_raw_n,
                   help="largest N of an int32-output GEMM (the attention scores' token count)")
    p.add_argument("--max-bias-n", type=positive, default=gemm.GemmConfig.max_bias_n,
                   help="largest N of a GEMM with a per-token bias (the patch embedding's width)")


def add_arguments(p):
    sub = p.add_subparsers(dest="block", metavar="<block>", required=True)
    g = sub.add_parser("gemm", help="the systolic INT8 GEMM engine", description=__doc__)
    add_machine_args(g, rows=16, square=False, options=("rows", "cols"))     # R: K per tile, C: N per tile
    add_buffer_args(g)
    g.add_argument("--out", type=Path, default=None, help="also write the Verilog here")
    g.set_defaults(_block=run_gemm)
    for name, fn, what in (("accelerator", run_accelerator, "the whole accelerator: Verilog, register map, README"),
                           ("image", run_image, "a memory image of test images for the accelerator"),
                           ("run", run_memory, "run a memory image through the accelerator (Verilator)")):
        a = sub.add_parser(name, help=what, description=__doc__)
        add_machine_args(a, rows=8, square=True,
                         options=("rows", "cols", "bandwidth", "latency") if name == "run" else ("rows", "cols"))
        add_exit_path_args(a)
        if name == "run":
            a.add_argument("--image", type=Path, default=Path("reports/rtl-image"),
                           help="the folder `qexit rtl image` wrote")
        if name == "image":
            a.add_argument("--images", type=positive, default=10, help="the first N test images")
        a.add_argument("--out", type=Path, default=Path(f"reports/rtl-{name}"), help="the folder to write")
        a.set_defaults(_block=fn)


def run(args) -> int:
    return args._block(args)


def run_gemm(args) -> int:
    machine = machine_from_args(args)
    cfg = gemm.GemmConfig(machine.rows, machine.cols, max_m=args.max_m, max_k=args.max_k, max_n=args.max_n,
                          max_raw_n=args.max_raw_n, max_bias_n=args.max_bias_n)
    text = gemm.to_verilog(cfg)
    name = f"gemm_{cfg.rows}x{cfg.cols}.v"
    buffers = cfg.buffers
    summary = {
        "rows": cfg.rows, "cols": cfg.cols, "top": cfg.name, "verilog": name,
        "max_m": cfg.max_m, "max_k": cfg.max_k, "max_n": cfg.max_n,
        "macs_per_cycle": cfg.rows * cfg.cols,
        "array_latency_cycles": schedule.array_latency(cfg.rows, cfg.cols),
        "buffer_bits": sum(depth * width for depth, width in buffers.values()),
        "buffers": {k: {"words": d, "bits_per_word": w} for k, (d, w) in buffers.items()},
        "verilog_lines": text.count("\n"),
    }
    with report_dir("rtl-gemm") as folder:
        (folder / name).write_text(text)
        write_summary(folder, summary)
        (folder / "README.md").write_text(render.gemm_readme(summary))
        if args.out is not None:
            write_text(args.out, text)
    print(f"wrote reports/rtl-gemm/{name}" + (f" and {args.out}" if args.out else "")
          + f" ({summary['verilog_lines']} lines, top module {cfg.name})")
    return 0


def _model(args):
    """(IntModel, exit path or None): no exit path when the default one was never written."""
    im = load_intmodel(args.intmodel)
    if not Path(args.exit_path).exists():
        if args.exit_path != EXIT_PATH_DEFAULT:
            raise QexitError(f"no exit path at {args.exit_path}; run `qexit exits` or leave --exit-path out")
        print(f"no exit path at {args.exit_path} (run `qexit exits`): the accelerator is built without exits")
        return im, None
    return im, exit_path.load(args.exit_path)


def run_accelerator(args) -> int:
    machine = machine_from_args(args)
    im, ep = _model(args)
    lanes = machine.lanes
    out = Path(args.out)
    with report_dir(out.name, out.parent) as folder:
        a = design(im, ep, lanes)
        top = top_name(lanes)
        text = to_verilog(a, top)
        img, layout = memory_image(im, ep, lanes, load_fashion_mnist("test").images[:1])
        regmap = accelerator.register_map(lanes)
        (folder / f"{top}.v").write_text(text)
        (folder / "registers.json").write_text(json.dumps(regmap, indent=2) + "\n")
        (folder / "qexit_accelerator.h").write_text(accelerator.c_header(lanes))
        summary = {"top": top, "rows": lanes, "cols": lanes, **size(a, text)}
        write_summary(folder, summary)
        (folder / "README.md").write_text(render.accelerator_readme(top, lanes, regmap, img, layout, ep is not None,
                                                                    summary))
    print(f"wrote {out}/{top}.v ({summary['verilog_lines']:,} lines; on chip {summary['onchip_bits']:,} bits: "
          f"memories {summary['memory_bits']:,}, registers {summary['register_bits']:,}), registers.json, "
          "qexit_accelerator.h, summary.json, README.md")
    return 0


def run_image(args) -> int:
    machine = machine_from_args(args)
    im, ep = _model(args)
    out = Path(args.out)
    with report_dir(out.name, out.parent) as folder:
        img, layout = memory_image(im, ep, machine.lanes, load_fashion_mnist("test").images[:args.images])
        info = save_image(folder, img, layout, im, ep)
    print(f"wrote {out}/memory.hex ({img.words} words of {img.word_bytes} bytes, sha256 {info['sha256'][:16]}...) "
          f"and memory.json")
    return 0


def run_memory(args) -> int:
    machine = machine_from_args(args)
    im, ep = _model(args)
    img, layout = load_image(args.image, im, ep, machine.lanes)
    out = Path(args.out)
    with report_dir(out.name, out.parent) as folder:
        b = build_for(im, ep, machine.lanes, max(layout.count, MAX_BATCH))
        got = sim_accelerator.run_image(b, img, layout, machine)
        summary = {"image": str(args.image), "image_sha256": img.digest(), "rows": machine.lanes,
                   "cols": machine.lanes, "bandwidth": machine.bandwidth, "latency": machine.latency,
                   "error": got["error"], "error_name": accelerator.Err(got["error"]).name if got["error"] else None,
                   "images_done": got["images_done"], "cycles": got["cycles"], "results": got["results"]}
        write_summary(folder, summary)
    for n, r in enumerate(got["results"][:got["images_done"]]):
        print(f"image {n}: class {r['class']}, exit layer {r['layer']}, {r['cycles']:,} cycles")
    print(f"{got['images_done']}/{layout.count} images, {got['cycles']:,} cycles from start to done"
          + (f"; stopped with error {summary['error_name']}" if got["error"] else "") + f" -> {out}/summary.json")
    return 0 if got["error"] == 0 else 1
