"""Mixed precision with early exits: per-block bit-widths measured with the exits,
costed utilization-aware, allocated by a PMQ-style and a MAQEE-style search, and the noise
sweep that looks for the Rescue Effect.

**The bench** (``Bench``) is built once: the 8-bit calibration statistics (every assignment is
``model.quantize.from_scales`` of the same scales), SSA exit heads and a gate trained on the
uniform 8-bit model's features (the deployed heads; they stay fixed while the bit-widths move),
the 8-bit run's int8 tokens of every block on the gating and test images (an assignment that
keeps blocks 1..j at 8 bits restarts the golden model at block j + 1 from them: the same
integers, a shorter run), and the FP32 model's test predictions.

**Measuring an assignment** (``Bench.measure``) runs the golden model with its widths on the
gating and test images and keeps, per candidate layer, the heads' predictions and the gate's
probability, the full-depth prediction, and the per-block NSR against FP32 (``model.qirc``).
``Bench.operate`` is the inner level: the LCT thresholds under a FLOPs budget, chosen on the
gating split for this assignment (``model.exits.thresholds``), the test split routed with them,
and the costs of that routing:

* **BOPs**, utilization-aware (APQ): each image pays the embedding, the blocks up to its exit at
  their widths (``model.flops.block_bops``), the exit heads it reaches and, at full depth, the
  final head. The mean over the test images is ``E[BOPs] = Σ_l P(reach l) BOPs_l(b_l) + ...``.
* **cycles and energy** from ``hw.cost`` on that routing's distribution, on two machines: the
  INT8 layer engine (widths change nothing there) and the same engine with precision-scalable
  PEs (``Machine.scalable``: a block at <= 4 bits packs two MACs a PE).
* the **decision flip rate**: the share of images whose (exit layer, class) differs from the
  uniform 8-bit model's under the same thresholds, on the gating split (what the risk control
  bounds) and on the test split: the flips quantization causes, not those of moving the
  thresholds.

**The allocators** share one greedy walk. A move lowers one block's weights or activations to 6
or 4 bits. Each move is measured alone on ``probe`` gating images, then the moves are applied
in order of saving over sensitivity, and the walk's assignments are measured and operated at
every budget of ``BUDGETS``:

* **PMQ-style**: sensitivity = the rise in the last block's NSR (the noise the move adds at the
  output), saving = the full-depth BOPs it removes. A Pareto allocation by sensitivity.
* **MAQEE-style** (joint, risk-controlled): saving = the *amortized* BOPs it removes,
  P(reach block) x ΔBOPs under the 8-bit model's routing at the operating budget (deep blocks
  run for fewer images, so they matter less), sensitivity = the decision flip rate it causes
  at that operating point (8-bit thresholds, so the flips are quantization's alone). Moves whose
  own flip rate exceeds ``risk`` are not taken, the thresholds are re-chosen for every
  assignment and budget (the inner level), and a point whose gating-split flip rate exceeds
  ``risk`` is refused.
* **Uniform** baselines: 8, 6 and 4 bits everywhere.

The **chosen** point is the cheapest (energy on the precision-scalable engine, then BOPs) whose
gating-split top-1 is within ``max_drop`` of the uniform 8-bit full-depth model's and whose
flip rate is within ``risk``; its test-split figures are reported. ``chosen_bops`` is the
cheapest in BOPs under the same bounds (the papers' currency: on the INT8 engine and for 6-bit
blocks on the scalable one, bits that BOPs count save no cycles or energy).

**The Rescue-Effect sweep** lowers the activation bits of the last k blocks (``RESCUE_BITS`` x
``RESCUE_DEPTHS``), and for each setting reports NSR per block and the four-quadrant table of
the exits at the operating budget against that model's own full depth (``quadrants``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from hw import cost
from hw.rtl.dense import StreamDense
from model import flops
from model.errors import QexitError
from model.exits.evaluate import quadrants
from model.exits.features import layer_features
from model.exits.fixed import quantize_head, token_sums
from model.exits.gate import gate_features, train_gate
from model.exits.heads import HEAD_HIDDEN, head_logits, train_heads
from model.exits.thresholds import GRID, NEVER, exit_costs, lct_thresholds, outcome, route
from model.golden import BATCH, Golden
from model.intops import OverflowCounter
from model.qirc import NoiseAccumulator, reference_states
from model.quantize import calibrate, check_widths, from_scales

BUDGETS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)   # LCT FLOPs budgets every assignment is operated at
OPERATING_BUDGET = 0.85                           # the exits' default operating point
OPTIONS = (6, 4)                                  # the widths a move may lower a block to
RISK = 0.05                                       # the largest decision flip rate against uniform 8-bit
MAX_DROP = 0.01                                   # the accuracy drop the chosen point may have
RESCUE_BITS = (6, 4, 3, 2)
RESCUE_DEPTHS = (2, 4, 6)


@dataclass
class Split:
    """One split's 8-bit trace: int8 tokens per block, and the features the heads read."""
    images: torch.Tensor
    labels: torch.Tensor
    tokens: list[torch.Tensor]           # per block (N, T, D), int8
    ssa: torch.Tensor                    # (N, depth, D) float
    sav: torch.Tensor                    # (N, depth)


