"""Generate Verilog for the hardware blocks.

`qexit rtl gemm --rows R --cols C` writes the INT8 GEMM engine (an R x C weight-stationary
systolic array with its activation, weight, parameter, accumulator and output buffers, the
tile controller and the requantize unit) as one Verilog file, reports/rtl-gemm/gemm_RxC.v
(and a copy at --out), with summary.json (array size, buffer sizes, Verilog lines) and a README.
"""
from __future__ import annotations

from pathlib import Path

from hw.cost import schedule
from hw.rtl import gemm
from qexit.commands.common import add_machine_args, machine_from_args, positive
from qexit.render import rtl as render
from qexit.reports import report_dir, write_summary

HELP = "generate Verilog: `rtl gemm` writes the systolic INT8 GEMM engine"


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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(f"wrote reports/rtl-gemm/{name}" + (f" and {args.out}" if args.out else "")
          + f" ({summary['verilog_lines']} lines, top module {cfg.name})")
    return 0
