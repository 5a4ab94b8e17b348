"""The host side of the layer engine: what each program segment needs loaded (program words,
weight stream, parameter stream, scratchpad words), the one driving protocol, and the check
of every tap against the golden model.

Protocol per segment (``drive_segment``), on ``sim.harness.LayerHarness``:

1. while idle, load the program (``prog_in``), the weight stream (``w_load``), the parameter
   stream (``q_load``) and any scratchpad words (``s_in``: the image's patches);
2. set the memory model (``harness.source_ports``), ``pc`` = 0, and pulse ``start``;
3. wait for ``done``: the edges from the one that samples ``start`` are what
   ``hw.cost.timeline.predict`` sums for the segment;
4. read the trace memory: every word the segment's taps sent to the host.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from amaranth.sim import Simulator

from hw import program
from hw.cost import Machine, memories, timeline
from hw.cost.schedule import IDEAL, WeightSource, utilization
from hw.rtl import emit
from hw.rtl.gemm import PARAM_BITS
from hw.rtl.isa import desc_layout
from model import intops
from model.errors import QexitError
from model.golden import Golden
from model.quantize import IntModel, pixels_to_patches, random_intmodel
from model.vit import ViTConfig
from sim import simulator as runner
from sim.harness import LayerHarness, check_machine, layer_top_name, source_ports
from sim.packing import lanes_to_words, pack_activations, pack_params, pack_token_bias, pack_weights, words_to_lanes
from sim.simulator import log_tail
from sim.result import Result
from sim.units import layernorm_param_words


def encode(d: program.Desc, layout) -> int:
    fields = {k: (dict(v) if isinstance(v, dict) else int(v)) for k, v in d.fields.items()}
    return layout.const(fields).as_value().value


def stream_words(d: program.Desc, im: IntModel, lanes: int) -> tuple[str, list[int]]:
    """(stream, words) that descriptor ``d`` takes from the weight ("w") or parameter ("q") stream."""
    if not d.data:
        return "", []
    tag, *args = d.data
    zeros = lambda n: torch.zeros(n, dtype=torch.int64)
    if tag == "weights":
        name, n0, n1 = args
        w = im.p(name if name.endswith("class_emb") else f"{name}.w")
        return "w", pack_weights(w[n0:n1], lanes, lanes)
    if tag == "gemm_params":
        name, n0, n1 = args
        prm = im.prefix(name)
        bias = prm.get("b") if name != "embed" else None
        bias = bias[n0:n1] if bias is not None else zeros(n1 - n0)
        return "q", pack_params(bias, prm["m"][n0:n1], prm["shift"][n0:n1], lanes)
    if tag == "zero_params":
        return "q", pack_params(zeros(args[0]), zeros(args[0]), zeros(args[0]), lanes)
    if tag == "ctx_params":
        blk, n = args
        m, s = int(im.p(f"{blk}.ctx.m")), int(im.p(f"{blk}.ctx.shift"))
        return "q", pack_params(zeros(n), torch.full((n,), m), torch.full((n,), s), lanes)
    if tag == "ln_params":
        return "q", layernorm_param_words(im.p(f"{args[0]}.g"), im.p(f"{args[0]}.b"), lanes, PARAM_BITS)
    if tag == "act_table":            # the 256 entries, saturated to int8 as the lookup does, lanes a word
        return "q", lanes_to_words(program.activation_table(im, args[0]).reshape(-1, lanes), 8)
    if tag == "token_bias":
        _, n0, n1 = args
        return "q", pack_token_bias(im.p("embed.b")[:, n0:n1], lanes)
    if tag == "cls":
        return "q", lanes_to_words(im.p("embed.cls").reshape(-1, lanes), 8)
    raise ValueError(tag)


@dataclass
class SegmentJob:
    name: str
    program: list[int]
    weights: list[int]
    params: list[int]
    scratch: list[tuple[int, int]]        # (address, word) loaded before start
    predicted: list[int]                  # cycles per descriptor
    taps: list[tuple[str, int, str]]      # (name, words, "int8" | "int32") in trace order

    @property
    def cycles_predicted(self) -> int:
        return sum(self.predicted)

    def case(self, name: str, ports: dict, **extra) -> dict:
        """What the testbench loads and runs for this job (``sim.tb.block.Layer.segment``)."""
        return {"name": name, "program": self.program, "weights": self.weights, "params": self.params,
                "scratch": self.scratch, "ports": ports, **extra}


def harness_sizes(jobs: list[SegmentJob]) -> tuple[int, int, int]:
    """The harness's memory sizes for these jobs: weight words, parameter words, trace words."""
    return (max(1, max(len(j.weights) for j in jobs)), max(1, max(len(j.params) for j in jobs)),
            max(1, max(sum(t[1] for t in j.taps) for j in jobs)))


