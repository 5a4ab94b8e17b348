"""The real SCALE-Sim, side by side: the ``scalesim`` package (PyPI scalesim==3.0.0) run on every
GEMM of one encoder layer, against this project's RTL-validated cycle model
(``hw.cost.schedule.predict_cycles``) and SCALE-Sim v2's closed-form WS formula.

    .venv/bin/python benchmarks/bench_scalesim.py [--cases vit_b32_16x16,shipped_8x8]

Prints one table per case and writes benchmarks/results/bench_scalesim.json. Two cases: a ViT-B/32
layer (width 768, 12 heads, MLP 3072, 50 tokens) on a 16x16 array and the shipped model's layer
(width 64, 4 heads, MLP 256, 50 tokens) on 8x8, both weight stationary, the array R x C.

The GEMMs
---------
Those of ``hw.program.layer_segment``: QKV t x d x 3d, per head Q.K^T t x dh x t and P.V
t x t x dh, proj t x d x d, fc1 t x d x F, fc2 t x F x d (M x K x N, K the reduction). They are
listed here from the config and checked against the gemm descriptors of
``program.model_program(im, lanes, layers=1)`` (a random IntModel of that config). SCALE-Sim runs
each whole GEMM; the engine runs QKV and fc1 in output chunks of d columns (column ``chunks``),
and ``ours chunked`` is what the program's chunked GEMMs cost (each chunk fills and drains once).
Cutting N at a multiple of C changes nothing in SCALE-Sim (its folds never overlap); the runs
check that on the chunk shape (= proj's). Identical shapes (the heads, the chunks) are simulated
once; column ``x`` is how many times the layer runs the row, and the totals weight by it.

Running scalesim
----------------
scalesim 3.0.0 crashes under numpy 2.4 (double_buffered_scratchpad_mem.py:307), and this
project's venv keeps numpy 2.4, so it runs in a separate venv, ``.venv-scalesim`` at the repo
root, which this script creates on first use (``python -m venv``, then
``pip install "numpy>=2.3,<2.4" scalesim==3.0.0``; no other pin was needed: the resolved versions
are saved in the JSON). This file is also the runner: ``--runner JOB`` runs in that venv (stdlib
and scalesim only) and drives scalesim's own ``scalesim`` class with ``save_disk_space=True``,
one fresh instance per GEMM (its CLI, scale.py, always saves the full cycle traces, hundreds of MB
for ViT-B/32). In GEMM mode a topology row is ``name, M, N, K,`` (N the output columns, K the
reduction, trailing comma, after a header line); a layout file with only a header line is
required even with custom layouts off. Each GEMM's numbers are read from scalesim's
COMPUTE_REPORT.csv and DETAILED_ACCESS_REPORT.csv as it writes them.

What was set (the exact .cfg text is saved in the JSON)
-------------------------------------------------------
* both runs: ``Dataflow = ws``, ``ArrayHeight`` x ``ArrayWidth`` = R x C, 1-byte words (fixed in
  scalesim), and IFMAP/filter/OFMAP SRAMs of twice the largest operand of the case, so the
  active half of each double-buffered SRAM holds a whole operand: stalls can only measure
  bandwidth, never capacity;
* run ``calc``: ``InterfaceBandwidth = CALC`` (scalesim's estimate-bandwidth mode: reads never
  stall; it reports the bandwidth it would need). This is the compute-only count;
* run ``user8``: ``InterfaceBandwidth = USER`` with ``FilterSRAMBankBandwidth = 8``: in 3.0.0 the
  DRAM -> SRAM fill rate of the filter (and IFMAP) buffer is that [layout] key, in words = bytes
  per cycle, so the weights come from DRAM at 8 B/cycle, the engine's weight stream
  (``[architecture_presets] Bandwidth`` only sets the OFMAP drain; set to C, as CALC mode does;
  ``IfmapSRAMBankBandwidth`` = R). DRAM latency is scalesim's fixed 1 cycle: it has no latency
  setting short of Ramulator traces, so the engine's 20-cycle latency has no counterpart.

How each side counts fill, drain and weight loads
-------------------------------------------------
T = ceil(K/R) * ceil(N/C) tiles (SCALE-Sim: folds), both in the same order (n outer, k inner).

* SCALE-Sim WS (compute/systolic_compute_ws.py, demand matrices per fold): R cycles loading the
  fold's R weight rows into the array (one row per cycle, no second register bank), M cycles of
  activation rows, R - 1 cycles of input skew and C - 1 of output drain: 2R + C + M - 2 cycles per
  fold, and folds run back to back, the next fold's load after the last output of the previous
  one. Its "Total Cycles" is the index (from 0) of the cycle of the last output row, so
  total + 1 = T (2R + C + M - 2), the v2 formula: checked on every GEMM (``total+1 == v2``).
  "Stall Cycles" come from its memory model only; "Total Cycles" includes them, so compute =
  total - stall. In USER mode with SRAMs that hold the operands, the whole filter is fetched
  *before* cycle 0 (its DRAM trace runs at negative cycles, K N / 8 cycles at 8 B/cycle, N padded
  to whole folds of C: column ``SS@8 preload``) and the run never stalls: the weight load is
  outside "Total Cycles"; only "Total Cycles (incl. prefetch)" (in the JSON) counts it, together
  with writing every fold's partial sums (M N ceil(K/R) words) back to DRAM.
* This project (hw/cost/schedule.py, equal to the RTL's cycle counter under cocotb): the array fills
  once (tile 0's R weight rows), tiles follow each other every P = max(M, R) cycles because each
  PE double-buffers its weight and the next tile's R rows load into the idle bank while the
  current tile streams (hidden when M >= R, as in every GEMM here), and it drains once: a 1-cycle
  buffer read, R + C - 1 cycles through the array and the row unit's requantize pipeline
  (``timing.ROW_UNIT_LATENCY`` = U cycles, 9 today; 4 when the committed results were made),
  ``done`` one cycle later: R + (T - 1) P + M + R + C + U - 1 cycles, start to done. With M >= R
  that is T M + 2R + C + U - 1: SCALE-Sim's formula for a *single* fold that streams all T M
  rows, plus U + 1 (the buffer read and the row unit, which SCALE-Sim does not model). Hence
  v2 - ours = (T - 1)(2R + C - 2) - (U + 1) exactly (checked on every GEMM): the per-fold load,
  skew and drain that the double buffer and the continuous stream remove.
* At 8 B/cycle (``ours@8/20``: 8 B/cycle after a 20-cycle latency, predicted exactly by
  ``hw.cost.schedule.plan``) the engine stalls only at the start, while tile 0's weights trickle in
  (its tiles need R C / 8 cycles of stream per max(M, R) cycles, which 8 B/cycle covers here).
  Q.K^T and P.V read their weights (K^T, V) from the scratchpad at L bytes/cycle after 2 cycles,
  as the layer program does (``timeline.desc_cycles``), so they use that source in this column.
  SCALE-Sim, with the weights preloaded, shows 0 stalls and the K N / 8 preload instead.

A filter SRAM as small as the engine's weight storage (two R x C banks) would be the closer
model of a streamed weight, but scalesim 3.0.0's read buffer then refetches the same weights over
and over, and its stalls are not monotonic in the SRAM size (50x64x64 on 16x16 with a 512-byte
filter SRAM: 60,928 filter DRAM reads for 4,096 weights and 6,374 stall cycles, with 1 kB 36,352
reads and 3,113 stalls; on 8x8 with 128 bytes no stall, with 1 kB 45,056 reads and 1,323 stalls),
and 50x768x768 on 16x16 with 512 bytes had not finished after 9 minutes; compare
scalesim-project/SCALE-Sim issues #130 and #27 on its USER-mode stall and refetch accounting.
So it is not one of the runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hw import program
from hw.cost.schedule import WeightSource, predict_cycles, scalesim_v2_ws_formula, tile_counts
from hw.rtl import timing
from sim.block import random_block_model

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-scalesim"
PINS = ["numpy>=2.3,<2.4", "scalesim==3.0.0"]
BANDWIDTH, LATENCY = 8, 20          # the engine's weight stream, as in bench_layer.py
CASES = {                           # key: (title, width, heads, mlp, tokens, lanes)
    "vit_b32_16x16": ("ViT-B/32 layer on 16x16", 768, 12, 3072, 50, 16),
    "shipped_8x8": ("shipped model's layer on 8x8", 64, 4, 256, 50, 8),
}


# --------------------------------------------------------------------------- the runner
# Runs inside .venv-scalesim: the standard library and scalesim only.

def scalesim_cfg(rows: int, cols: int, mode: str, sram_kb: tuple[int, int, int], filter_bw: int) -> str:
    """A scalesim 3.0.0 config (the keys its scale_config.read_conf_file reads)."""
    ikb, fkb, okb = sram_kb
    return f"""[general]
