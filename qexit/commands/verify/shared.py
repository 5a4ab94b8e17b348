"""What the verify verbs share: the machine and simulator options, the test images, and the
report every verb writes (summary.json and a README made of a title, paragraphs and tables)."""
from __future__ import annotations

from pathlib import Path

from hw.cost import Machine
from model.data import load_fashion_mnist
from model.errors import QexitError
from model.quantize import load_intmodel
from qexit.commands.common import add_machine_args, machine_from_args
from qexit.render.markdown import markdown_table
from qexit.reports import write_summary
from sim import simulator as runner
from sim.harness import check_machine

INTMODEL_HELP = ("IntModel file (default: the shipped IntModel of the embedded default, model/weights/vit_fmnist_int8.pt; "
                 "`qexit quantize --out` writes others)")


def add_machine(p, *, rows: int = 8, bandwidth: float | None = 8.0, latency: int = 20, square: bool = False) -> None:
    """--rows --cols --bandwidth --latency: the array and the weight stream the RTL runs with."""
    add_machine_args(p, rows=rows, bandwidth=bandwidth, latency=latency, square=square,
                     options=("rows", "cols", "bandwidth", "latency"))


def machine(args) -> Machine:
    """The machine of ``add_machine``'s options (a step declared ``square`` refuses R != C there),
    if the RTL can run it (``sim.harness.check_machine``)."""
    return check_machine(machine_from_args(args))


def add_simulator(p) -> None:
    p.add_argument("--simulator", choices=runner.SIMULATORS, default=None,
                   help="default: Verilator if installed, else Icarus")


def stream_text(m: Machine) -> str:
    """The weight stream in words, after "weights streamed"."""
    if m.bandwidth is None:
        return f"from an ideal source (every word ready from cycle {m.latency})"
    return f"at {m.bandwidth:g} B/cycle after {m.latency} cycles"


def intmodel(path: Path):
    """The IntModel at ``path`` (the shipped one by default), refused unless uniform int8; a
    missing file is a one-line error (``load_intmodel``), never a silent calibration here."""
    im = load_intmodel(path)
    im.require_uniform8("qexit verify")
    return im


def first_test_images(n: int):
    """The first ``n`` images of the test split."""
    return load_fashion_mnist("test").subset(n).images


def prose(text: str) -> str:
    """A help text (a verb's description) as one Markdown paragraph."""
    return " ".join(text.split())


def write_report(folder: Path, summary: dict, title: str, paragraphs: list[str],
                 tables: list[tuple[list[str], list[list]]] = (), tail: str = "") -> None:
    """A verb's report: ``summary`` as summary.json, and README.md: "# verify <title>", the
    paragraphs, each table (headers, rows), then ``tail`` (Markdown with its own headings)."""
    write_summary(folder, summary)
    parts = [f"# verify {title}", *paragraphs, *(markdown_table(h, rows) for h, rows in tables)]
    if tail:
        parts.append(tail)
    (Path(folder) / "README.md").write_text("\n\n".join(p.strip("\n") for p in parts) + "\n")


def exit_layers(text: str, ep) -> list[int]:
    """--layers as backbone layer numbers, each one a candidate layer of the exit path."""
    try:
        layers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise QexitError(f"--layers {text!r} must be 'all' or comma-separated backbone layers like 2,6") from None
    bad = [k for k in layers if k not in ep.layers]
    if bad or not layers:
        raise QexitError(f"--layers {text}: {bad or 'none'} not among the exit path's candidate layers {ep.layers}")
    return layers
