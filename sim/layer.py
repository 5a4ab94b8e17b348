"""The host side of the layer engine: what each program segment needs loaded (program words,
weight stream, parameter stream, scratchpad words), the one driving protocol, and the check
of every tap against the golden model.

Protocol per segment (``drive_segment``), on ``sim.harness.LayerHarness``:

1. while idle, load the program (``prog_in``), the weight stream (``w_load``), the parameter
   stream (``q_load``) and any scratchpad words (``s_in``: the image's patches);
2. set the memory model (``harness.source_ports``), ``pc`` = 0, and pulse ``start``;
3. wait for ``done``: the edges from the one that samples ``start`` are what
   ``hw.program.predict`` sums for the segment;
4. read the trace memory: every word the segment's taps sent to the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hw import program
from hw.layer import desc_layout
from hw.schedule import IDEAL, WeightSource
from model.golden import Golden
from model.quantize import IntModel, pixels_to_patches
from sim.host import lanes_to_words, pack_activations, pack_params, pack_token_bias, pack_weights, words_to_lanes

LN_G_BITS, LN_B_BITS = 17, 48


def encode(d: program.Desc, layout) -> int:
    fields = {k: (dict(v) if isinstance(v, dict) else int(v)) for k, v in d.fields.items()}
    return layout.const(fields).as_value().value


def _ln_params(im: IntModel, name: str, lanes: int) -> list[int]:
    g, b = im.p(f"{name}.g").tolist(), im.p(f"{name}.b").tolist()
    ch = [(gi & ((1 << LN_G_BITS) - 1)) | ((bi & ((1 << LN_B_BITS) - 1)) << LN_G_BITS) for gi, bi in zip(g, b)]
    from hw.gemm import PARAM_BITS
    return [sum(ch[j * lanes + c] << (PARAM_BITS * c) for c in range(lanes)) for j in range(len(ch) // lanes)]


def stream_words(d: program.Desc, im: IntModel, lanes: int) -> tuple[str, list[int]]:
    """(stream, words) that descriptor ``d`` takes from the weight ("w") or parameter ("q") stream."""
    if not d.data:
        return "", []
    tag, *args = d.data
    zeros = lambda n: torch.zeros(n, dtype=torch.int64)
    if tag == "weights":
        name = args[0]
        w = im.p(name if name.endswith("class_emb") else f"{name}.w")
        return "w", pack_weights(w, lanes, lanes)
    if tag == "gemm_params":
        prm = im.prefix(args[0])
        bias = prm.get("b") if args[0] != "embed" else None
        n = prm["m"].shape[0]
        return "q", pack_params(bias if bias is not None else zeros(n), prm["m"], prm["shift"], lanes)
    if tag == "zero_params":
        return "q", pack_params(zeros(args[0]), zeros(args[0]), zeros(args[0]), lanes)
    if tag == "ctx_params":
        blk, n = args
        m, s = int(im.p(f"{blk}.ctx.m")), int(im.p(f"{blk}.ctx.shift"))
        return "q", pack_params(zeros(n), torch.full((n,), m), torch.full((n,), s), lanes)
    if tag == "ln_params":
        return "q", _ln_params(im, args[0], lanes)
    if tag == "token_bias":
        return "q", pack_token_bias(im.p("embed.b"), lanes)
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
                      program.predict(seg, plan.lanes, source), taps)


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
    from sim.harness import source_ports
    await driver.load("prog_in", job.program)
    await driver.load("w_load", job.weights)
    await driver.load("q_load", job.params)
    await driver.load("s_in", job.scratch)
    cycles = await driver.run(source_ports(source))
    return {"cycles": cycles, "trace": await driver.trace()}
