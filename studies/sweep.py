"""A design-space sweep on the cost model: array size x weight-stream
bandwidth x exit budget.

Each machine (an L x L accelerator, B bytes/cycle after the stream latency, clocked at its
synthesized Fmax (``machine_clock``), an exit head with L multipliers) is
one task, ``machine_points``: ``hw.cost.build`` once, then every exit budget priced on it with
``hw.cost.expected``. The budgets are every LCT budget of the exits step's Pareto sweep (its
routing per budget), the operating point the exit path holds, and full depth (no exits). A
point's top-1 is what the exits step measured for that routing; cycles, latency and energy are
the cost model's, per image in latency mode, energy under the default table (Horowitz's 45 nm
ASIC figures; ``energy_table`` describes it), with ``dram_share`` the share of it that is DRAM.
The Pareto front keeps the points that no other point beats on energy, latency and top-1 at
once. The tasks run on ``sim.dist.map_tasks`` (here, or on Dask).
"""
from __future__ import annotations

import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hw import cost
from hw.cost import Distribution, load_distribution, tables
from hw.rtl.dense import StreamDense
from hw.tools import synth as synthesis
from model.errors import QexitError
from model.exits import exit_path as ep_mod
from model.quantize import load_intmodel

AXES = ("arrays", "bandwidths", "budgets")


@dataclass(frozen=True)
class Grid:
    arrays: tuple[int, ...] = (4, 8, 16)
    bandwidths: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    budgets: tuple | str = "all"          # "all", or LCT budgets as the exits step names them
    latency: int = 20

    def __post_init__(self):
        for axis in AXES:
            v = getattr(self, axis)
            if v != "all" and not len(v):
                raise QexitError(f"the sweep grid's {axis} axis is empty; give at least one value")
        if any(not isinstance(a, int) or a < 1 for a in self.arrays):
            raise QexitError(f"array sizes {list(self.arrays)} must be integers >= 1")
        if any(not b > 0 for b in self.bandwidths):
            raise QexitError(f"bandwidths {list(self.bandwidths)} must be > 0 bytes/cycle")
        if self.latency < 0:
            raise QexitError(f"the stream latency {self.latency} must be >= 0 cycles")

    def machines(self) -> list[tuple[int, float]]:
        return [(a, b) for a in self.arrays for b in self.bandwidths]


def load_grid(path: Path) -> Grid:
    """A grid from a small TOML file: ``arrays = [4, 8]``, ``bandwidths = [2, 8]``,
    ``budgets = "all"`` (or a list), ``latency = 20``; missing keys keep their defaults."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise QexitError(f"no grid file at {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise QexitError(f"grid file {path} is not valid TOML ({err})") from None
    unknown = sorted(set(data) - set(AXES) - {"latency"})
    if unknown:
        raise QexitError(f"grid file {path}: unknown keys {unknown} (known: {', '.join(AXES)}, latency)")
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
    if "bandwidths" in kw:
        kw["bandwidths"] = tuple(float(b) for b in kw["bandwidths"])
    return Grid(**kw)


def routes(exits: dict, seed: int, depth: int, budgets) -> list[dict]:
    """The budgets to price: (name, Distribution, top-1) for the operating point, every LCT
    budget of the exits' Pareto sweep for ``seed`` (or those in ``budgets``), and full depth."""
    dist, rep = load_distribution(exits, seed, depth)
    out = [{"budget": "operating point", "dist": dist, "top1": rep.get("top1")}]
    pareto = rep.get("pareto") or []
    if budgets != "all":
        known = {r["budget"] for r in pareto}
        missing = [b for b in budgets if b not in known]
        if missing:
            raise QexitError(f"budgets {missing} are not in the exits' Pareto sweep (it has {sorted(known)})")
    for r in pareto:
        if budgets == "all" or r["budget"] in budgets:
            layers = [int(k) for k in r["layers"]]
            out.append({"budget": r["budget"], "top1": r["top1"],
                        "dist": Distribution(tuple(layers), tuple(r["fraction"]), tuple(k for k in layers if k < depth))})
    out.append({"budget": "full depth", "dist": None, "top1": rep.get("top1_full_depth")})
    return out