def segment_job(name: str, seg: list[program.Desc], im: IntModel, plan: program.Plan, layout,
                source: WeightSource = IDEAL, image: torch.Tensor | None = None) -> SegmentJob:
    w, q = [], []
    for d in seg:
        kind, words = stream_words(d, im, plan.lanes)
        (w if kind == "w" else q).extend(words)
    scratch = []
    if image is not None:
        a = pixels_to_patches(image[None], im.config.patch)[0]
        base = plan.regions["img"][0]
        scratch = [(base + i, word) for i, word in enumerate(pack_activations(a, plan.lanes))]
    taps = [(d.name, d["total"], "int32" if d["src"] == program.Src.ENG_RAW else "int8")
            for d in seg if d["dst"] == program.Dst.HOST and d.kind != "end"]
    return SegmentJob(name, [encode(d, layout) for d in seg], w, q, scratch,
                      timeline.predict(seg, plan.lanes, source), taps)


def model_jobs(im: IntModel, images: torch.Tensor, machine: Machine, layers: int | None):
    """Every segment of every image on ``machine`` (its L x L array and weight stream) as a job:
    (plan, cfg, layout, [(image, name, segment, job)], the harness's memory sizes (weight words,
    parameter words, trace words))."""
    lanes, source = check_machine(machine, square=True).lanes, machine.source
    depth = im.config.depth if layers is None else layers
    plan, segs = program.model_program(im, lanes, depth)
    cfg = program.engine_config(plan, segs)
    layout = desc_layout(cfg)
    names = ["embed"] + [f"b{i}" for i in range(depth)] + (["head"] if len(segs) > depth + 1 else [])
    jobs = [(n, name, seg, segment_job(name, seg, im, plan, layout, source, image if name == "embed" else None))
            for n, image in enumerate(images) for name, seg in zip(names, segs)]
    return plan, cfg, layout, jobs, harness_sizes([j for *_, j in jobs])


def read_taps(job: SegmentJob, words: list[int], lanes: int) -> dict[str, torch.Tensor]:
    """Trace words → {tap name: (words, lanes) integers}."""
    out, i = {}, 0
    for name, count, kind in job.taps:
        chunk = words[i:i + count]
        i += count
        if kind == "int8":
            out[name] = words_to_lanes([c & ((1 << 8 * lanes) - 1) for c in chunk], lanes, 8)
        else:
            out[name] = words_to_lanes(chunk, lanes, 32)
    return out


