"""The cost model: cycles and energy of an early-exit ViT on the layer engine, per image and
per exit distribution.

**Cycles** come from the layer engine's own program (``hw.program``): the segments of an
image (the patch embedding, each encoder layer, the final head) and ``timeline.predict``,
which ``qexit verify block`` checks against the RTL to the cycle, with the weight stream
timed by ``hw.cost.schedule.WeightSource``. The exit path adds, at each candidate layer whose
threshold register is on:

* the layer segment's tap: the layer's T x D/L token words leave the scratchpad one a cycle
  into the exit head (``ExitHead``, L int8 a beat), which takes them as they come;
* the **decision**: the head's work after its last token beat (``head_cycles`` less the
  T x D/L input beats; its dense phases depend on how they are built: ``hw.rtl.dense.MacDense``'s
  multipliers, or the da4ml layers' pipeline latencies), the comparator's ``LATENCY`` and one
  cycle for the sequencer to act on it, counted from the segment's ``done``
  (``decision_cycles``; ``qexit verify run`` checks it against the RTL).

The sequencer starts the next segment after the decision (it does not run ahead), so an
image that exits at candidate e costs embed + layers 1..e (taps at the candidates) + the
decisions at every candidate up to e; an image that never exits also pays the final head.
INT8 full depth is the same model with no exit path: no taps, no heads.

**Energy** is operation and access counts times an energy table (``hw.cost.tables``; Horowitz,
ISSCC 2014, 45 nm ASIC by default), per descriptor of the program:

* a GEMM: m k n int8 MACs; the row unit's int32 adds (the bias, and the partial sums of every
  k tile after the first) and, unless the output stays int32, one int32 multiply per output
  (the requantizer); its activation reads (M words per tile, from the scratchpad or the
  probability memory), its weight words (from DRAM, or the scratchpad for attention), the
  accumulator buffer's reads and writes, the output buffer's writes and the parameter reads;
* a MOVE: one read of its source and one write of its destination per word, the parameter
  stream's bytes from DRAM, and the unit's operations per element (``UNIT_OPS``);
* the softmax side channel: its reads of the int32 bank, its writes of the probability
  memory and the unit's operations;
* an exit decision: the head's operations (``head_ops``; its dense layers are counted as int8
  MACs, though da4ml builds them from adders), the reads of a MAC head's weight ROM
  (``head.rom``: one word per row chunk, every candidate's fc1 and fc2 and the class
  embeddings) and of its row constants (``head.consts``: one per fc1 and fc2 row), and the
  comparator's compares.

SRAM accesses are priced by each memory's size (``memories``) and word width; a write costs
what a read does (the table gives reads only). The counts do not depend on the table, so
``priced`` prices the same image under another one: ``summary`` shows the default table and,
beside it, the FPGA estimate (``hw/cost/tables/fpga_ecp5_scaled.json``: on-chip entries x 14,
DRAM unchanged), each with the share of its total that is DRAM. **Left out**: static
(leakage) power, clock tree and control, and loading each segment's program (one word per
descriptor) before its start, which ``timeline.predict`` does not count either.

**Mixed precision**: an IntModel's per-block widths change nothing on the INT8
engine (``Machine.scalable`` False): its PEs, buffers and DRAM words are 8-bit, so a 6- or
4-bit block costs what an 8-bit one does. With ``scalable`` the PEs are precision-scalable:
one int8 PE does one 8x8 MAC or two 4x4 MACs a cycle (``hw.rtl.pe.ScalablePE``: two 4-bit weights
packed into its one multiplier's operand). A block whose weights and activations are both at
most 4 bits then holds two 4-bit weights a PE, so each weight-streamed GEMM (qkv, proj, fc1, fc2) of m x k x n runs
as the 8-bit GEMM of m x k x n' with n' = ceil(n / 2L) L: the same weight bytes a tile, half
the tiles. Its cycles, DRAM bytes, MAC-cycle energy (one int8 MAC's energy for a PE cycle
doing two 4x4 MACs: conservative) and buffer accesses are those of that GEMM. Attention
(Q·Kᵀ and P·V from the scratchpad), the units and the parameter streams stay as they are. The
PE and the array are RTL (``hw.rtl.systolic.SystolicArray(scalable=True)``, bit-exact in
``tests/test_hw_systolic.py``, also as Verilog under cocotb); the GEMM engine's controller,
accumulator and output path for packed GEMMs (two column sums a column) are not built, so a
packed GEMM's timing is a model.

**Throughput mode** (``batch_cycles``): a batch of B images shares every streamed weight
tile: each weight-streamed GEMM runs once with M = b T, everything else (attention, units,
moves, decisions) once per image; at layer l, b_l = ceil(B P(reach l)) images remain. This is
a model only: the engine's buffers hold one image, and no RTL checks it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from hw import program
from hw.cost import schedule, timeline
from hw.cost.tables import FPGA, EnergyTable
from hw.cost.tables import load as load_table
from hw.rtl import comparator
from hw.rtl.accelerator import record_bytes
from hw.rtl.dense import ROW_CONST, MacDense, StreamDense, dense_latencies, head_dense
from hw.rtl.head import block_phases, head_cycles
from hw.rtl.isa import FETCH_CYCLES, Dst, Op, Src, Unit, bus_bits, desc_beats, param_beats
from model.errors import QexitError

# Operations per element (and per row) of each unit, read off its datapath: "mult32" a
# multiply wider than 8x8 bits, "add32" an add or compare up to 32 bits (an adder step of a
# digit recurrence counts as one), "mult8" an 8x8 multiply.
UNIT_OPS = {
    Unit.LN: {"elem": {"mult8": 1, "add32": 4, "mult32": 3}, "row": {"mult32": 2, "add32": 1 + 28 + 41}},
    Unit.GELU: {"elem": {"mult32": 3, "add32": 3}},
    Unit.ADD: {"elem": {"mult32": 2, "add32": 2}},
    "softmax": {"elem": {"add32": 4, "mult32": 2}, "row": {"add32": 19}},
}


@dataclass(frozen=True)
class Machine:
    """The operating point: an R x C array, the weight stream, the clock.

    ``lanes`` is R, the array's rows; ``cols`` is C (None: as many as the rows, the square
    layer engine, the only shape ``build`` prices). ``bandwidth`` is the weight stream in
    bytes per cycle (None: a source that always has the next word) and ``latency`` its
    first-word latency in cycles (``schedule.WeightSource``); ``clock_mhz`` turns cycles into
    time. ``scalable``: precision-scalable PEs, two 4x4 MACs a cycle (the module docstring)."""
    lanes: int = 8
    bandwidth: float | None = 8.0
    latency: int = 20
    clock_mhz: float = 100.0
    scalable: bool = False
    cols: int | None = None

    def __post_init__(self):
        if self.cols is None:
            object.__setattr__(self, "cols", self.lanes)
        if any(not isinstance(n, int) or n < 1 for n in (self.lanes, self.cols)):
            raise QexitError(f"array rows = {self.lanes}, cols = {self.cols}: both must be integers >= 1 "
                             f"(e.g. --rows 8 --cols 8)")
        if not (isinstance(self.clock_mhz, (int, float)) and self.clock_mhz > 0):
            raise QexitError(f"clock {self.clock_mhz} MHz must be > 0 (e.g. --clock-mhz 100)")
        self.source                                   # checks bandwidth and latency

    @property
    def rows(self) -> int:
        return self.lanes

    @property
    def source(self) -> schedule.WeightSource:
        return schedule.WeightSource(self.bandwidth, self.latency)

    @property
    def port(self) -> schedule.MemoryPort:
        """The accelerator's memory port: this bandwidth and latency, beats of one weight word."""
        return schedule.MemoryPort(self.bandwidth, self.latency, bus_bits(self.lanes) // 8)

    def describe(self) -> dict:
        """The machine as a report's summary.json names it."""
        return {"rows": self.rows, "cols": self.cols, "bandwidth_bytes_per_cycle": self.bandwidth,
                "weight_latency_cycles": self.latency, "clock_mhz": self.clock_mhz}


@dataclass
class Part:
    """One piece of an image's work: its cycles, their split by descriptor kind, and its
    operation and access counts (``counts``: "mac8", "add32", "mult32", "mult8", "dram_bytes",
    and "<memory>:r" / "<memory>:w" word accesses)."""
    name: str
    cycles: int
    kinds: dict = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    macs: int = 0
    layer: int = 1                # the backbone layer whose images run it (the final head: depth)
    seg: list = field(default_factory=list)   # its program segment (none for a decision)

    def energy(self, table: EnergyTable, mems: dict) -> dict[str, float]:
        return energy(self.counts, table, mems)


def memories(cfg) -> dict[str, tuple[int, int]]:
    """Every on-chip memory of a layer engine config as (words, bits per word)."""
    out = {f"gemm.{k}": v for k, v in cfg.gemm.buffers.items()}
    out["scratch"] = (cfg.scratch_words, 8 * cfg.lanes)
    out["probabilities"] = (cfg.p_words, 8 * cfg.lanes)
    if cfg.table:
        out["act_table"] = (256, 8 * cfg.lanes)       # one copy of the 256 entries per lane
    return out


def energy(counts: Counter, table: EnergyTable, mems: dict) -> dict[str, float]:
    """Picojoules by category: mac, alu (adds and multiplies outside the array), sram, dram."""
    out = {"mac": counts["mac8"] * table.int8_mac,
           "alu": counts["add32"] * table["int32_add"] + counts["mult32"] * table["int32_mult"]
           + counts["mult8"] * table["int8_mult"],
           "sram": 0.0, "dram": table.dram_bytes(counts["dram_bytes"])}
    for key, n in counts.items():
        if ":" in key:
            words, bits = mems[key.split(":")[0]]
            out["sram"] += n * table.sram_read(words * bits // 8, bits)
    return out


def _scale(ops: dict, n: int, into: Counter) -> None:
    for k, v in ops.items():
        into[k] += v * n


PARAM_BITS = {Dst.ENG_P: "gemm.p", Dst.ENG_TB: "gemm.tbias"}


def desc_counts(d: program.Desc, lanes: int, mems: dict) -> Counter:
    """Operation and access counts of one descriptor (the module docstring's rules)."""
    c: Counter = Counter()
    f, L = d.fields, lanes
    if d.kind == "end":
        return c
    if f["op"] == Op.GEMM:
        m, k, n = f["m"], f["k"], f["n"]
        kt, nt = schedule.tile_counts(k, n, L, L)
        c["mac8"] += m * k * n
        c["add32"] += m * n * kt
        if not d["raw"]:
            c["mult32"] += m * n
        w_words = kt * L * nt
        if d["w_scratch"]:
            c["scratch:r"] += w_words
        else:
            c["dram_bytes"] += w_words * L
        c["probabilities:r" if d["a_from_p"] else "scratch:r"] += m * kt * nt
        c["gemm.acc:r"] += m * nt * (kt - 1)
        c["gemm.acc:w"] += m * nt * (kt - 1)
        c["gemm.raw:w" if d["raw"] else "gemm.out:w"] += m * nt
        c["gemm.p:r"] += nt
        if d["token_bias"]:
            c["gemm.tbias:r"] += m * nt
        return c
    if f["op"] == Op.SOFTMAX:
        elems, rows = f["elems"], f["total"] // -(-f["elems"] // L)
        c["gemm.raw:r"] += f["total"]
        c["probabilities:w"] += f["total"]
        _scale(UNIT_OPS["softmax"]["elem"], rows * elems, c)
        _scale(UNIT_OPS["softmax"]["row"], rows, c)
        return c
    total, src, dst, unit = f["total"], f["src"], f["dst"], f["unit"]
    if src == Src.SCRATCH:
        c["scratch:r"] += total
    elif src == Src.ENG_OUT:
        c["gemm.out:r"] += total
    elif src == Src.ENG_RAW:
        c["gemm.raw:r"] += total
    elif src == Src.PARAM:
        c["dram_bytes"] += total * param_beats(L) * bus_bits(L) // 8       # a parameter word's footprint
    if dst in (Dst.SCRATCH, Dst.TRANSPOSE):
        c["scratch:w"] += total
    elif dst in PARAM_BITS:
        c[f"{PARAM_BITS[dst]}:w"] += total
    if unit == Unit.ADD:
        c["scratch:r"] += total                       # the residual, the add's second operand
    if unit == Unit.TABLE:
        c["act_table:r"] += total * L                 # one entry read a value
    elif dst == Dst.TABLE:
        c["act_table:w"] += total * L
    if unit in (Unit.LN, Unit.GELU, Unit.ADD):
        ops = UNIT_OPS[unit]
        _scale(ops["elem"], total * L, c)
        if "row" in ops:
            _scale(ops["row"], total // (f["elems"] // L), c)
    return c


def segment_part(name: str, seg: list[program.Desc], lanes: int, port: schedule.MemoryPort, mems: dict,
                 layer: int, prog_beats: int, image_words: int = 0, extra: int = 0) -> Part:
    """A segment as the accelerator runs it (``timeline.segment_cycles``): its descriptors, the
    program fetch, the image load (``image_words``), the sequencer's cycles and ``extra``."""
    counts: Counter = Counter()
    for d in seg:
        counts.update(desc_counts(d, lanes, mems))
    step = port.beat_bytes
    counts["dram_bytes"] += (len(seg) * prog_beats + image_words) * step
    cycles = timeline.segment_cycles(seg, lanes, port, prog_beats, image_words) + extra
    kinds = timeline.shares(seg, lanes, port.weights, port)
    kinds["sequencer"] = cycles - sum(kinds.values())
    return Part(name, cycles, kinds, counts, program.segment_macs(seg), layer, seg)


PACK_BITS = 4           # a block at most this wide (weights and activations) packs two MACs a PE


def packs(widths: tuple[int, int]) -> bool:
    return max(widths) <= PACK_BITS


def packed(seg: list[program.Desc], lanes: int) -> list[program.Desc]:
    """A layer segment on precision-scalable PEs: every weight-streamed GEMM as the 8-bit GEMM
    with half the output tiles (the module docstring); everything else as it is."""
    out = []
    for d in seg:
        if d.kind == "gemm" and d["op"] == Op.GEMM and not d["w_scratch"]:
            d = dataclasses.replace(d, fields={**d.fields, "n": -(-d["n"] // (2 * lanes)) * lanes})
        out.append(d)
    return out


def head_ops(head, tokens: int) -> Counter:
    """One exit decision's operations: the head (token sums, SSA requantizer, LayerNorm, three
    dense layers as int8 MACs, two requantizers, norm, reciprocal, scaling, 15-bit softmax,
    gate) and the comparator (one compare per class, one for the gate)."""
    d, h, e, k = head.width, head.hidden, head.embed_dim, head.classes
    c: Counter = Counter()
    c["add32"] += 2 * (tokens - 1) * d                # S += x, Q += x*x
    c["mult8"] += (tokens - 1) * d
    c["mult32"] += 2 * d                              # a = S m_a; P Q - S**2
    _scale(UNIT_OPS[Unit.LN]["elem"], d, c)
    _scale(UNIT_OPS[Unit.LN]["row"], 1, c)
    c["mac8"] += d * h + h * e + e * k
    c["mult32"] += h + e + e + 2 * k + 3              # requantizers, e**2, z, gate
    c["add32"] += e + 28 + 41 + 4 + (k + 1)          # norm sum, isqrt, divider, top-2, comparator
    _scale(UNIT_OPS["softmax"]["elem"], k, c)
    _scale(UNIT_OPS["softmax"]["row"], 1, c)
    return c


TAP_TAIL = FETCH_CYCLES + 1     # the tap's last beat -> the segment's done: the END descriptor's fetch, then done


def decision_cycles(head, tokens: int, lanes: int, dense) -> int:
    """Cycles from the layer segment's ``done`` to the sequencer acting on the decision: the
    head's work after the last token beat (``head_cycles`` less the T D/L input beats), the
    comparator's latency and one cycle for the sequencer, less the ``TAP_TAIL`` cycles of
    that work that fall inside the segment (the tap is the segment's last descriptor before
    END). ``dense`` is what ``hw.rtl.dense.dense_cycles`` takes. ``qexit verify run`` measures it
    from the RTL's counters."""
    return (head_cycles(head, tokens, lanes, dense) - tokens * (head.width // lanes)
            + comparator.ExitComparator.LATENCY + 1 - TAP_TAIL)


@dataclass
class Costs:
    """Every part of an image on one machine, as the accelerator runs it: ``embed`` (the
    IMAGE state, the image's load and the patch embedding), ``layers`` (with the tap where
    ``candidates`` has the layer, without it in ``plain``), ``decision`` per candidate layer (the
    head and the comparator after the segment's ``done``), ``final`` (the final head and its
    decision), ``result`` (the record's write), and the memories the energies price."""
    machine: Machine
    depth: int
    embed: Part
    layers: dict[int, Part]
    plain: dict[int, Part]
    decision: dict[int, Part]
    final: Part
    result: Part
    mems: dict
    table: EnergyTable
    prog_beats: int = 0           # memory beats per descriptor word

    def route(self, exit_layer: int | None, on=None) -> list[Part]:
        """The parts an image runs: exit at a candidate layer, or ``None`` for full depth, with
        a decision at every layer of ``on`` on the way (default: every candidate built), then
        its result's write; ``route_full`` is full depth with no exit path."""
        on = set(self.decision if on is None else on)
        missing = on - set(self.decision)
        if missing:
            raise QexitError(f"no exit head was costed at layers {sorted(missing)} (built: {sorted(self.decision)})")
        last = self.depth if exit_layer is None else exit_layer
        parts = [self.embed]
        for i in range(1, last + 1):
            parts.append(self.layers[i] if i in on else self.plain[i])
            if i in on:
                parts.append(self.decision[i])
        return parts + ([self.final] if exit_layer is None else []) + [self.result]

    def route_full(self) -> list[Part]:
        return [self.embed] + [self.plain[i] for i in range(1, self.depth + 1)] + [self.final, self.result]

    def cycles(self, parts: list[Part]) -> int:
        return sum(p.cycles for p in parts)

    def record_cycles(self, parts: list[Part]) -> int:
        """What the accelerator's result record holds: the route's cycles up to its write."""
        return self.cycles([p for p in parts if p is not self.result])

    def energy_pj(self, parts: list[Part]) -> float:
        return sum(sum(p.energy(self.table, self.mems).values()) for p in parts)


def build(im, machine: Machine, table: EnergyTable, candidates: dict, head=None) -> Costs:
    """The parts of ``im`` on ``machine``. ``candidates`` maps each backbone layer (1-based)
    whose exit is on to its head's dense layers as ``hw.rtl.dense.dense_cycles`` takes them (a
    ``MacDense``, or da4ml latencies (fc1, fc2, scores)); ``head`` is the ``FixedHead``
    (needed when there are candidates)."""
    depth = im.config.depth
    if machine.rows != machine.cols:
        raise QexitError(f"the layer engine's array is square; got {machine.rows}x{machine.cols} "
                         f"(--rows {machine.rows} --cols {machine.cols})")
    bad = [k for k in candidates if not 1 <= k < depth]
    if bad:
        raise QexitError(f"exit layers {bad} are outside 1..{depth - 1} (the last layer is full depth)")
    if candidates and head is None:
        raise QexitError("candidate layers need the exit head (pass the exit path)")
    L = machine.lanes
    port = machine.port
    plan, segs = program.model_program(im, L, tap=False)
    _, named = program.accelerator_segments(im, L, set(candidates))
    cfg = program.engine_config(plan, list(named.values()) + [program.layer_segment(plan, im, 0, tap=True)])
    mems = memories(cfg)
    db = desc_beats(cfg)
    widths = getattr(im, "block_widths", ((8, 8),) * depth)

    def layer_part(i: int, seg: list[program.Desc]) -> Part:
        if not (machine.scalable and packs(widths[i - 1])):
            return segment_part(f"layer {i}", seg, L, port, mems, i, db)
        part = segment_part(f"layer {i}", packed(seg, L), L, port, mems, i, db)
        part.macs = program.segment_macs(seg)          # the MACs done; the cycles and energy packed
        return part

    image_words = (plan.tokens - 1) * -(-plan.patch_dim // L)        # the patches, as sim.image packs them
    embed = segment_part("embed", segs[0], L, port, mems, 1, db, image_words, extra=1)
    plain = {i: layer_part(i, segs[i]) for i in range(1, depth + 1)}
    layers = {i: layer_part(i, program.layer_segment(plan, im, i - 1, tap=True)) for i in candidates}
    final = segment_part("final head", named["final"], L, port, mems, depth, db,
                         extra=timeline.final_cycles(plan.classes))
    result = Part("result", timeline.result_cycles(L), {"sequencer": timeline.result_cycles(L)}, Counter(), 0, depth)
    result.counts["dram_bytes"] += record_bytes(L)
    decision = {}
    shared = [k for k, d in candidates.items() if isinstance(d, MacDense)]   # one MAC head serves them
    streamed = None
    for i, dense in sorted(candidates.items()):
        ops = head_ops(head, plan.tokens)
        if isinstance(dense, StreamDense):             # the accelerator's head: its block through the port
            if streamed is None:
                streamed = timeline.streamed_head_cycles(head, L, port, TAP_TAIL)
            c = streamed
            ops["dram_bytes"] += sum(block_phases(head, L, L).values()) * port.beat_bytes
        else:
            c = decision_cycles(head, plan.tokens, L, dense) - 1
        if isinstance(dense, MacDense):
            fc1, fc2, scores = dense.rom_words(head)
            mems["head.rom"] = (len(shared) * (fc1 + fc2) + scores, 8 * dense.macs)
            mems["head.consts"] = (len(shared) * (head.hidden + head.embed_dim), sum(ROW_CONST))
            ops["head.rom:r"] += fc1 + fc2 + scores
            ops["head.consts:r"] += head.hidden + head.embed_dim
        decision[i] = Part(f"exit {i}", c, {"exit": c}, ops,
                           head.width * head.hidden + head.hidden * head.embed_dim + head.embed_dim * head.classes, i)
    return Costs(machine, depth, embed, layers, plain, decision, final, result, mems, table, db)


# --------------------------------------------------------------------------- distributions

@dataclass(frozen=True)
class Distribution:
    """Shares of images by exit layer (1-based; ``depth`` = full depth, no exit) and the
    candidate layers whose exit is on (their heads run)."""
    layers: tuple[int, ...]
    fraction: tuple[float, ...]
    candidates: tuple[int, ...]

    def check(self, depth: int) -> None:
        if len(self.layers) != len(self.fraction) or not self.layers:
            raise QexitError(f"exit distribution: {len(self.layers)} layers but {len(self.fraction)} fractions")
        if any(not 1 <= k <= depth for k in self.layers) or list(self.layers) != sorted(set(self.layers)):
            raise QexitError(f"exit distribution layers {list(self.layers)} must rise within 1..{depth}")
        if any(not (f >= 0) for f in self.fraction) or abs(sum(self.fraction) - 1) > 1e-6:
            raise QexitError(f"exit distribution fractions must be >= 0 and sum to 1 (they sum to {sum(self.fraction):.6g})")
        off = [k for k, f in zip(self.layers, self.fraction) if k < depth and f > 0 and k not in self.candidates]
        if off:
            raise QexitError(f"images exit at layers {off}, whose exits are off; check the distribution's candidates")

    def reach(self, layer: int) -> float:
        """P(an image runs backbone layer ``layer``)."""
        return sum(f for k, f in zip(self.layers, self.fraction) if k >= layer)


def expected(costs: Costs, dist: Distribution) -> dict:
    """Expected cycles and energy per image under ``dist``, with each part's expected share."""
    dist.check(costs.depth)
    per_part: dict[str, dict] = {}
    cycles = energy_pj = macs = 0.0
    for k, f in zip(dist.layers, dist.fraction):
        if f == 0:
            continue
        for p in costs.route(None if k == costs.depth else k, dist.candidates):
            e = p.energy(costs.table, costs.mems)
            row = per_part.setdefault(p.name, {"cycles": 0.0, "energy_pj": 0.0, "reach": 0.0, "kinds": Counter(),
                                               "energy": Counter()})
            row["cycles"] += f * p.cycles
            row["energy_pj"] += f * sum(e.values())
            row["reach"] += f
            for kk, v in p.kinds.items():
                row["kinds"][kk] += f * v
            for kk, v in e.items():
                row["energy"][kk] += f * v
            cycles += f * p.cycles
            energy_pj += f * sum(e.values())
            macs += f * p.macs
    return {"cycles": cycles, "energy_pj": energy_pj, "macs": macs, "parts": per_part}


def batch_part(seg: list[program.Desc], lanes: int, port: schedule.MemoryPort, mems: dict, b: int) -> Part:
    """A segment's descriptors for b images in throughput mode (module docstring): the
    streamed-weight GEMMs once with M = b m, their parameters once, everything else b times."""
    part = Part("batch", 0)
    if b <= 0:
        return part
    source = port.weights
    for d, c in zip(seg, timeline.predict(seg, lanes, port=port)):
        if d.kind == "gemm" and not d["w_scratch"]:
            big = program.Desc(d.name, d.kind, {**d.fields, "m": b * d["m"]}, d.data)
            part.cycles += c - schedule.predict_cycles(lanes, lanes, d["m"], d["k"], d["n"], source) \
                + schedule.predict_cycles(lanes, lanes, b * d["m"], d["k"], d["n"], source)
            part.counts.update(desc_counts(big, lanes, mems))
        elif d.kind in ("params", "end"):
            part.cycles += c
            part.counts.update(desc_counts(d, lanes, mems))
        else:
            part.cycles += b * c
            _scale(desc_counts(d, lanes, mems), b, part.counts)
    return part


def _blend(seg: list[program.Desc], lanes: int, port: schedule.MemoryPort, mems: dict, b: float) -> Part:
    """``batch_part`` at a fractional batch: the two integer batches around it, weighted."""
    lo = math.floor(b)
    w = b - lo
    a, c = batch_part(seg, lanes, port, mems, lo), batch_part(seg, lanes, port, mems, lo + 1) if w else None
    if c is None:
        return a
    part = Part("batch", (1 - w) * a.cycles + w * c.cycles)
    _scale(a.counts, 1 - w, part.counts)
    _scale(c.counts, w, part.counts)
    return part


def throughput(costs: Costs, dist: Distribution | None, batch: int) -> dict:
    """Throughput mode at ``batch`` images in flight: images per second and energy per image;
    ``dist`` None is INT8 full depth with no exit path. Images that exit are replaced, so in
    steady state B P(reach l) images run layer l (a fractional count weighs the integer
    batches around it); at batch 1 this is the latency mode's expectation. A segment's
    sequencer work (its program fetch, the table read, the image loads) is charged once per
    batch that runs it (at most once; at batch 1 its share P(reach)): the accelerator in RTL runs one image at a time, so this mode is an estimate of a
    batched variant."""
    if not isinstance(batch, int) or batch < 1:
        raise QexitError(f"batch {batch} must be an integer >= 1 (e.g. --batch 16)")
    m = costs.machine
    parts = []
    for p in (costs.route_full() if dist is None else costs.route(None, dist.candidates)):
        b = batch if dist is None or p is costs.embed or p is costs.result else batch * dist.reach(p.layer)
        if p.seg:
            parts.append(_blend(p.seg, m.lanes, m.port, costs.mems, b))
            engine = sum(timeline.predict(p.seg, m.lanes, port=m.port))
            once = min(b, 1.0)                          # the segment runs at all in this batch
            counts = Counter(p.counts)
            for d in p.seg:
                counts.subtract(desc_counts(d, m.lanes, costs.mems))
            parts.append(Part("sequencer", once * (p.cycles - engine)))
            _scale(counts, once, parts[-1].counts)
        else:                                          # a decision: once per image
            parts.append(Part("decisions", b * p.cycles))
            _scale(p.counts, b, parts[-1].counts)
    cycles = costs.cycles(parts)
    return {"batch": batch, "cycles_per_batch": cycles, "throughput_ips": batch * m.clock_mhz * 1e6 / cycles,
            "energy_pj": costs.energy_pj(parts) / batch}


def atheena(costs: Costs, dist: Distribution) -> dict:
    """ATHEENA's throughput for the same exits: each stage (the work from one exit on to the
    next) on its own engine, pipelined, so throughput = min over stages of T_s / p_s (T_s the
    stage's own rate, p_s the share of images that reach it); ``min(T1, T2/p)`` for two
    stages. Against this project's one time-shared engine at f / E[cycles]."""
    f = costs.machine.clock_mhz * 1e6
    on = set(dist.candidates)
    bounds = [0] + sorted(on) + [costs.depth]
    stages = []
    for lo, hi in zip(bounds, bounds[1:]):
        before = len(costs.route(lo, on)) - 1 if lo else 0          # its parts before the result's write
        c = costs.cycles(costs.route(None if hi == costs.depth else hi, on)[before:])
        p = dist.reach(lo + 1) if lo else 1.0
        stages.append({"layers": [lo + 1, hi], "cycles": c, "reach": p, "rate_ips": f / c,
                       "bound_ips": f / c / p if p > 0 else math.inf})
    return {"stages": stages, "engines": len(stages), "throughput_ips": min(s["bound_ips"] for s in stages)}


# --------------------------------------------------------------------------- inputs and summary

def read_exits(path) -> dict:
    """``qexit exits``'s exit_distribution.json, or one line on what is wrong with it."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise QexitError(f"no exit distribution at {path}; run `qexit exits` first") from None
    except ValueError as err:
        raise QexitError(f"exit distribution {path} is not valid JSON ({err})") from None


def load_distribution(exits: dict, seed: int | None, depth: int) -> tuple[Distribution, dict]:
    """The exit distribution of ``qexit exits``'s ``exit_distribution.json`` (its primary
    mode): one seed's routing (its exits on where its threshold is finite), or, with ``seed``
    None, the mean over seeds with every layer that any seed exits at on. Also returns the
    FLOPs per exit layer the exits step counted, and top-1 with exits and at full depth."""
    try:
        mode = exits["modes"][exits["mode_primary"]]
        seeds = mode["seeds"]
    except (KeyError, TypeError):
        raise QexitError("the exit distribution is not `qexit exits`'s exit_distribution.json "
                         "(no modes/<mode_primary>/seeds); rerun `qexit exits`") from None
    if exits.get("depth") != depth:
        raise QexitError(f"the exit distribution is for depth {exits.get('depth')}, the IntModel has {depth} layers")
    if seed is None:
        on = sorted({int(k) for s in seeds for k, v in s["thresholds"].items() if math.isfinite(v)})
        dist = Distribution(tuple(mode["layers"]), tuple(mode["fraction"]), tuple(on))
        reported = {"per_layer": None, "full_depth": exits["full_depth_flops"], "top1": mode.get("top1")}
    else:
        if not 0 <= seed < len(seeds):
            raise QexitError(f"seed {seed} is not in the exit distribution (it has seeds 0..{len(seeds) - 1})")
        s = seeds[seed]
        on = sorted(int(k) for k, v in s["thresholds"].items() if math.isfinite(v))
        dist = Distribution(tuple(s["layers"]), tuple(s["fraction"]), tuple(on))
        reported = {"per_layer": dict(zip(s["layers"], s["flops"])), "full_depth": s["full_depth_flops"],
                 "top1": sum(f * a for f, a in zip(s["fraction"], s["top1"])) if "top1" in s else None,
                 "pareto": s.get("pareto", [])}
    reported["top1_full_depth"] = mode.get("top1_full_depth")
    dist.check(depth)
    return dist, reported


def head_latencies(ep, layers: list[int], jobs: int = 1, progress: bool = False) -> dict[int, tuple]:
    """da4ml pipeline latencies (fc1, fc2, scores) of the exit path's head at each backbone
    layer in ``layers`` (a solve takes tens of seconds a layer at full size; cached)."""
    missing = [k for k in layers if k not in ep.layers]
    if missing:
        raise QexitError(f"the exit path has no head at layers {missing} (it has {ep.layers})")
    idx = {k: ep.layers.index(k) for k in layers}
    out = {}
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        futures = {k: pool.submit(_latencies, ep.head, idx[k], k) for k in layers}
        for k in tqdm(layers, desc="da4ml heads", disable=not progress):
            out[k] = futures[k].result()
    return out


def _latencies(head, k: int, layer: int) -> tuple:
    return dense_latencies(head_dense(head, k, layer))


def dram_share(by_category: dict) -> float:
    """The share of an energy split by category (``energy``'s) that is DRAM."""
    total = sum(by_category.values())
    return by_category.get("dram", 0.0) / total if total > 0 else 0.0


def priced(costs: Costs, dist: Distribution, table: EnergyTable, ex: dict | None = None) -> dict:
    """Energy per image under ``table`` (the same counts as ``costs``): full depth (no exit
    path) and early exit under ``dist``, the saving, each split by category and its DRAM share;
    ``ex`` is ``expected(costs, dist)`` where ``costs`` already prices with ``table``."""
    c = dataclasses.replace(costs, table=table)
    full: Counter = Counter()
    for p in c.route_full():
        full.update(p.energy(table, c.mems))
    ex = expected(c, dist) if ex is None or costs.table is not table else ex
    exit_cat = {k: sum(r["energy"][k] for r in ex["parts"].values()) for k in full}
    e_full = sum(full.values())
    return {"energy_full_pj": e_full, "energy_exit_pj": ex["energy_pj"], "energy_saving": 1 - ex["energy_pj"] / e_full,
            "dram_share_full": dram_share(full), "dram_share_exit": dram_share(exit_cat),
            "energy_by_category_full_pj": dict(full), "energy_by_category_exit_pj": exit_cat}


def summary(costs: Costs, dist: Distribution, batch: int, reported: dict | None = None,
            fpga: EnergyTable | None = None) -> dict:
    """Everything ``qexit cost`` reports: full depth against early exit in cycles, energy,
    latency, throughput, MACs, BOPs and FLOPs, with the per-part breakdown; ``reported`` is what
    ``load_distribution`` read beside the distribution (FLOPs, top-1). Energy is under
    ``costs.table`` (the unsuffixed keys, ``energy_table`` naming it) and, beside it, under
    ``fpga`` (default: ``hw/cost/tables/fpga_ecp5_scaled.json``; the keys ending ``_fpga``,
    ``energy_table_fpga`` naming it); ``dram_share_*`` is the share of each total that is DRAM."""
    m = costs.machine
    full_parts = costs.route_full()
    cyc_full, e_full = costs.cycles(full_parts), costs.energy_pj(full_parts)
    macs_full = sum(p.macs for p in full_parts)
    ex = expected(costs, dist)
    own = priced(costs, dist, costs.table, ex)
    fpga = load_table(FPGA) if fpga is None else fpga
    beside = priced(costs, dist, fpga)
    thr_full, thr_exit = throughput(costs, None, batch), throughput(costs, dist, batch)
    ath = atheena(costs, dist)
    us = 1 / m.clock_mhz

    def split(parts):
        cat, kinds = Counter(), Counter()
        for p in parts:
            cat.update(p.energy(costs.table, costs.mems))
            kinds.update(p.kinds)
        return dict(cat), dict(kinds)

    e_cat_full, kinds_full = split(full_parts)
    out = {
        "cycles_full": cyc_full, "cycles_exit": ex["cycles"], "cycle_saving": 1 - ex["cycles"] / cyc_full,
        "energy_full_pj": e_full, "energy_exit_pj": ex["energy_pj"], "energy_saving": 1 - ex["energy_pj"] / e_full,
        "latency_us": ex["cycles"] * us, "latency_full_us": cyc_full * us,
        "throughput_ips": thr_exit["throughput_ips"], "throughput_full_ips": thr_full["throughput_ips"],
        "clock_mhz": m.clock_mhz,
        "layer_cycles_full": [costs.plain[i].cycles for i in range(1, costs.depth + 1)],
        "macs_full": macs_full, "macs_exit": ex["macs"], "bops_full": 64 * macs_full, "bops_exit": 64 * ex["macs"],
        "bop_saving": 1 - ex["macs"] / macs_full,
        "machine": m.describe(),
        "distribution": {"layers": list(dist.layers), "fraction": list(dist.fraction),
                         "candidates": list(dist.candidates)},
        "latency_mode": {"cycles_full": cyc_full, "cycles_exit": ex["cycles"], "energy_full_pj": e_full,
                         "energy_exit_pj": ex["energy_pj"], "images_per_s_full": m.clock_mhz * 1e6 / cyc_full,
                         "images_per_s_exit": m.clock_mhz * 1e6 / ex["cycles"]},
        "throughput_mode": {"full": thr_full, "exit": thr_exit,
                            "energy_saving": 1 - thr_exit["energy_pj"] / thr_full["energy_pj"]},
        "atheena": {**ath, "this_engine_ips": m.clock_mhz * 1e6 / ex["cycles"],
                    "atheena_per_engine_ips": ath["throughput_ips"] / ath["engines"]},
        "energy_by_category_full_pj": e_cat_full,
        "energy_by_category_exit_pj": {k: sum(r["energy"][k] for r in ex["parts"].values())
                                       for k in e_cat_full},
        "cycles_by_kind_full": kinds_full,
        "cycles_by_kind_exit": dict(sum((Counter(r["kinds"]) for r in ex["parts"].values()), Counter())),
        "parts": [{"part": name, "reach": r["reach"], "cycles": r["cycles"], "energy_pj": r["energy_pj"],
                   "energy_pj_by_category": dict(r["energy"])} for name, r in ex["parts"].items()],
        "energy_table": costs.table.describe(),
        "dram_share_full": own["dram_share_full"], "dram_share_exit": own["dram_share_exit"],
        **{f"{k}_fpga": v for k, v in beside.items()},
        "energy_table_fpga": fpga.describe(),
    }
    if reported:
        out.update({"top1_exit": reported.get("top1"), "top1_full_depth": reported.get("top1_full_depth")})
        full = reported["full_depth"]
        if reported.get("per_layer"):
            per = {int(k): v for k, v in reported["per_layer"].items()}
            exp_flops = sum(f * per[k] for k, f in zip(dist.layers, dist.fraction))
            out.update({"flops_full": full, "flops_exit": exp_flops, "flop_saving": 1 - exp_flops / full})
        else:
            out["flops_full"] = full
    return out


def pareto(costs: Costs, routes: list[dict]) -> list[dict]:
    """Each LCT budget's routing (``qexit exits``'s Pareto sweep, per seed) priced on this
    machine: top-1 against the saving in cycles and in energy, beside the FLOPs saving."""
    full = costs.route_full()
    c_full, e_full = costs.cycles(full), costs.energy_pj(full)
    out = []
    for r in routes:
        layers = [int(k) for k in r["layers"]]
        dist = Distribution(tuple(layers), tuple(r["fraction"]), tuple(k for k in layers if k < costs.depth))
        ex = expected(costs, dist)
        out.append({"budget": r["budget"], "top1": r["top1"], "flops_saving": r["flops_saving"],
                    "cycle_saving": 1 - ex["cycles"] / c_full, "energy_saving": 1 - ex["energy_pj"] / e_full})
    return out