_LOADED: dict = {}


def energy_table() -> dict:
    """The energy table every point is priced under, as a report names it."""
    return tables.load().describe()


def machine_clock(im, ep, lanes: int, clock_mhz: float | None, synth_summary=None) -> dict:
    """How an L x L machine is clocked: ``clock_mhz`` (a what-if: ``clock_source`` "user") when
    given, else the synthesized Fmax of its accelerator (``hw.tools.synth``; "synth"). A size that
    synthesis found does not fit has ``fits`` False and one never synthesized ``fits`` None; both
    have no clock (``clock_mhz`` None: priced in cycles and energy, no latency)."""
    if clock_mhz is not None:
        return {"clock_mhz": clock_mhz, "clock_source": "user", "fits": None}
    row = synthesis.accelerator_synthesis(im, ep, lanes, synth_summary)
    if row is None:
        return {"clock_mhz": None, "clock_source": "none", "fits": None}
    fit = bool(row.get("fits") and row.get("fmax_mhz"))
    return {"clock_mhz": float(row["fmax_mhz"]) if fit else None, "clock_source": "synth" if fit else "none",
            "fits": bool(row.get("fits"))}


def machine_points(intmodel: str, exit_path: str, exits: dict, seed: int, lanes: int, bandwidth: float, latency: int,
                   clock: dict, budgets) -> list[dict]:
    """Every budget on one machine (module docstring)."""
    if (intmodel, exit_path) not in _LOADED:
        _LOADED[intmodel, exit_path] = (load_intmodel(intmodel), ep_mod.load(exit_path))
    im, ep = _LOADED[intmodel, exit_path]
    depth = im.config.depth
    rs = routes(exits, seed, depth, budgets)
    mhz, clock_source, fit = clock["clock_mhz"], clock["clock_source"], clock["fits"]    # mhz None: no clock
    heads = sorted({k for r in rs if r["dist"] is not None for k in r["dist"].candidates})
    try:
        costs = cost.build(im, cost.Machine(lanes, bandwidth, latency, mhz or cost.Machine.clock_mhz), tables.load(),
                           {k: StreamDense(lanes) for k in heads}, ep.head)
    except QexitError as err:
        return [{"rows": lanes, "cols": lanes, "bandwidth": bandwidth, "error": str(err)}]
    full = costs.route_full()
    c_full, e_full = costs.cycles(full), costs.energy_pj(full)
    full_cat = Counter()
    for part in full:
        full_cat.update(part.energy(costs.table, costs.mems))
    out = []
    for r in rs:
        if r["dist"] is None:
            cyc, e, dram = c_full, e_full, cost.dram_share(full_cat)
        else:
            ex = cost.expected(costs, r["dist"])
            cyc, e = ex["cycles"], ex["energy_pj"]
            dram = cost.dram_share(sum((row["energy"] for row in ex["parts"].values()), Counter()))
        out.append({"rows": lanes, "cols": lanes, "bandwidth": bandwidth, "latency_cycles": latency,
                    "clock_mhz": mhz, "clock_source": clock_source, "fits": fit, "budget": r["budget"], "top1": r["top1"], "cycles": cyc,
                    "latency_us": cyc / mhz if mhz else None, "energy_uj": e / 1e6, "cycle_saving": 1 - cyc / c_full,
                    "energy_saving": 1 - e / e_full, "dram_share": dram})
    return out


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point beats on energy, latency and top-1 at once (lower, lower,
    higher; a point without top-1, or on a machine synthesis found does not fit the device, is
    left out: such points stay in the list, marked ``fits: False``)."""
    pts = [p for p in points if p.get("top1") is not None and "error" not in p and p.get("fits") is not False
           and p.get("latency_us") is not None]

    def beats(a, b):
        no_worse = a["energy_uj"] <= b["energy_uj"] and a["latency_us"] <= b["latency_us"] and a["top1"] >= b["top1"]
        better = a["energy_uj"] < b["energy_uj"] or a["latency_us"] < b["latency_us"] or a["top1"] > b["top1"]
        return no_worse and better
    return [p for p in pts if not any(beats(q, p) for q in pts)]
