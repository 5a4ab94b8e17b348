"""`qexit verify faults` breaks one thing at a time in a good memory image of the accelerator
(hw/rtl/accelerator.py) and runs it (sim/faults.py) under cocotb with cocotbext-axi's AxiRam as
the memory (the default), or with --memory hdl under Verilator's free-running main with the HDL
memory model of `verify run` (bandwidth and latency as given): a
program word with an unknown opcode, an address outside the model image, a memory that stops
answering, a run table that ends early, a head and threshold for a layer that does not exist,
no run table. Each must stop the run by itself with its own code in the ERROR register, no
image done and no hang. Writes reports/verify-faults/summary.json (matched, total, and per
case the code it got and the cycles from start to the stop); exits 1 if any case fails.
"""
from __future__ import annotations

from model.data import load_fashion_mnist
from model.exits import exit_path
from model.quantize import load_intmodel
from qexit.commands.common import add_exit_path_args, report_path
from qexit.commands.verify.shared import add_machine, machine, write_report
from qexit.reports import report_dir
from hw import program
from sim import accelerator, faults, run as sim_run

HELP = "the accelerator's faults: each stops the run with its own error code"


def add_arguments(p):
    add_exit_path_args(p)
    add_machine(p, square=True)
    p.add_argument("--memory", choices=("axiram", "hdl"), default="axiram",
                   help="axiram: cocotb with cocotbext-axi's AxiRam; hdl: the free-running main with the HDL "
                        "memory model at --bandwidth and --latency")


def run(args) -> int:
    m = machine(args)
    im, ep = load_intmodel(args.intmodel), exit_path.load(args.exit_path)
    axiram = args.memory == "axiram"
    build = accelerator.build_axiram(program.accelerator(im, ep, m.lanes)) if axiram else sim_run.prepare(im, ep, m).build
    res = faults.verify_faults(im, ep, m, load_fashion_mnist("test").images[:1], build, axiram)
    for r in res.records:
        print(f"{'ok  ' if r['passed'] else 'FAIL'} {r['case']}: {r['got']} (code {r['code']}) after "
              f"{r['cycles']:,} cycles")
    with report_dir("verify-faults") as folder:
        memory = ({"model": "cocotbext-axi AxiRam under cocotb"} if axiram else
                  {"model": "HDL memory model (free-running Verilator)", "bandwidth": m.bandwidth, "latency": m.latency})
        summary = {**res.summary(), "cases": res.records, "rows": m.rows, "cols": m.cols, "memory": memory, "intmodel": report_path(args.intmodel), "exit_path": str(args.exit_path)}
        rows = [[r["case"], r["expected"], r["got"], r["code"], f"{r['cycles']:,}", "yes" if r["passed"] else "NO"]
                for r in res.records]
        write_report(folder, summary, f"faults: {res.matched}/{res.total} stop with their own error code", [
            "Each case breaks one thing in a good memory image (one test image) or in the memory, and runs "
            f"the {m.rows}x{m.cols} accelerator against {memory['model']} until it stops by itself; cycles count "
            "from the start to the stop (the accelerator's CYCLES register; the watchdog's case includes its "
            "65,536 silent cycles)."],
            [(["case", "expected", "got", "code", "cycles", "passed"], rows)])
    return 0 if res.passed else 1