def expected_taps(im: IntModel, image: torch.Tensor, plan: program.Plan, layers: int) -> dict[str, torch.Tensor]:
    """What every tap must hold, from the golden model run on its own."""
    out = Golden(im).forward(image[None])
    L, t = plan.lanes, plan.tokens
    exp = {f"b{i} tokens": out.blocks[i][0].reshape(t * plan.dw, L) for i in range(layers)}
    if layers == im.config.depth:
        ew, cw = -(-plan.embed_dim // L), -(-plan.classes // L)
        emb = torch.zeros(ew * L, dtype=torch.int64)
        emb[:plan.embed_dim] = out.embedding[0]
        exp["embedding"] = emb.reshape(ew, L)
        logits = torch.zeros(cw * L, dtype=torch.int64)
        logits[:plan.classes] = out.logits[0]
        exp["logits"] = logits.reshape(cw, L)
    return exp


def compare(got: dict[str, torch.Tensor], exp: dict[str, torch.Tensor], plan: program.Plan) -> dict[str, tuple[int, int]]:
    """{tap: (matched, total)} over the meaningful lanes (padding lanes of the embedding and the
    logits are not counted)."""
    res = {}
    for name, e in exp.items():
        g = got.get(name)
        if g is None or g.shape != e.shape:
            res[name] = (0, e.numel())
            continue
        n = {"embedding": plan.embed_dim, "logits": plan.classes}.get(name, e.numel())
        res[name] = (int((g.reshape(-1)[:n] == e.reshape(-1)[:n]).sum()), n)
    return res


# --------------------------------------------------------------------------- drivers

class AmaranthLayerDriver:
    """The protocol in Amaranth's simulator, on a ``LayerHarness``."""

    def __init__(self, ctx, dut, limit: int = 10 ** 7):
        self.ctx, self.dut, self.limit = ctx, dut, limit

    async def load(self, port: str, words: list) -> None:
        s = getattr(self.dut, port)
        self.ctx.set(s.valid, 1)
        for word in words:
            if port == "s_in":
                self.ctx.set(s.payload.addr, word[0])
                self.ctx.set(s.payload.data, word[1])
            else:
                self.ctx.set(s.payload, word)
            await self.ctx.tick()
        self.ctx.set(s.valid, 0)

    async def run(self, ports: dict[str, int]) -> int:
        for k, v in {**ports, "pc": 0, "start": 1}.items():
            self.ctx.set(getattr(self.dut, k), v)
        await self.ctx.tick()
        self.ctx.set(self.dut.start, 0)
        cycles = 0
        while not self.ctx.get(self.dut.done):
            await self.ctx.tick()
            cycles += 1
            if cycles > self.limit:
                raise RuntimeError(f"no done after {cycles} cycles; stuck at descriptor {self.ctx.get(self.dut.at) - 1}")
        return cycles

    async def trace(self) -> list[int]:
        words = []
        for a in range(self.ctx.get(self.dut.t_count)):
            self.ctx.set(self.dut.t_addr, a)
            words.append(self.ctx.get(self.dut.t_data))
        return words


async def drive_segment(driver, job: SegmentJob, source: WeightSource = IDEAL) -> dict:
    await driver.load("prog_in", job.program)
    await driver.load("w_load", job.weights)
    await driver.load("q_load", job.params)
    await driver.load("s_in", job.scratch)
    cycles = await driver.run(source_ports(source))
    return {"cycles": cycles, "trace": await driver.trace()}


# --------------------------------------------------------------------------- verify block

def onchip_bits(cfg, layout_bits: int) -> dict[str, int]:
    """Bits of every on-chip memory of the layer engine (the weights stream; none are stored)."""
    out = {name: words * bits for name, (words, bits) in memories(cfg).items()}
    out["program"] = cfg.prog_words * layout_bits
    out["layernorm rows+params"] = cfg.max_d * (8 + 65)
    out["softmax row"] = -(-cfg.max_row // cfg.lanes) * cfg.lanes * 32
    return out


def block_result(records: list[dict], lanes: int, **figures) -> Result:
    """Per segment run records (name, image, cycles, counter, predicted, macs, matched, total)
    as a result: passed when every tap matched and every segment took its predicted cycles, as
    the RTL's own counter also says (and the predictions matched, where checked)."""
    cycles = sum(r["cycles"] for r in records)
    out = Result("block", sum(r["matched"] for r in records), sum(r["total"] for r in records),
                 cycles_measured=cycles, cycles_predicted=sum(r["predicted"] for r in records), records=records,
                 figures={"lanes": lanes, **figures,
                          "utilization": utilization(sum(r["macs"] for r in records), lanes, lanes, cycles)})
    out.passed = (bool(records) and out.matched == out.total and out.cycles_measured == out.cycles_predicted
                  and all(r["cycles"] == r["predicted"] == r["counter"] for r in records)
                  and figures.get("predictions_matched") is not False)
    return out


def by_segment(result: Result) -> dict[str, dict]:
    """Per segment name (embed, b0 .. b{L-1}, head), summed over the images."""
    out: dict[str, dict] = {}
    for r in result.records:
        s = out.setdefault(r["name"], {"matched": 0, "total": 0, "cycles_measured": 0, "cycles_predicted": 0,
                                       "macs": 0, "run_s": 0.0, "shares": {}})
        s["run_s"] = round(s["run_s"] + r.get("run_s", 0.0), 3)
        s["matched"] += r["matched"]
        s["total"] += r["total"]
        s["cycles_measured"] += r["cycles"]
        s["cycles_predicted"] += r["predicted"]
        s["macs"] += r["macs"]
        for k, v in r["shares"].items():
            s["shares"][k] = s["shares"].get(k, 0) + v
    return out


def verify_block(im: IntModel, images: torch.Tensor, machine: Machine, layers: int | None = None,
                 simulator: str | None = None, waves: bool = False, folder=None) -> Result:
    """Run ``layers`` encoder layers (all, then the head, by default) of every image through the
    layer engine's RTL (``machine``'s L x L array, its weight stream), segment by segment, and
    check every tap against the golden model and every segment's cycles against
    ``hw.cost.timeline.predict``: a result with one record per segment run (``block_result``)."""
    depth = im.config.depth if layers is None else layers
    plan, cfg, layout, entries, sizes = model_jobs(im, images, machine, layers)
    lanes, source = machine.lanes, machine.source
    jobs, meta = [j for *_, j in entries], [(n, name, seg) for n, name, seg, _ in entries]
    top = layer_top_name(cfg)
    b = runner.build(emit.to_verilog(LayerHarness(cfg, *sizes), top), top, simulator=simulator, waves=waves)
    ports = source_ports(source)
    with tempfile.TemporaryDirectory(prefix="qexit-tb-") as tmp:
        cases, results = Path(tmp) / "jobs.pt", Path(tmp) / "results.pt"
        torch.save([j.case(f"image {n} {name}", ports, predicted=j.cycles_predicted)
                    for j, (n, name, _) in zip(jobs, meta)], cases)
        res = runner.run(b, "sim.tb.block", testcase="segments", folder=folder,
                         settings={"QEXIT_TB_CASES": str(cases), "QEXIT_TB_RESULTS": str(results)})
        got = torch.load(results, weights_only=False) if results.exists() else []
    records, preds = [], []
    for n, image in enumerate(images):
        exp = expected_taps(im, image, plan, depth)
        taps = {}
        for job, (m, name, seg), g in zip(jobs, meta, got + [None] * len(jobs)):
            if m != n:
                continue
            mine = {k: v for k, v in exp.items() if k in {t[0] for t in job.taps}}
            if g is not None:
                taps.update(read_taps(job, g["trace"], lanes))
            cmp = compare(taps, mine, plan)
            records.append({"image": n, "name": name, "cycles": g["cycles"] if g else -1,
                            "run_s": round(g["run_s"], 3) if g else 0.0,
                            "counter": g["counter"] if g else -1, "predicted": job.cycles_predicted,
                            "macs": program.segment_macs(seg), "shares": timeline.shares(seg, lanes, source),
                            "matched": sum(v[0] for v in cmp.values()), "total": sum(v[1] for v in cmp.values())})
        if "logits" in taps:
            preds.append(int(taps["logits"].reshape(-1)[:plan.classes].argmax()) ==
                         int(exp["logits"].reshape(-1)[:plan.classes].argmax()))
    failed = not res.passed or len(got) != len(jobs)
    if failed:
        records.append({"image": -1, "name": "simulation", "cycles": -1, "counter": -1, "predicted": 0,
                        "macs": 0, "shares": {}, "matched": 0, "total": 1})
    onchip = onchip_bits(cfg, layout.size)
    out = block_result(records, lanes, images=len(images), layers=depth, onchip=onchip,
                       onchip_bits=sum(onchip.values()), predictions_matched=all(preds) if preds else None)
    out.simulator, out.build_seconds, out.sim_seconds = b.simulator, b.seconds, res.seconds
    out.log = log_tail(res) if failed else ""
    return out


def random_block_model(width: int, heads: int, mlp: int, tokens: int, layers: int, seed: int = 0) -> IntModel:
    """A random, valid IntModel of ``layers`` encoder layers at ViT-B/32's input layout (3
    channels, patch 32): ``tokens`` - 1 must be a square number of patches."""
    grid = math.isqrt(max(tokens - 1, 0))
    if tokens < 2 or grid * grid != tokens - 1:
        raise QexitError(f"--tokens {tokens} must be 1 + a square number of patches (e.g. 50 = 1 + 7x7)")
    if mlp % width:
        raise QexitError(f"--mlp {mlp} must be a multiple of --width {width} (the ViT's MLP ratio)")
    if width % heads:
        raise QexitError(f"--width {width} is not a multiple of --heads {heads}")
    cfg = ViTConfig(image_size=32 * grid, patch=32, channels=3, width=width, depth=layers, heads=heads,
                    mlp_ratio=mlp // width, embed_dim=512, num_classes=10)
    return random_intmodel(cfg, seed)


def run_in_amaranth(im: IntModel, images: torch.Tensor, machine: Machine, layers: int | None = None) -> list[dict]:
    """The same segments in Amaranth's own simulator (no HDL simulator needed): per segment
    run, {image, name, cycles, predicted, taps} with the taps unpacked."""
    _, cfg, _, entries, sizes = model_jobs(im, images, machine, layers)
    lanes, source = machine.lanes, machine.source
    jobs = [(n, j) for n, _, _, j in entries]
    dut = LayerHarness(cfg, *sizes)
    out = []

    async def bench(ctx):
        drv = AmaranthLayerDriver(ctx, dut, limit=10 * max(j.cycles_predicted for _, j in jobs))
        for n, job in jobs:
            r = await drive_segment(drv, job, source)
            out.append({"image": n, "name": job.name, "cycles": r["cycles"], "predicted": job.cycles_predicted,
                        "taps": read_taps(job, r["trace"], lanes)})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


# --------------------------------------------------------------------------- free-running speed

def free_running(im: IntModel, machine: Machine, segment: int = 1) -> dict:
    """Cycles and wall seconds of one segment (default: the first encoder layer) on the layer
    harness free-running in Verilator (``sim.simulator.free_running``), with no cocotb: the
    speed cocotb is compared with."""
    lanes, source = check_machine(machine, square=True).lanes, machine.source
    plan, segs = program.model_program(im, lanes, max(1, segment))
    cfg = program.engine_config(plan, segs)
    layout = desc_layout(cfg)
    job = segment_job("segment", segs[segment], im, plan, layout, source)
    top = layer_top_name(cfg)
    addr_bits = max(1, (cfg.scratch_words - 1).bit_length())
    streams = {"prog_in": job.program, "w_load": job.weights, "q_load": job.params,
               "s_in": [a | (w << addr_bits) for a, w in job.scratch]}
    ports = source_ports(source)
    out = runner.free_running(emit.to_verilog(LayerHarness(cfg, *harness_sizes([job])), top), top, streams,
                              {**{k: ports[k] for k in ("ideal", "bw_num", "bw_den", "latency")},
                               "stall_seed": 0, "pc": 0})
    out["predicted"] = job.cycles_predicted
    return out