run_name = qexit

[run_presets]
InterfaceBandwidth = {mode}
UseRamulatorTrace = False

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {ikb}
FilterSramSzkB = {fkb}
OfmapSramSzkB = {okb}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Bandwidth = {cols}
Dataflow = ws
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = {rows}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = {filter_bw}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40
"""


def _report(path: Path) -> dict:
    """The single layer row of a scalesim report CSV, keyed by its header."""
    head, row = path.read_text().strip().splitlines()[:2]
    keys = [k.strip() for k in head.split(",")]
    vals = [v.strip() for v in row.split(",")]
    return {k: float(v) for k, v in zip(keys, vals) if k}


def runner(job_path: str) -> int:
    from scalesim.scale_sim import scalesim

    job = json.loads(Path(job_path).read_text())
    out = {}
    for run, cfg_text in job["configs"].items():
        out[run] = {}
        for name, m, k, n in job["gemms"]:
            d = Path(tempfile.mkdtemp(prefix="qexit-scalesim-"))
            try:
                (d / "scale.cfg").write_text(cfg_text)
                (d / "topology.csv").write_text(f"Layer, M, N, K,\n{name}, {m}, {n}, {k},\n")
                (d / "layout.csv").write_text("Layer,\n")
                t0 = time.time()
                s = scalesim(save_disk_space=True, verbose=False, config=str(d / "scale.cfg"),
                             topology=str(d / "topology.csv"), layout=str(d / "layout.csv"),
                             input_type_gemm=True)
                s.run_scale(top_path=str(d))
                wall = time.time() - t0
                comp = _report(d / "qexit" / "COMPUTE_REPORT.csv")
                det = _report(d / "qexit" / "DETAILED_ACCESS_REPORT.csv")
                del s
            finally:
                shutil.rmtree(d, ignore_errors=True)
            out[run][f"{m}x{k}x{n}"] = {
                "total_cycles": int(comp["Total Cycles"]), "stall_cycles": int(comp["Stall Cycles"]),
                "total_cycles_incl_prefetch": int(comp["Total Cycles (incl. prefetch)"]),
                "overall_util_pct": comp["Overall Util %"], "mapping_eff_pct": comp["Mapping Efficiency %"],
                "compute_util_pct": comp["Compute Util %"], "detail": det, "wall_s": round(wall, 2)}
            print(f"  scalesim {run:5} {name:6} {m}x{k}x{n}: total {int(comp['Total Cycles']):,}, "
                  f"stall {int(comp['Stall Cycles']):,} ({wall:.1f} s)", file=sys.stderr, flush=True)
    Path(job["out"]).write_text(json.dumps(out, indent=1))
    return 0


# --------------------------------------------------------------------------- the scalesim venv

def ensure_scalesim() -> Path:
    """.venv-scalesim's python, creating the venv and installing PINS on first use."""
    py = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text().split() == PINS and py.exists():
        return py
    t0 = time.time()
    print(f"creating {VENV.relative_to(ROOT)} with {' '.join(PINS)} (scalesim 3.0.0 needs numpy < 2.4)",
          flush=True)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINS], check=True)
    subprocess.run([str(py), "-c", "import scalesim.scale_sim"], check=True)
    stamp.write_text("\n".join(PINS) + "\n")
    print(f"installed in {time.time() - t0:.0f} s", flush=True)
    return py


