"""`qexit verify comparator` replays the test split through the exit comparator (hw/rtl/comparator.py)
under cocotb: the class scores and gates of the fixed-point head that `qexit exits` evaluated
(saved in its exit_path.pt with the threshold registers), image by image, candidate layer by
candidate layer until the comparator exits, as the layer sequencer feeds it. Every decision
word (exit bit, class, layer) must equal model/exits/decision.py, and every image's exit layer
and class, read from the RTL's decision words, the evaluation's. Writes
reports/verify-comparator/summary.json (matched, total, images, decisions, images_matched);
exits 1 on any mismatch.
"""
from __future__ import annotations

from model.exits import exit_path
from qexit.commands.common import add_exit_path_args, positive
from qexit.commands.verify.shared import add_simulator, write_report
from qexit.reports import report_dir
from sim import comparator as sim_comparator, simulator as runner

HELP = "the exit comparator on the fixed-point head's outputs for the test split"


def add_arguments(p):
    add_exit_path_args(p, intmodel=False)
    p.add_argument("--images", type=positive, default=None, help="the first N test images (default: all)")
    add_simulator(p)


def run(args) -> int:
    ep = exit_path.load(args.exit_path)
    simulator = runner.pick(args.simulator)
    n = ep.test_scores.shape[0] if args.images is None else min(args.images, ep.test_scores.shape[0])
    print(f"replaying {n} test images through the exit comparator ({len(ep.layers)} candidate layers)", flush=True)
    with report_dir("verify-comparator") as folder:
        res = sim_comparator.verify_comparator(ep, n, simulator=args.simulator, folder=folder / "sim")
        print(f"bit-exact: {res.matched}/{res.total} decisions ({res.decisions} fed); images whose exit layer "
              f"and class equal the evaluation's: {res.images_matched}/{res.images} ({res.sim_seconds:.0f} s)")
        if not res.passed:
            print(res.log or "(no simulator log)")
        summary = {**res.summary(), "layers": ep.layers, "threshold_registers": ep.registers,
                   "exit_path": str(args.exit_path)}
        k = len(ep.layers)
        exits = [int((ep.test_exit[:n] == j).sum()) for j in range(k + 1)]
        rows = [[lay if j < k else f"{ep.depth} (full depth)", "-" if j == k else
                 (ep.registers[j] if ep.registers[j] is not None else "off"), exits[j]]
                for j, lay in enumerate(ep.layers + [ep.depth])]
        write_report(folder, summary, f"comparator: {res.matched}/{res.total} decisions bit-exact", [
            f"The exit comparator's RTL (`hw/rtl/comparator.py`, {simulator} under cocotb) on the fixed-point "
            f"head's class scores and gates for the first {n} test images, as `qexit exits` evaluated them: per "
            f"image, the candidate layers in order until the comparator exits ({res.decisions} decisions, "
            f"{res.decisions * ep.test_scores.shape[2]} score beats). {res.matched}/{res.total} decision words "
            f"(exit bit, class, layer) equal `model/exits/decision.py`; by the RTL's words, {res.images_matched}/{n} "
            f"images leave at the layer and with the class the evaluation counted."],
            [(["exit layer", "threshold register", "images"], rows)])
    return 0 if res.passed else 1