@dataclass
class Measure:
    """One assignment on the gating and test images."""
    widths: tuple[tuple[int, int], ...]
    im: object
    out: dict                            # split -> {head_pred (N,K), head_correct, scores (N,K), full_pred, full_correct}
    nsr: list[float]                     # per block, on the test images (or the probe)
    seconds: float = 0.0


@dataclass
class Bench:
    model: object
    scales: dict
    candidates: list[int]
    heads: object
    gate: object
    head: object                          # the FixedHead the decisions are priced with
    splits: dict[str, Split]
    fp32_correct: np.ndarray
    machines: dict
    table: object
    head_hidden: int = HEAD_HIDDEN
    calib_images: int = 0
    base: Measure | None = None
    base_ops: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return self.model.cfg

    # ------------------------------------------------------------------ measuring
    def intmodel(self, widths):
        return from_scales(self.model, self.scales, 99.99, self.calib_images, widths)

    @torch.no_grad()
    def measure(self, widths, splits=("gate", "test"), limit: int | None = None, nsr_split: str = "test") -> Measure:
        """Run ``widths`` on the splits (their first ``limit`` images) from the first block that
        differs from 8 bits; heads and gate on every candidate layer, NSR on ``nsr_split``."""
        t0 = time.time()
        cfg = self.cfg
        widths = check_widths(widths if widths is not None else [(8, 8)] * cfg.depth, cfg.depth)
        im = self.intmodel(widths)
        first = next((i for i, p in enumerate(widths) if p != (8, 8)), cfg.depth)
        g = Golden(im)
        ci = np.asarray(self.candidates) - 1
        out, nsr = {}, None
        for name in splits:
            sp = self.splits[name]
            n = len(sp.labels) if limit is None else min(limit, len(sp.labels))
            ssa, sav, logits = sp.ssa[:n].clone(), sp.sav[:n].clone(), []
            noise = NoiseAccumulator(cfg.depth) if name == nsr_split else None
            c = OverflowCounter()
            for b in range(0, n, BATCH):
                e = min(b + BATCH, n)
                x = sp.tokens[first - 1][b:e] if first > 0 else g.embed(sp.images[b:e], c)
                x = x.to(torch.int64)
                blocks = [t[b:e].to(torch.int64) for t in sp.tokens[:first]]
                for i in range(first, cfg.depth):
                    x = g.block(x, i, c)
                    blocks.append(x)
                logits.append(g.head(x, c)[1])
                hidden = g.dequantize_blocks(_Blocks(blocks))
                if first < cfg.depth:
                    s, _, v = layer_features(hidden[first:])
                    ssa[b:e, first:], sav[b:e, first:] = s, v
                if noise is not None:
                    noise.update(reference_states(self.model, sp.images[b:e]), hidden)
            lg = head_logits(self.heads, ssa, self.model.class_embeddings.float())[:, ci]
            labels = sp.labels[:n]
            full_pred = torch.cat(logits).argmax(-1).numpy()
            out[name] = {"head_pred": lg.argmax(-1).numpy(),
                         "head_correct": (lg.argmax(-1) == labels[:, None]).numpy(),
                         "scores": self.gate.prob(gate_features(lg, sav[:, ci])).numpy(),
                         "full_pred": full_pred, "full_correct": full_pred == labels.numpy()}
            if noise is not None:
                nsr = noise.result()["nsr"]
        return Measure(widths, im, out, nsr or [], time.time() - t0)

    # ------------------------------------------------------------------ operating
    def thresholds(self, m: Measure, budget: float) -> np.ndarray:
        if budget >= 1:
            return np.full(len(self.candidates), NEVER)
        gt = m.out["gate"]
        costs = exit_costs(self.cfg, self.candidates, self.head_hidden)
        return lct_thresholds(gt["scores"], gt["head_correct"], gt["full_correct"], costs, budget,
                              np.ones(len(self.candidates)), GRID)

    def decisions(self, m: Measure, split: str, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(exit index, predicted class, correct) per image of a split under thresholds."""
        o = m.out[split]
        idx = route(o["scores"], thr)
        k = len(self.candidates)
        rows = np.arange(len(idx))
        pred = np.where(idx < k, o["head_pred"][rows, np.minimum(idx, k - 1)], o["full_pred"])
        return idx, pred, outcome(idx, o["head_correct"], o["full_correct"])

    def operate(self, m: Measure, budget: float, thr: np.ndarray | None = None) -> dict:
        """Thresholds at ``budget`` (chosen on the gating split unless given), the test split
        routed with them, and the routing's accuracy, flips, BOPs, cycles and energy."""
        cfg, k = self.cfg, len(self.candidates)
        thr = self.thresholds(m, budget) if thr is None else thr
        res = {"budget": budget, "thresholds": [None if not np.isfinite(t) else float(t) for t in thr]}
        for split in ("gate", "test"):
            if split not in m.out:
                continue
            idx, pred, correct = self.decisions(m, split, thr)
            res[f"top1_{split}"] = float(correct.mean())
            if self.base is not None:   # the uniform 8-bit model under the same thresholds
                b_idx, b_pred, _ = self.decisions(self.base, split, thr)
                n = len(idx)
                res[f"flips_{split}"] = float(((idx != b_idx[:n]) | (pred != b_pred[:n])).mean())
            res[f"_dec_{split}"] = (idx, pred, correct)
        if "test" not in m.out:
            return res
        idx = res["_dec_test"][0]
        active = np.isfinite(thr)
        layers = [c for c, a in zip(self.candidates, active) if a]
        exit_layer = np.where(idx < k, np.asarray(self.candidates + [cfg.depth])[np.minimum(idx, k)], cfg.depth)
        frac = [float((exit_layer == l).mean()) for l in layers + [cfg.depth]]
        keep = [(l, f) for l, f in zip(layers + [cfg.depth], frac) if f > 0 or l == cfg.depth]
        res["exit_layers"], res["exit_fraction"] = [l for l, _ in keep], [f for _, f in keep]
        reach = [float((exit_layer >= l).mean()) for l in range(1, cfg.depth + 1)]
        res["reach"] = reach
        res["bops"] = expected_bops(cfg, m.widths, reach, layers, self.head_hidden,
                                    float((exit_layer == cfg.depth).mean()))
        dist = cost.Distribution(tuple(res["exit_layers"]), tuple(res["exit_fraction"]), tuple(layers))
        for name, machine in self.machines.items():
            costs = cost.build(m.im, machine, self.table, {c: StreamDense(machine.lanes) for c in layers},
                               self.head if layers else None)
            if layers:
                e = cost.expected(costs, dist)
                cyc, pj = e["cycles"], e["energy_pj"]
            else:
                parts = costs.route_full()
                cyc, pj = costs.cycles(parts), costs.energy_pj(parts)
            res[f"cycles_{name}"], res[f"energy_pj_{name}"] = float(cyc), float(pj)
        return res

    def points(self, m: Measure, budgets=BUDGETS, label: str = "") -> list[dict]:
        return [public({**self.operate(m, b), "allocator": label, "widths": [list(p) for p in m.widths],
                        "bits": mean_bits(self.cfg, m.widths)}) for b in budgets]


class _Blocks:
    """``Golden.dequantize_blocks`` takes an output with ``blocks``."""
    def __init__(self, blocks):
        self.blocks = blocks


def public(res: dict) -> dict:
    return {k: v for k, v in res.items() if not k.startswith("_")}


def expected_bops(cfg, widths, reach: list[float], heads_on: list[int], head_hidden: int, p_full: float) -> float:
    """E[BOPs] per image: Σ_l P(reach l) BOPs_l(b_l), the exit heads reached, the final head at full depth."""
    total = flops.embed_bops(cfg) + p_full * flops.final_head_bops(cfg)
    total += sum(r * flops.block_bops(cfg, w, a) for r, (w, a) in zip(reach, widths))
    total += sum(reach[c - 1] for c in heads_on) * flops.exit_head_bops(cfg, head_hidden)
    return float(total)


def mean_bits(cfg, widths) -> float:
    """The MAC-weighted mean of sqrt(w a) over the blocks: one number for an assignment."""
    macs = flops.block_macs(cfg)
    lin = macs["qkv"] + macs["proj"] + macs["fc1"] + macs["fc2"]
    return float(np.mean([np.sqrt(flops.block_bops(cfg, w, a) / (lin + macs["scores"] + macs["context"]))
                          for w, a in widths]))


# ---------------------------------------------------------------------- building the bench

@torch.no_grad()
def _trace(im, images: torch.Tensor, labels: torch.Tensor, progress: bool, desc: str) -> Split:
    g = Golden(im)
    c = OverflowCounter()
    tokens, ssa, sav = [[] for _ in range(im.config.depth)], [], []
    for b in tqdm(range(0, len(images), BATCH), desc=desc, disable=None if progress else True, leave=False):
        out = g.forward(images[b:b + BATCH], c)
        for i, t in enumerate(out.blocks):
            tokens[i].append(t.to(torch.int8))
        s, _, v = layer_features(g.dequantize_blocks(out))
        ssa.append(s)
        sav.append(v)
    return Split(images, labels, [torch.cat(t) for t in tokens], torch.cat(ssa), torch.cat(sav))


def prepare(model, calib_images, train, gate, test, machines: dict, table, head_hidden: int = HEAD_HIDDEN,
            head_epochs: int = 4, seed: int = 0, progress: bool = False) -> Bench:
    """The bench (module docstring): calibration, the 8-bit traces, heads and gate, the baseline."""
    cfg = model.cfg
    if cfg.depth < 2:
        raise QexitError(f"mixed precision with exits needs at least 2 blocks; the model has {cfg.depth}")
    model.eval()
    scales = calibrate(model, calib_images)
    im8 = from_scales(model, scales, 99.99, len(calib_images))
    ce = model.class_embeddings.float()
    tr = _trace(im8, train.images, train.labels, progress, "8-bit train features")
    with torch.no_grad():   # the distillation target: the FP32 model's embedding, as `qexit exits` uses
        teacher = torch.cat([model.image_embedding(model.hidden_states(train.images[b:b + 250])[-1])
                             for b in range(0, len(train.images), 250)])
    heads = train_heads(tr.ssa, tr.labels, ce, teacher, seed, epochs=head_epochs, hidden=head_hidden,
                        progress=progress, desc="exit heads (8-bit features)")
    del tr
    splits = {"gate": _trace(im8, gate.images, gate.labels, progress, "8-bit gating trace"),
              "test": _trace(im8, test.images, test.labels, progress, "8-bit test trace")}
    candidates = list(range(1, cfg.depth))
    ci = np.asarray(candidates) - 1
    gs = splits["gate"]
    lg = head_logits(heads, gs.ssa, ce)[:, ci]
    gm = train_gate(gate_features(lg, gs.sav[:, ci]), lg.argmax(-1) == gs.labels[:, None], seed)
    sums = [token_sums(t.to(torch.int64)) for t in gs.tokens]
    s_x = [im8.scales[f"b{i}.x_out"] for i in ci]
    head = quantize_head(heads, gm, ce, s_x, torch.stack([s for s, _ in sums], 1)[:, ci],
                         torch.stack([v for _, v in sums], 1)[:, ci], cfg.num_patches, layers=ci.tolist())
    with torch.no_grad():
        fp32_pred = torch.cat([model(test.images[b:b + 250]).argmax(-1) for b in range(0, len(test.images), 250)])
    bench = Bench(model, scales, candidates, heads, gm, head, splits, (fp32_pred == test.labels).numpy(),
                  machines, table, head_hidden, len(calib_images))
    bench.base = bench.measure(None)
    bench.base_ops = {b: bench.operate(bench.base, b) for b in sorted(set(BUDGETS) | {OPERATING_BUDGET})}
    return bench


# ---------------------------------------------------------------------- the allocators

def moves(depth: int) -> list[tuple[int, str, int]]:
    return [(i, kind, b) for i in range(depth) for kind in ("w", "a") for b in OPTIONS]


def apply(widths, move) -> tuple[tuple[int, int], ...]:
    i, kind, b = move
    out = [list(p) for p in widths]
    j = 0 if kind == "w" else 1
    out[i][j] = min(out[i][j], b)
    return tuple(tuple(p) for p in out)


def sensitivities(bench: Bench, probe: int, progress: bool = False) -> list[dict]:
    """Each move alone on ``probe`` gating images: the last block's NSR rise (PMQ) and the
    decision flip rate at the operating point with the 8-bit thresholds (MAQEE), with its
    static and amortized BOPs savings."""
    cfg = bench.cfg
    base = bench.measure(None, ("gate",), probe, nsr_split="gate")
    thr = bench.thresholds(bench.base, OPERATING_BUDGET)
    b_idx, b_pred, _ = bench.decisions(base, "gate", thr)
    reach = bench.base_ops[OPERATING_BUDGET]["reach"]
    out = []
    eight = ((8, 8),) * cfg.depth
    for mv in tqdm(moves(cfg.depth), desc="sensitivity per move", disable=None if progress else True, leave=False):
        w = apply(eight, mv)
        m = bench.measure(w, ("gate",), probe, nsr_split="gate")
        idx, pred, _ = bench.decisions(m, "gate", thr)
        saving = flops.block_bops(cfg, 8, 8) - flops.block_bops(cfg, *w[mv[0]])
        out.append({"move": list(mv), "d_nsr": m.nsr[-1] - base.nsr[-1],
                    "flips": float(((idx != b_idx) | (pred != b_pred)).mean()),
                    "saving": saving, "saving_amortized": reach[mv[0]] * saving})
    return out


def walk(bench: Bench, order: list[list], points: int, label: str, budgets=BUDGETS,
         progress: bool = False) -> list[dict]:
    """Apply the moves in order; measure ``points`` evenly spaced assignments of the walk."""
    cfg = bench.cfg
    path, w = [], ((8, 8),) * cfg.depth
    for mv in order:
        w = apply(w, tuple(mv))
        path.append(w)
    if not path:
        return []
    at = sorted(set(np.linspace(0, len(path) - 1, min(points, len(path))).round().astype(int).tolist()))
    out = []
    for j in tqdm(at, desc=f"{label} walk", disable=None if progress else True, leave=False):
        pts = bench.points(bench.measure(path[j]), budgets, label)
        for p in pts:
            p["step"] = j + 1
        out += pts
    return out


def pmq(bench: Bench, sens: list[dict], points: int, progress: bool = False) -> list[dict]:
    order = sorted(sens, key=lambda s: -s["saving"] / (max(s["d_nsr"], 0.0) + 1e-3))
    return walk(bench, [s["move"] for s in order], points, "PMQ", progress=progress)


def maqee(bench: Bench, sens: list[dict], points: int, risk: float = RISK, progress: bool = False) -> list[dict]:
    safe = [s for s in sens if s["flips"] <= risk]
    order = sorted(safe, key=lambda s: -s["saving_amortized"] / (s["flips"] + 1e-3))
    pts = walk(bench, [s["move"] for s in order], points, "MAQEE", progress=progress)
    for p in pts:
        p["risk_ok"] = p.get("flips_gate", 0.0) <= risk
    return pts


def uniform(bench: Bench, bits=(8, 6, 4), progress: bool = False) -> list[dict]:
    out = []
    for b in tqdm(bits, desc="uniform", disable=None if progress else True, leave=False):
        m = bench.base if b == 8 else bench.measure([(b, b)] * bench.cfg.depth)
        out += bench.points(m, BUDGETS, f"uniform {b}-bit")
    return out


def frontier(points: list[dict], x: str, y: str = "top1_test") -> list[dict]:
    """The points no other point beats on both ``x`` (lower) and ``y`` (higher)."""
    pts = sorted(points, key=lambda p: (p[x], -p[y]))
    out, best = [], -1.0
    for p in pts:
        if p[y] > best:
            out.append(p)
            best = p[y]
    return out


def choose(points: list[dict], top1_ref: float, max_drop: float = MAX_DROP, risk: float = RISK,
           energy_key: str = "energy_pj_scalable") -> dict | None:
    ok = [p for p in points if p["top1_gate"] >= top1_ref - max_drop - 1e-12 and p.get("flips_gate", 0.0) <= risk]
    return min(ok, key=lambda p: (p[energy_key], p["bops"])) if ok else None


def savings(bench: Bench, points: list[dict], p: dict, base_full: dict) -> dict:
    """``p``'s savings against uniform INT8 full depth, and the same split into exits only
    (uniform 8-bit at ``p``'s budget) and bit-widths only (``p``'s widths at full depth)."""
    same_budget = public(bench.base_ops[p["budget"]])
    bits_only = next(q for q in points if q["widths"] == p["widths"] and q["budget"] == 1.0)
    out = {}
    for key, unit in (("bops", "bops"), ("energy_pj_scalable", "energy"), ("cycles_scalable", "cycles"),
                      ("energy_pj_int8", "energy_int8")):
        ref = base_full[key]
        out[f"{unit}_saving"] = 1 - p[key] / ref
        out[f"{unit}_saving_exits_only"] = 1 - same_budget[key] / ref
        out[f"{unit}_saving_bits_only"] = 1 - bits_only[key] / ref
    return out


# ---------------------------------------------------------------------- the Rescue-Effect sweep

def rescue_sweep(bench: Bench, bits=RESCUE_BITS, depths=RESCUE_DEPTHS, budget: float = OPERATING_BUDGET,
                 progress: bool = False) -> list[dict]:
    """Lower the activation bits of the last k blocks; per setting NSR per block and the
    four-quadrant table of the exits at ``budget`` against that model's own full depth."""
    cfg = bench.cfg
    settings = [(8, 0)] + [(a, k) for a in bits for k in depths if k <= cfg.depth]
    rows = []
    for a, k in tqdm(settings, desc="rescue sweep", disable=None if progress else True, leave=False):
        w = [(8, 8)] * (cfg.depth - k) + [(8, a)] * k
        m = bench.base if k == 0 else bench.measure(w)
        op = bench.operate(m, budget)
        correct = op["_dec_test"][2]
        q = quadrants(correct, m.out["test"]["full_correct"], bench.fp32_correct)
        rows.append({"activation_bits": a, "last_blocks": k, "nsr": m.nsr, "nsr_deepest": m.nsr[-1],
                     "nsr_max": max(m.nsr), "top1_full_depth": float(m.out["test"]["full_correct"].mean()),
                     "top1_exit": op["top1_test"], "quadrants": q, "net_rescue": q["net_rescue"],
                     "exit_fraction": op["exit_fraction"], "exit_layers": op["exit_layers"]})
    return rows


# ---------------------------------------------------------------------- the whole study

def study(bench: Bench, probe: int = 500, points: int = 8, risk: float = RISK, max_drop: float = MAX_DROP,
          rescue: bool = True, progress: bool = False) -> dict:
    """Uniform baselines, PMQ and MAQEE walks, the frontier, the chosen point with its savings
    split into exits and bit-widths, and the Rescue-Effect sweep: ``summary.json``'s content."""
    cfg = bench.cfg
    t0 = time.time()
    base_full = public(bench.base_ops[1.0])
    top1_ref_gate = base_full["top1_gate"]
    found = {"uniform": uniform(bench, progress=progress)}
    t_sens = time.time()
    sens = sensitivities(bench, probe, progress)
    seconds = {"sensitivity": time.time() - t_sens}
    for name, fn in (("PMQ", lambda: pmq(bench, sens, points, progress)),
                     ("MAQEE", lambda: maqee(bench, sens, points, risk, progress))):
        t = time.time()
        found[name] = fn()
        seconds[name] = time.time() - t + seconds["sensitivity"]
    allp = [p for v in found.values() for p in v]
    for p in allp:
        p.setdefault("risk_ok", p.get("flips_gate", 0.0) <= risk)
    chosen = choose(allp, top1_ref_gate, max_drop, risk)
    s = {"depth": cfg.depth, "candidates": bench.candidates, "images": {k: len(v.labels) for k, v in bench.splits.items()},
         "probe_images": probe, "risk": risk, "max_drop": max_drop, "budgets": list(BUDGETS),
         "operating_budget": OPERATING_BUDGET,
         "top1_uniform8": base_full["top1_test"], "top1_uniform8_gate": top1_ref_gate,
         "uniform8_full": base_full, "top1_fp32": float(bench.fp32_correct.mean())}
    if chosen is not None:
        s.update({"top1_mixed": chosen["top1_test"], "assignment": chosen["widths"], "chosen": chosen,
                  **savings(bench, allp, chosen, base_full)})
    else:
        s.update({"top1_mixed": None, "assignment": None, "chosen": None})
    by_bops = choose(allp, top1_ref_gate, max_drop, risk, "bops")     # the paper's currency: the cheapest in BOPs
    s["chosen_bops"] = None if by_bops is None else {**by_bops, "savings": savings(bench, allp, by_bops, base_full)}
    s["frontier_energy"] = frontier([p for p in allp if p["risk_ok"]], "energy_pj_scalable")
    s["frontier_bops"] = frontier([p for p in allp if p["risk_ok"]], "bops")
    s["points"] = allp
    s["sensitivity"] = sens
    s["seconds_allocators"] = {k: round(v, 1) for k, v in seconds.items()}
    s["rescue_sweep"] = rescue_sweep(bench, progress=progress) if rescue else []
    s["seconds_study"] = round(time.time() - t0, 1)
    return s