def scalesim_env(py: Path) -> dict:
    ver = subprocess.run([str(py), "-c", "from importlib.metadata import version; import sys, numpy; "
                          "print(version('scalesim'), numpy.__version__, sys.version.split()[0])"],
                         check=True, capture_output=True, text=True).stdout.split()
    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--disable-pip-version-check"], check=True,
                            capture_output=True, text=True).stdout.split()
    return {"scalesim": ver[0], "numpy": ver[1], "python": ver[2], "venv": VENV.name, "pins": PINS,
            "pip_freeze": freeze}


# --------------------------------------------------------------------------- this project's side

def layer_gemms(width: int, heads: int, mlp: int, tokens: int, lanes: int) -> list[dict]:
    """The layer's GEMMs as the model defines them, with the engine's output chunks, checked
    against the real program's gemm descriptors."""



    t, d, dh = tokens, width, width // heads
    chunk = lambda n: [b - a for a, b in program.chunks(n, d)]      # noqa: E731  (as _linear cuts)
    gemms = [
        {"name": "qkv", "count": 1, "m": t, "k": d, "n": 3 * d, "chunks": chunk(3 * d), "w_scratch": False},
        {"name": "q.kT", "count": heads, "m": t, "k": dh, "n": t, "chunks": [t], "w_scratch": True},
        {"name": "p.v", "count": heads, "m": t, "k": t, "n": dh, "chunks": [dh], "w_scratch": True},
        {"name": "proj", "count": 1, "m": t, "k": d, "n": d, "chunks": chunk(d), "w_scratch": False},
        {"name": "fc1", "count": 1, "m": t, "k": d, "n": mlp, "chunks": chunk(mlp), "w_scratch": False},
        {"name": "fc2", "count": 1, "m": t, "k": mlp, "n": d, "chunks": chunk(d), "w_scratch": False},
    ]
    # the real program's descriptors, grouped back into whole GEMMs
    torch.set_num_threads(1)
    _, segs = program.model_program(random_block_model(width, heads, mlp, tokens, 1), lanes, layers=1)
    names = {"qkv": "qkv", "scores": "q.kT", "ctx": "p.v", "proj": "proj", "fc1": "fc1", "fc2": "fc2"}
    got: dict[str, dict] = {}
    for desc in segs[1]:
        if desc.kind != "gemm":
            continue
        base = re.sub(r"\[\d+:\d+\]$", "", desc.name.split(".", 1)[1])
        head = re.match(r"h(\d+)\.(.*)", base)
        key = names[head.group(2) if head else base]
        g = got.setdefault(key, {"heads": set(), "shapes": [], "w_scratch": bool(desc["w_scratch"])})
        g["heads"].add(head.group(1) if head else None)
        g["shapes"].append((desc["m"], desc["k"], desc["n"]))
    for g in gemms:
        p = got.pop(g["name"])
        shapes = [(g["m"], g["k"], c) for c in g["chunks"]] * g["count"]
        assert sorted(p["shapes"]) == sorted(shapes), (g["name"], p["shapes"], shapes)
        assert len(p["heads"]) == g["count"] and p["w_scratch"] == g["w_scratch"], g["name"]
    assert not got, f"GEMMs of the program not listed here: {sorted(got)}"
    return gemms


