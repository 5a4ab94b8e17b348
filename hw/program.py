"""The layer engine's program: one list of descriptors, generated here from an IntModel, that
the controller (``hw.rtl.layer``) runs and the cycle model (``hw.cost.timeline``) reads. Nothing else
describes what the engine does, so the two cannot drift apart.

A program is made of **segments**, each one run by one ``start``: the patch embedding, one
per encoder layer, and the head. Every segment ends with an END descriptor. Segments share
the scratchpad (its contents persist between starts); the host loads each segment's program,
weight stream and parameter stream while the engine is idle.

Scratchpad plan (words of L int8; T tokens, D = width, F = MLP width, TG = ceil(T/L)):

* ``x``: the residual stream, T rows of D/L words (row t = token t);
* ``qkv``: T rows of 3D/L words: Q, K, V of every token, token-major;
* ``kt``: Kᵀ, D rows of TG words (row d holds K[:, d] for L tokens a word), written by a
  transposing MOVE, so Kᵀ's rows stream as the weights of Q·Kᵀ;
* ``h``: a LayerNorm's output (the next GEMM's activations); the same words later hold
  ``ctx``, every head's P·V in its columns;
* ``hid`` (the GELU output), ``img`` (the patches) and ``emb`` (the head's embedding) reuse the
  space of ``qkv`` and ``kt``, which are dead when they are written.

The GEMM engine reads its activations from these regions in place (a_base, a_stride), so
nothing is copied into it. Each head's probabilities go to a separate probability memory
(two banks, T rows of TG words, zero beyond T), the activations of P·V. V's rows stream as the weights of P·V straight from ``qkv`` (rows
past T are multiplied by P's zero padding). Linear layers wider than D run in output chunks
of D columns (the patch embedding in chunks of 4L, for its per-token bias buffer), which
keeps the engine's output and bias buffers small.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


from hw.rtl import accelerator as acc
from hw.rtl.dense import StreamDense
from hw.rtl.isa import Dst, LayerConfig, Op, Src, Unit, bus_bits, param_beats
from hw.rtl.timing import tile_counts
from hw.rtl.units import TableUnit
from model import intops
from model.errors import QexitError


@dataclass
class Desc:
    """One descriptor: the fields of ``hw.rtl.layer.desc_layout`` plus what the host and the
    reports need (``name``, ``kind`` for the cycle shares, ``data``: what the weight or
    parameter stream carries for it)."""
    name: str
    kind: str                     # gemm | ln | softmax | gelu | add | move | transpose | params | tap | end
    fields: dict
    data: tuple = ()              # ("weights", name) | ("gemm_params", name) | ... for the host

    def __getitem__(self, key):
        return self.fields.get(key, 0)


@dataclass
class Plan:
    lanes: int
    tokens: int
    width: int
    heads: int
    hidden: int
    patch_dim: int
    embed_dim: int
    classes: int
    regions: dict = field(default_factory=dict)

    @property
    def dw(self) -> int:
        return self.width // self.lanes

    @property
    def tg(self) -> int:
        return -(-self.tokens // self.lanes)

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def scratch_words(self) -> int:
        return max(base + size for base, size in self.regions.values())


def make_plan(cfg, lanes: int) -> Plan:
    """The scratchpad plan for a ViT config on an L x L array; refuses what the engine cannot hold."""
    t, d = cfg.tokens, cfg.width
    need = {"width": d, "head width": d // cfg.heads, "MLP width": cfg.hidden, "patch size": cfg.patch_dim}
    for what, v in need.items():
        if v % lanes:
            raise QexitError(f"{what} {v} is not a multiple of the array's {lanes} lanes; the layer "
                             f"engine keeps whole words per row (use --rows/--cols that divide it)")
    p = Plan(lanes, t, d, cfg.heads, cfg.hidden, cfg.patch_dim, cfg.embed_dim, cfg.num_classes)
    dw, tg = p.dw, p.tg
    x = t * dw
    qkv, kt = t * 3 * dw, d * tg
    hid = t * cfg.hidden // lanes
    img = (t - 1) * cfg.patch_dim // lanes
    emb = -(-cfg.embed_dim // lanes)
    low = max(qkv + kt, hid, img, emb)          # what the layer's stages write in turn
    h = x + low
    p.regions = {"x": (0, x), "qkv": (x, qkv), "kt": (x + qkv, kt), "hid": (x, hid), "img": (x, img), "emb": (x, emb),
                 "h": (h, t * dw), "ctx": (h, t * dw)}
    return p


def _pat(base=0, ocount=1, ostride=0, icount=1, istride=1) -> dict:
    return {"base": base, "ocount": ocount, "ostride": ostride, "icount": icount, "istride": istride}


def _rows(p: Plan, region: str, rows: int, words: int, stride: int, offset: int = 0, first_row: int = 0) -> dict:
    return _pat(p.regions[region][0] + first_row * stride + offset, rows, stride, words, 1)


def _move(name, kind, src, unit, dst, total, data=(), words=None, **f) -> Desc:
    f = {"op": Op.MOVE, "src": src, "unit": unit, "dst": dst, "total": total, **f}
    if src == Src.PARAM:
        f["words"] = total if words is None else words
    return Desc(name, kind, f, data)


def _gemm(name, m, k, n, a_base, a_stride, data=(), **f) -> Desc:
    return Desc(name, "gemm", {"op": Op.GEMM, "m": m, "k": k, "n": n, "a_base": a_base, "a_stride": a_stride, **f}, data)


def _ln(p: Plan, name: str, im, rows: int, dst: str = "h") -> list[Desc]:
    """LayerNorm of the first ``rows`` tokens of x into ``dst`` (x itself: row by row in place,
    the unit holds a row before it writes it)."""
    prm = im.prefix(name)
    return [_move(f"{name} params", "params", Src.PARAM, Unit.NONE, Dst.LN_P, p.dw, ("ln_params", name),
                  elems=p.width),
            _move(name, "ln", Src.SCRATCH, Unit.LN, Dst.SCRATCH, rows * p.dw, rd=_rows(p, "x", rows, p.dw, p.dw),
                  wr=_rows(p, dst, rows, p.dw, p.dw), elems=p.width, ln_shift=int(prm["shift"]), ln_eps=int(prm["eps"]))]


def _params(p: Plan, name: str, n: int, data: tuple) -> Desc:
    return _move(f"{name} params", "params", Src.PARAM, Unit.NONE, Dst.ENG_P, -(-n // p.lanes), data)


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(c, min(c + size, n)) for c in range(0, n, size)]


def _linear(p: Plan, name: str, m: int, k: int, n: int, a: tuple[int, int], out, chunk: int | None = None,
            **f) -> list[Desc]:
    """A linear layer in output chunks of ``chunk`` columns (default the model width): for
    each, its parameters, the GEMM on the streamed weights, and ``out(n0, n1)``: what takes
    its outputs. Chunks keep the engine's output buffer at one width's worth of columns; the
    activations are read again from the scratchpad."""
    prog = []
    for n0, n1 in chunks(n, chunk or p.width):
        tag = f"{name}[{n0}:{n1}]" if (n0, n1) != (0, n) else name
        prog += [_params(p, tag, n1 - n0, ("gemm_params", name, n0, n1)),
                 _gemm(tag, m, k, n1 - n0, *a, ("weights", name, n0, n1), **f)]
        prog += out(n0, n1)
    return prog


def _to(p: Plan, name: str, region: str, rows: int, row_words: int, first_row: int = 0, kind="move",
        unit=Unit.NONE, **f):
    """An output taker: the engine's out words of columns n0..n1 into ``region``'s rows."""
    def out(n0, n1):
        w = (n1 - n0) // p.lanes
        return [_move(f"{name} out" if (n0, n1) == (0, row_words * p.lanes) else f"{name}[{n0}:{n1}] out", kind,
                      Src.ENG_OUT, unit, Dst.SCRATCH, rows * w,
                      wr=_rows(p, region, rows, w, row_words, offset=n0 // p.lanes, first_row=first_row), **f)]
    return out


def addressed(p: Plan, prog: list[Desc]) -> list[Desc]:
    """``prog`` with every stream descriptor's ``words`` and ``addr`` set: a GEMM on streamed
    weights takes KT NT R weight words, a PARAM MOVE its parameter words; each reads them at
    ``addr``, its byte offset in the segment's weight or parameter region, where the words lie
    in descriptor order (a weight word L bytes, a parameter word ``param_beats`` L bytes)."""
    w_off = q_off = 0
    step = bus_bits(p.lanes) // 8
    for d in prog:
        if d.kind == "gemm" and d.data:
            kt, nt = tile_counts(d["k"], d["n"], p.lanes, p.lanes)
            d.fields.update(words=kt * nt * p.lanes, addr=w_off)
            w_off += kt * nt * p.lanes * step
        elif d["op"] == Op.MOVE and d["src"] == Src.PARAM:
            d.fields["addr"] = q_off
            q_off += d["words"] * param_beats(p.lanes) * step
    return prog


def embed_segment(p: Plan, im) -> list[Desc]:
    """The patch embedding in chunks of ``embed_chunk`` channels (its per-token bias, which
    holds the position embedding, fills the engine's bias buffer one chunk at a time), then the
    class token."""
    t, dw, L = p.tokens, p.dw, p.lanes
    n_tok = t - 1
    prog = []
    for n0, n1 in chunks(p.width, embed_chunk(p)):
        tag, w = f"embed[{n0}:{n1}]", (n1 - n0) // L
        prog += [
            _move(f"{tag} token bias", "params", Src.PARAM, Unit.NONE, Dst.ENG_TB, n_tok * w,
                  ("token_bias", "embed", n0, n1)),
            _params(p, tag, n1 - n0, ("gemm_params", "embed", n0, n1)),
            _gemm(tag, n_tok, p.patch_dim, n1 - n0, p.regions["img"][0], p.patch_dim // L,
                  ("weights", "embed", n0, n1), token_bias=1),
            _move(f"{tag} out", "move", Src.ENG_OUT, Unit.NONE, Dst.SCRATCH, n_tok * w,
                  wr=_rows(p, "x", n_tok, w, dw, offset=n0 // L, first_row=1)),
        ]
    prog.append(_move("embed cls", "params", Src.PARAM, Unit.NONE, Dst.SCRATCH, dw, ("cls", "embed"),
                      wr=_rows(p, "x", 1, dw, dw)))
    if im.config.pre_ln:           # CLIP's LayerNorm on the tokens before the first block
        prog += _ln(p, "pre.ln", im, t, dst="x")
    return addressed(p, prog + [Desc("end", "end", {"op": Op.END})])


def embed_chunk(p: Plan) -> int:
    """Output columns per patch-embedding GEMM: its per-token bias buffer holds this many."""
    return min(p.width, 4 * p.lanes)


def layer_segment(p: Plan, im, i: int, tap: bool = True) -> list[Desc]:
    b = f"b{i}"
    t, d, dw, tg, L = p.tokens, p.width, p.dw, p.tg, p.lanes
    dh = p.head_dim
    dhw = dh // L
    qkv_base, kt_base, ctx_base = p.regions["qkv"][0], p.regions["kt"][0], p.regions["ctx"][0]
    h_base = p.regions["h"][0]
    sm = im.prefix(f"{b}.softmax")
    prog = _ln(p, f"{b}.ln1", im, t)
    prog += _linear(p, f"{b}.qkv", t, d, 3 * d, (h_base, dw), _to(p, f"{b}.qkv", "qkv", t, 3 * dw))
    prog += [_move(f"{b}.k transpose", "transpose", Src.SCRATCH, Unit.SERIAL, Dst.TRANSPOSE, t * d,
                   rd=_rows(p, "qkv", t, dw, 3 * dw, offset=dw), wr=_pat(kt_base), elems=d, groups=tg)]
    pw = t * tg                                   # one head's probabilities: a bank of the p memory

    def ctx(h, wait=0):                           # P·V of head h, its probabilities in bank h % 2
        return [_params(p, f"{b}.h{h}.ctx", dh, ("ctx_params", b, dh)),
                _gemm(f"{b}.h{h}.ctx", t, t, dh, (h % 2) * pw, tg, w_scratch=1, a_from_p=1, wait=wait,
                      rd=_pat(qkv_base + 2 * dw + h * dhw, dhw, 1, tg * L, 3 * dw)),
                _move(f"{b}.h{h}.ctx out", "move", Src.ENG_OUT, Unit.NONE, Dst.SCRATCH, t * dhw,
                      wr=_pat(ctx_base + h * dhw, t, dw, dhw, 1))]

    # head h's softmax runs on the side channel beside Q·Kᵀ of head h+1 and P·V of head h-1
    for h in range(p.heads):
        prog += [
            _params(p, f"{b}.h{h}.scores", t, ("zero_params", t)),
            _gemm(f"{b}.h{h}.scores", t, dh, t, qkv_base + h * dhw, 3 * dw, raw=1, raw_bank=h % 2, w_scratch=1,
                  rd=_pat(kt_base + h * dh * tg, tg, 1, dh, tg)),
            Desc(f"{b}.h{h}.softmax", "softmax", {
                "op": Op.SOFTMAX, "total": pw, "elems": t, "raw_bank": h % 2, "rd": _pat(0, 1, 0, pw, 1),
                "wr": _pat((h % 2) * pw), "pre": int(sm["pre"]), "x0": int(sm["x0"]), "sqb": int(sm["qb"]),
                "sqc": int(sm["qc"])}),
        ]
        if h:
            prog += ctx(h - 1)
    prog += ctx(p.heads - 1, wait=1)
    add1, add2, gelu = (im.prefix(f"{b}.{k}") for k in ("add1", "add2", "gelu"))

    def add(name, prm):
        return lambda n0, n1: [_move(name, "add", Src.ENG_OUT, Unit.ADD, Dst.SCRATCH, t * dw,
                                     rd=_rows(p, "x", t, dw, dw), wr=_rows(p, "x", t, dw, dw),
                                     m_a=int(prm["m_a"]), m_b=int(prm["m_b"]), shift=int(prm["shift"]))]

    prog += _linear(p, f"{b}.proj", t, d, d, (ctx_base, dw), add(f"{b}.add1", add1))
    prog += _ln(p, f"{b}.ln2", im, t)
    hw_ = p.hidden // L
    # the MLP activation is looked up in a 256-entry table loaded for the layer: a table the
    # IntModel keeps (quick_gelu), or i-GELU's 256 outputs (``activation_table``), the same integers
    # as the computed unit with no multiplier
    prog.append(_move(f"{b}.gelu table", "params", Src.PARAM, Unit.NONE, Dst.TABLE, TableUnit.ENTRIES // L, ("act_table", b)))
    act = _to(p, f"{b}.gelu", "hid", t, hw_, kind="table", unit=Unit.TABLE)
    prog += _linear(p, f"{b}.fc1", t, d, p.hidden, (h_base, dw), act)
    prog += _linear(p, f"{b}.fc2", t, p.hidden, d, (p.regions["hid"][0], hw_), add(f"{b}.add2", add2))
    if tap:
        prog += [_move(f"{b} tokens", "tap", Src.SCRATCH, Unit.NONE, Dst.HOST, t * dw, rd=_rows(p, "x", t, dw, dw))]
    return addressed(p, prog + [Desc("end", "end", {"op": Op.END})])


def head_segment(p: Plan, im, embedding: bool = True) -> list[Desc]:
    """The final LayerNorm, the projection and the class logits; the embedding goes to the
    host too unless ``embedding`` is off (the accelerator reads only the logits)."""
    e, L = p.embed_dim, p.lanes
    ew = -(-e // L)
    cw = -(-p.classes // L)
    emb = p.regions["emb"][0]
    prog = _ln(p, "head.ln", im, 1)
    prog += _linear(p, "head.proj", 1, p.width, e, (p.regions["h"][0], p.dw),
                    lambda n0, n1: [_move(f"head.proj[{n0}:{n1}] out", "move", Src.ENG_OUT, Unit.NONE, Dst.SCRATCH,
                                          -(-(n1 - n0) // L), wr=_pat(emb + n0 // L, 1, 0, -(-(n1 - n0) // L), 1))])
    if embedding:
        prog.append(_move("embedding", "tap", Src.SCRATCH, Unit.NONE, Dst.HOST, ew, rd=_pat(emb, 1, 0, ew, 1)))
    return addressed(p, prog + [
        _params(p, "head.logits", p.classes, ("zero_params", p.classes)),
        _gemm("head.logits", 1, e, p.classes, emb, ew, ("weights", "head.class_emb", 0, p.classes), raw=1),
        _move("logits", "tap", Src.ENG_RAW, Unit.NONE, Dst.HOST, cw),
        Desc("end", "end", {"op": Op.END}),
    ])


def model_program(im, lanes: int, layers: int | None = None, tap: bool = True) -> tuple[Plan, list[list[Desc]]]:
    """(plan, segments) for the whole model: embedding, ``layers`` encoder layers (all by
    default), and the head when every layer runs."""
    cfg = im.config
    p = make_plan(cfg, lanes)
    depth = cfg.depth if layers is None else layers
    segs = [embed_segment(p, im)] + [layer_segment(p, im, i, tap) for i in range(depth)]
    if depth == cfg.depth:
        segs.append(head_segment(p, im))
    return p, segs


def accelerator_segments(im, lanes: int, taps: set[int]) -> tuple[Plan, dict[str, list[Desc]]]:
    """(plan, segments by name) that the accelerator (``hw.rtl.accelerator``) runs for ``im``:
    ``embed``, ``b0`` .. (the blocks; those ending at backbone layers ``taps`` send their
    tokens to the exit head) and ``final`` (the logits only)."""
    plan, segs = model_program(im, lanes, tap=False)
    named = {"embed": segs[0]}
    for i in range(im.config.depth):
        named[f"b{i}"] = layer_segment(plan, im, i, tap=True) if i + 1 in taps else segs[i + 1]
    named["final"] = head_segment(plan, im, embedding=False)
    return plan, named


def enabled(ep) -> list[int]:
    """Candidate indices whose exit is on (their heads run); none without an exit path."""
    return [] if ep is None else [k for k, r in enumerate(ep.registers) if r is not None]


def accelerator(im, ep, lanes: int) -> acc.Accelerator:
    """The accelerator for ``im`` with the exits of ``ep`` that are on (``None``: no exits): one
    exit head of ``lanes`` multipliers, its blocks streamed (``StreamDense``), serves them all."""
    on = enabled(ep)
    plan, named = accelerator_segments(im, lanes, {ep.layers[k] for k in on})
    cfg = engine_config(plan, list(named.values()))
    if not on:
        return acc.Accelerator(cfg, plan.classes)
    ep.check_width(im.config.width)
    return acc.Accelerator(cfg, plan.classes, ep.head, on, ep.tokens, StreamDense(lanes), max(len(ep.layers), 1))


def engine_config(p: Plan, segments: list[list[Desc]], **extra) -> LayerConfig:
    """The smallest LayerConfig that holds this program (capacities from its descriptors)."""
    gemms = [d for seg in segments for d in seg if d.kind == "gemm"]
    raw_n = max([d["n"] for d in gemms if d["raw"]] or [1])
    raw_words = max([d["m"] * -(-d["n"] // p.lanes) for d in gemms if d["raw"]] or [1])
    bias_n = max([d["n"] for d in gemms if d["token_bias"]] or [1])
    return LayerConfig(
        lanes=p.lanes, scratch_words=p.scratch_words, prog_words=max(len(s) for s in segments),
        max_d=p.width, max_row=max(p.tokens, 1), max_m=max(d["m"] for d in gemms),
        max_k=max(d["k"] for d in gemms), max_n=max(d["n"] for d in gemms), max_raw_n=raw_n,
        max_raw_words=raw_words, max_bias_n=bias_n, table=any(d.fields.get("unit") == Unit.TABLE for seg in segments for d in seg),
        gelu=any(d.fields.get("unit") == Unit.GELU for seg in segments for d in seg), **extra)


def activation_table(im, block: str) -> torch.Tensor:
    """The 256 int8 entries (index x + 128) of layer ``block``'s MLP activation: the table the
    IntModel keeps, saturated to int8 as the lookup does, or ``intops.gelu`` of every int8 input."""
    prm = im.prefix(f"{block}.gelu")
    if "table" in prm:
        return prm["table"].clamp(intops.INT8_MIN, intops.INT8_MAX)
    x = torch.arange(intops.INT8_MIN, intops.INT8_MAX + 1, dtype=torch.int64)
    return intops.gelu(x, prm["qb"], prm["qc"], prm["m"], prm["shift"])


def segment_macs(segment: list[Desc]) -> int:
    return sum(d["m"] * d["k"] * d["n"] for d in segment if d.kind == "gemm")