def our_cycles(g: dict, lanes: int) -> dict:

    r = c = lanes
    m, k, n = g["m"], g["k"], g["n"]
    # the program's rule (timeline.desc_cycles): K^T and V stream from the scratchpad
    src = WeightSource(lanes, timing.READ_LATENCY) if g["w_scratch"] else WeightSource(BANDWIDTH, LATENCY)
    kt, nt = tile_counts(k, n, r, c)
    return {"tiles": kt * nt, "v2_ws_formula": scalesim_v2_ws_formula(r, c, m, k, n),
            "ours": predict_cycles(r, c, m, k, n),
            "ours_chunked": sum(predict_cycles(r, c, m, k, cn) for cn in g["chunks"]),
            "ours_streamed": predict_cycles(r, c, m, k, n, src),
            "ours_streamed_source": {"bandwidth": src.bandwidth, "latency": src.latency}}


def run_case(key: str, py: Path) -> dict:
    title, width, heads, mlp, tokens, lanes = CASES[key]
    gemms = layer_gemms(width, heads, mlp, tokens, lanes)
    shapes = {}
    for g in gemms:
        shapes.setdefault((g["m"], g["k"], g["n"]), g["name"])
        for cn in g["chunks"]:
            shapes.setdefault((g["m"], g["k"], cn), g["name"] + "/chunk")
    largest = [max(a * b for a, b in dims) for dims in
               ([(m, k) for m, k, _ in shapes], [(k, n) for _, k, n in shapes], [(m, n) for m, _, n in shapes])]
    sram_kb = tuple(math.ceil(2 * b / 1024) for b in largest)           # active half holds the operand
    configs = {"calc": scalesim_cfg(lanes, lanes, "CALC", sram_kb, BANDWIDTH),
               "user8": scalesim_cfg(lanes, lanes, "USER", sram_kb, BANDWIDTH)}
    print(f"\n{title}: scalesim on {len(shapes)} distinct GEMM shapes, runs {', '.join(configs)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="qexit-bench-scalesim-") as tmp:
        job = {"configs": configs, "out": str(Path(tmp) / "out.json"),
               "gemms": [[name, m, k, n] for (m, k, n), name in shapes.items()]}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        t0 = time.time()
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        subprocess.run([str(py), str(Path(__file__).resolve()), "--runner", str(Path(tmp) / "job.json")],
                       check=True, env=env, cwd=tmp)
        wall = time.time() - t0
        ss = json.loads(Path(job["out"]).read_text())

    rows, checks = [], {"ss_total_plus_1_equals_v2": True, "v2_minus_ours_is_per_fold_overhead_minus_row_unit": True,
                        "user8_no_stalls_same_compute": True, "user8_preload_is_KN_over_bw": True,
                        "ss_additive_over_engine_chunks": True}
    for g in gemms:
        shape = f"{g['m']}x{g['k']}x{g['n']}"
        calc, user = ss["calc"][shape], ss["user8"][shape]
        row = {**g, **our_cycles(g, lanes), "scalesim_calc": calc, "scalesim_user8": user}
        row["ss_compute"] = calc["total_cycles"] - calc["stall_cycles"]
        row["ss_stall"] = calc["stall_cycles"]
        row["ss_count"] = calc["total_cycles"] + 1                     # index of the last cycle -> a count
        row["ss8_stall"] = user["stall_cycles"]
        row["ss8_count"] = user["total_cycles"] + 1
        row["ss8_preload"] = -int(user["detail"]["DRAM Filter Start Cycle"])
        row["ratio_ss_over_ours"] = row["ss_count"] / row["ours"]
        r, m = lanes, g["m"]
        checks["ss_total_plus_1_equals_v2"] &= row["ss_count"] == row["v2_ws_formula"]
        if m >= r:
            checks["v2_minus_ours_is_per_fold_overhead_minus_row_unit"] &= (
                row["v2_ws_formula"] - row["ours"] == (row["tiles"] - 1) * (3 * r - 2) - (timing.ROW_UNIT_LATENCY + 1))
        checks["user8_no_stalls_same_compute"] &= (row["ss8_stall"] == 0 and row["ss8_count"] == row["ss_count"])
        padded_n = row["tiles"] // math.ceil(g["k"] / r) * r         # its filter prefetch pads N to folds of C
        checks["user8_preload_is_KN_over_bw"] &= row["ss8_preload"] == math.ceil(g["k"] * padded_n / BANDWIDTH)
        chunk_counts = [ss["calc"][f"{g['m']}x{g['k']}x{cn}"]["total_cycles"] + 1 for cn in g["chunks"]]
        checks["ss_additive_over_engine_chunks"] &= sum(chunk_counts) == row["ss_count"]
        rows.append(row)
    cols = ["ss_compute", "ss_stall", "ss_count", "v2_ws_formula", "ours", "ours_chunked", "ours_streamed",
            "ss8_stall", "ss8_preload"]
    totals = {c: sum(r["count"] * r[c] for r in rows) for c in cols}
    totals["ratio_ss_over_ours"] = totals["ss_count"] / totals["ours"]
    totals["macs"] = sum(r["count"] * r["m"] * r["k"] * r["n"] for r in rows)
    return {"title": title, "rows_x_cols": [lanes, lanes], "model": {"width": width, "heads": heads, "mlp": mlp,
            "tokens": tokens}, "sram_kb": dict(zip(("ifmap", "filter", "ofmap"), sram_kb)),
            "scalesim_configs": configs, "scalesim_wall_s": round(wall, 1),
            "scalesim_wall_s_per_run": {run: round(sum(v["wall_s"] for v in res.values()), 1)
                                        for run, res in ss.items()},
            "gemms": rows, "totals": totals, "checks": checks}


def print_case(res: dict) -> None:
    r, c = res["rows_x_cols"]
    print(f"\n{res['title']}  (ws, {r}x{c}; SS = scalesim 3.0.0: CALC run, and USER run with the filter "
          f"from DRAM at {BANDWIDTH} B/cycle; ours@{BANDWIDTH}/{LATENCY}: {BANDWIDTH} B/cycle after "
          f"{LATENCY} cycles, K^T and V from the scratchpad)")
    head = (f"{'GEMM':6} {'x':>3} {'M':>4} {'K':>5} {'N':>5} {'chunks':>7} {'SS comp':>9} {'SS stall':>8} "
            f"{'SS tot+1':>9} {'v2 WS':>9} {'ours':>8} {'ours chk':>8} {'ours@8/20':>9} {'SS@8 st':>7} "
            f"{'SS@8 preload':>12} {'SS/ours':>7}")
    print(head)
    print("-" * len(head))

    def line(name, x, m, k, n, chunks, v):
        print(f"{name:6} {x:>3} {m:>4} {k:>5} {n:>5} {chunks:>7} {v['ss_compute']:>9,} {v['ss_stall']:>8,} "
              f"{v['ss_count']:>9,} {v['v2_ws_formula']:>9,} {v['ours']:>8,} {v['ours_chunked']:>8,} "
              f"{v['ours_streamed']:>9,} {v['ss8_stall']:>7,} {v['ss8_preload']:>12,} "
              f"{v['ratio_ss_over_ours']:>6.2f}x")

    for g in res["gemms"]:
        ch = f"{len(g['chunks'])}x{g['chunks'][0]}" if len(g["chunks"]) > 1 else "-"
        line(g["name"], g["count"], g["m"], g["k"], g["n"], ch, g)
    print("-" * len(head))
    line("total", "", "", "", "", "", res["totals"])
    macs = res["totals"]["macs"]
    print(f"utilization of the layer's GEMM cycles: SCALE-Sim {100 * macs / (r * c * res['totals']['ss_count']):.1f}%"
          f", ours {100 * macs / (r * c * res['totals']['ours']):.1f}% (chunked "
          f"{100 * macs / (r * c * res['totals']['ours_chunked']):.1f}%)")
    print("checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in res["checks"].items()))
    print(f"scalesim wall time {res['scalesim_wall_s']:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in res['scalesim_wall_s_per_run'].items())})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "bench_scalesim.json")
    p.add_argument("--runner", metavar="JOB", help=argparse.SUPPRESS)   # inside .venv-scalesim
    args = p.parse_args(argv)
    if args.runner:
        return runner(args.runner)
    sys.path.insert(0, str(ROOT))
    t0 = time.time()
    py = ensure_scalesim()
    out = {"scalesim_env": scalesim_env(py), "bandwidth": BANDWIDTH, "latency": LATENCY, "cases": {}}
    for key in args.cases.split(","):
        out["cases"][key] = run_case(key, py)
        print_case(out["cases"][key])
    out["wall_s"] = round(time.time() - t0, 1)
    ok = all(all(c["checks"].values()) for c in out["cases"].values())
    print(f"\nwall time {out['wall_s']:.0f} s; wrote {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
