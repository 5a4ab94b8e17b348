"""FP32 model + calibration images → IntModel (the one quantized artifact), and the paper's dynamic INT8.

Quantization scheme (see "The numeric contract" in docs/architecture.md and model/intops.py):

* weights: int8, symmetric, per output channel (scale = max|w| / 127);
* biases: int32 at scale s_x * s_w;
* activations: int8, symmetric, per tensor, static scales from calibration. The scale of a
  point is ``percentile(|x|, p) / 127`` over the calibration images (p = 99.99 by default:
  *percentile* calibration; ``percentile=100`` is max calibration);
* input pixels enter as ``p - 128`` (int8, exact) and the pixel normalisation (per channel) is
  folded into the patch-embedding weights and bias; the position embedding becomes a per-token int32 bias;
* every requantization point stores an int32 multiplier and a shift (``intops.quantize_multiplier``).

**Mixed precision**: ``widths`` gives each encoder block a (weight bits, activation
bits) pair in 2..8 (``IntModel.widths``; ``None`` = 8 everywhere). Block i's weights (qkv, proj,
fc1, fc2) are per-channel symmetric at ``w`` bits (scale max|w| / (2**(w-1) - 1)); its
activations ``ACT_POINTS`` (everything the block computes except the residual stream x_mid and
x_out, which stays 8-bit, and the softmax probabilities, 7-bit unsigned as always) at ``a`` bits
(scale percentile / (2**(a-1) - 1), saturated to [-2**(a-1), 2**(a-1) - 1]). Every value still
sits in an int8 container and every kernel is the same; only the saturation bounds narrow.
The embedding and the final head stay 8-bit. Loading checks that the weights fit their widths.

Activation points of block i (names ``b{i}.<point>``): x_in, ln1, q, k, v, ctx, attn, x_mid,
ln2, h (fc1 out), g (GELU out), mlp, x_out; then lnp (ln_post on [CLS]) and emb (projection).
A CLIP tower (model/clip.py) adds pre_in (the tokens before its pre-LN, ``pre.ln``) and, for an
activation other than GELU (quick_gelu), keeps it as a 256-entry table (``b{i}.gelu.table``).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

from model import intops
from model.errors import QexitError, load_artifact
from model.vit import CLIPViT, ViTConfig, patchify

FORMAT = "qexit-intmodel"
# The embedded default's IntModel, calibrated once and shipped so that every CPU gets the same
# integers (calibration runs float kernels, which differ by a few ulps between machines).
SHIPPED_INTMODEL = Path(__file__).parent / "weights" / "vit_fmnist_int8.pt"
SHIPPED_INTMODEL_DIGEST = SHIPPED_INTMODEL.with_suffix(".sha256")
VERSION = 1
MIN_CALIBRATION_IMAGES = 32
BLOCK_POINTS = ("x_in", "ln1", "q", "k", "v", "ctx", "attn", "x_mid", "ln2", "h", "g", "mlp", "x_out")
PIXEL_OFFSET = 128
ACT_POINTS = ("ln1", "q", "k", "v", "ctx", "attn", "ln2", "h", "g", "mlp")   # a block's activation-width points
LINEARS = ("qkv", "proj", "fc1", "fc2")


def check_widths(widths, depth: int) -> tuple[tuple[int, int], ...]:
    """(weight bits, activation bits) per block, checked: one pair per block, each in 2..8."""
    try:
        pairs = tuple((int(w), int(a)) for w, a in widths)
    except (TypeError, ValueError):
        raise QexitError(f"bit-widths {widths!r:.60} must be one (weight bits, activation bits) pair per block") from None
    if len(pairs) != depth:
        raise QexitError(f"the bit-width assignment has {len(pairs)} layers but the model has {depth}; "
                         f"give one (weight, activation) pair per block")
    lo, hi = intops.BITS
    for i, (w, a) in enumerate(pairs):
        for kind, b in (("weight", w), ("activation", a)):
            if not lo <= b <= hi:
                raise QexitError(f"block {i + 1}'s {kind} bit-width {b} is outside {{{lo}..{hi}}}; "
                                 f"choose bits from {lo} to {hi}")
    return pairs


@dataclass
class IntModel:
    """Integer parameters (int64 tensors holding int8/int32 values) plus the float scales they came from.

    ``params`` is flat: ``embed.w``, ``b3.qkv.m``, ``head.class_emb``, ... The golden model and the RTL
    generators read only ``params``; ``scales`` are for dequantizing outputs in analyses.
    """
    config: ViTConfig
    params: dict[str, torch.Tensor]
    scales: dict[str, float]
    calibration: dict = field(default_factory=dict)
    widths: tuple[tuple[int, int], ...] | None = None     # (weight, activation) bits per block; None = 8

    @property
    def block_widths(self) -> tuple[tuple[int, int], ...]:
        return self.widths if self.widths is not None else ((8, 8),) * self.config.depth

    @property
    def uniform8(self) -> bool:
        return all(p == (8, 8) for p in self.block_widths)

    def require_uniform8(self, what: str) -> None:
        """The RTL's requantizers saturate to int8: one line for a mixed-precision IntModel."""
        if not self.uniform8:
            raise QexitError(f"{what} runs 8-bit IntModels, and this one has per-block widths "
                             f"{[list(p) for p in self.block_widths]}; the RTL saturates to int8 (price a "
                             f"mixed assignment with `qexit mixed`, or pass an 8-bit IntModel)")

    def p(self, name: str) -> torch.Tensor:
        return self.params[name]

    def prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """Parameters under ``prefix.`` with the prefix stripped, e.g. prefix('b0.qkv') → {w, b, m, shift}."""
        n = len(prefix) + 1
        return {k[n:]: v for k, v in self.params.items() if k.startswith(prefix + ".")}

    def digest(self) -> str:
        """SHA-256 of what the IntModel computes with: its config, widths and every parameter's
        name, dtype, shape and values (not the file's bytes, which depend on torch's writer)."""
        h = hashlib.sha256(json.dumps({"config": self.config.to_dict(), "widths": self.widths},
                                      sort_keys=True, default=list).encode())
        for name in sorted(self.params):
            v = self.params[name].contiguous()
            h.update(f"{name}:{v.dtype}:{tuple(v.shape)}".encode())
            h.update(v.numpy().tobytes())
        return h.hexdigest()

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save({"format": FORMAT, "version": VERSION, "config": self.config.to_dict(),
                    "params": self.params, "scales": self.scales, "calibration": self.calibration,
                    "widths": None if self.widths is None else [list(p) for p in self.widths]}, tmp)
        tmp.replace(path)


# --------------------------------------------------------------------------- FP32 trace

def trace_fp32(model: CLIPViT, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every activation point of the FP32 forward pass, named as in the module docstring.

    Mirrors ``CLIPViT.forward`` step by step (tested: same logits), exposing q/k/v, context etc.
    """
    cfg = model.cfg
    out: dict[str, torch.Tensor] = {}
    x = model.patch_tokens(model.normalized(images))
    if cfg.pre_ln:
        out["pre_in"] = x
        x = model.ln_pre(x)
    for i, blk in enumerate(model.blocks):
        p = f"b{i}."
        out[p + "x_in"] = x
        a = blk.ln1(x)
        out[p + "ln1"] = a
        n, t, d = a.shape
        q, k, v = blk.attn.qkv(a).reshape(n, t, 3, cfg.heads, cfg.head_dim).permute(2, 0, 3, 1, 4)
        out[p + "q"], out[p + "k"], out[p + "v"] = q, k, v
        att = ((q @ k.transpose(-2, -1)) / math.sqrt(cfg.head_dim)).softmax(-1)
        ctx = (att @ v).transpose(1, 2).reshape(n, t, d)
        out[p + "ctx"] = ctx
        attn = blk.attn.proj(ctx)
        out[p + "attn"] = attn
        x = x + attn
        out[p + "x_mid"] = x
        a2 = blk.ln2(x)
        out[p + "ln2"] = a2
        h = blk.fc1(a2)
        out[p + "h"] = h
        g = blk.act(h)
        out[p + "g"] = g
        mlp = blk.fc2(g)
        out[p + "mlp"] = mlp
        x = x + mlp
        out[p + "x_out"] = x
    out["lnp"] = model.ln_post(x[:, 0])
    out["emb"] = model.proj(out["lnp"])
    out["logits"] = model.cosine_logits(out["emb"])
    return out


@torch.no_grad()
def calibrate(model: CLIPViT, images: torch.Tensor, percentile: float = 99.99,
              batch_size: int = 250) -> dict[str, float]:
    """Static per-tensor scales: percentile(|x|)/127 at every activation point."""
    if len(images) < MIN_CALIBRATION_IMAGES:
        raise QexitError(f"calibration needs at least {MIN_CALIBRATION_IMAGES} images, got {len(images)}; "
                         "pass more with --calib-images")
    if not 0 < percentile <= 100:
        raise QexitError(f"calibration percentile {percentile} must be in (0, 100]")
    model.eval()
    samples: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(images), batch_size):
        for name, t in trace_fp32(model, images[i:i + batch_size]).items():
            if name != "logits":
                samples.setdefault(name, []).append(t.abs().reshape(-1).float())
    scales = {}
    for name, parts in samples.items():
        v = torch.cat(parts)
        k = max(1, math.ceil(percentile / 100 * v.numel()))
        hi = v.max().item() if k >= v.numel() else v.kthvalue(k).values.item()
        scales[name] = max(hi, 1e-8) / 127.0
    return scales


# --------------------------------------------------------------------------- building the IntModel

def _weight(w: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric weights at ``bits`` (int8 by default) and their scales."""
    s = (w.detach().double().abs().amax(dim=1) / intops.int_range(bits)[1]).clamp(min=1e-12)
    return intops.quantize_real(w.detach().double(), s[:, None], bits), s


def _linear(params: dict, name: str, w: torch.Tensor, b: torch.Tensor | None,
            s_in: float, s_out: torch.Tensor | float, bits: int = 8) -> None:
    """Weights at ``bits``, int32 bias and requantization (M, shift) of a Linear: s_in → s_out (per channel ok)."""
    wq, sw = _weight(w, bits)
    params[f"{name}.w"] = wq
    if b is not None:
        params[f"{name}.b"] = intops.quantize_real(b.detach().double(), s_in * sw, bits=32)
    m, sh = intops.quantize_multiplier(s_in * sw / torch.as_tensor(s_out, dtype=torch.float64))
    params[f"{name}.m"], params[f"{name}.shift"] = m, sh


def _layernorm(params: dict, name: str, ln: nn.LayerNorm, s_in: float, s_out: float) -> None:
    for k, v in intops.layernorm_params(ln.weight.detach(), ln.bias.detach(), s_in, s_out, ln.eps).items():
        params[f"{name}.{k}"] = v


def _put(params: dict, name: str, d: dict) -> None:
    for k, v in d.items():
        params[f"{name}.{k}"] = torch.as_tensor(v, dtype=torch.int64)


@torch.no_grad()
def quantize(model: CLIPViT, calib_images: torch.Tensor, percentile: float = 99.99, widths=None) -> IntModel:
    """FP32 model → IntModel with static scales calibrated on ``calib_images`` (8-bit, or the
    per-block ``widths``)."""
    return from_scales(model, calibrate(model, calib_images, percentile), percentile, len(calib_images), widths)


@torch.no_grad()
def from_scales(model: CLIPViT, scales: dict[str, float], percentile: float = 99.99, images: int = 0,
                widths=None) -> IntModel:
    """FP32 model + calibrated 8-bit scales (``calibrate``) → IntModel at ``widths``: calibrate
    once, then build any number of bit-width assignments from the same statistics."""
    cfg = model.cfg
    widths = None if widths is None else check_widths(widths, cfg.depth)
    s = dict(scales)
    for i, (_, a) in enumerate(widths or ()):
        for point in ACT_POINTS:              # the same clip point over a narrower integer range
            s[f"b{i}.{point}"] *= intops.INT8_MAX / intops.int_range(a)[1]
    params: dict[str, torch.Tensor] = {}

    # Patch embedding: input a = pixel - 128 (int8, scale 1); the per-channel normalisation
    # (pixel/255 - mean_c)/std_c is folded into W's columns (channel c = column % channels) and b.
    mean, std = (torch.tensor(v, dtype=torch.float64).expand(cfg.channels).repeat(cfg.patch * cfg.patch)
                 for v in (cfg.pixel_mean, cfg.pixel_std))
    w = model.patch_embed.weight.double() / (255.0 * std)
    b = model.patch_embed.bias.double() + (model.patch_embed.weight.double() * (
        (PIXEL_OFFSET - 255.0 * mean) / (255.0 * std))).sum(1)
    s_x0 = s["pre_in"] if cfg.pre_ln else s["b0.x_in"]
    wq, sw = _weight(w)
    params["embed.w"] = wq
    pos = model.pos_embed[0].double()
    params["embed.b"] = intops.quantize_real(b[None, :] + pos[1:], sw[None, :], bits=32)  # (P, width)
    m, sh = intops.quantize_multiplier(sw / s_x0)
    params["embed.m"], params["embed.shift"] = m, sh
    params["embed.cls"] = intops.quantize_real(model.cls_token[0, 0].double() + pos[0], s_x0)
    if cfg.pre_ln:
        _layernorm(params, "pre.ln", model.ln_pre, s_x0, s["b0.x_in"])

    for i, blk in enumerate(model.blocks):
        p = f"b{i}"
        sx = s[f"{p}.x_in"]
        wb = widths[i][0] if widths else 8
        _layernorm(params, f"{p}.ln1", blk.ln1, sx, s[f"{p}.ln1"])
        s_qkv = torch.tensor([s[f"{p}.q"]] * cfg.width + [s[f"{p}.k"]] * cfg.width + [s[f"{p}.v"]] * cfg.width,
                             dtype=torch.float64)
        _linear(params, f"{p}.qkv", blk.attn.qkv.weight, blk.attn.qkv.bias, s[f"{p}.ln1"], s_qkv, wb)
        _put(params, f"{p}.softmax", intops.softmax_params(s[f"{p}.q"] * s[f"{p}.k"] / math.sqrt(cfg.head_dim)))
        m, sh = intops.quantize_multiplier(s[f"{p}.v"] * 2.0 ** -intops.PROB_BITS / s[f"{p}.ctx"])
        params[f"{p}.ctx.m"], params[f"{p}.ctx.shift"] = m[0], sh[0]
        _linear(params, f"{p}.proj", blk.attn.proj.weight, blk.attn.proj.bias,
                s[f"{p}.ctx"], s[f"{p}.attn"], wb)
        _put(params, f"{p}.add1", intops.add_params(sx, s[f"{p}.attn"], s[f"{p}.x_mid"]))
        _layernorm(params, f"{p}.ln2", blk.ln2, s[f"{p}.x_mid"], s[f"{p}.ln2"])
        _linear(params, f"{p}.fc1", blk.fc1.weight, blk.fc1.bias, s[f"{p}.ln2"], s[f"{p}.h"], wb)
        if cfg.act == "gelu":
            _put(params, f"{p}.gelu", intops.gelu_params(s[f"{p}.h"], s[f"{p}.g"]))
        else:                       # any other activation: a 256-entry table on the int8 input
            _put(params, f"{p}.gelu", intops.table_params(blk.act, s[f"{p}.h"], s[f"{p}.g"]))
        _linear(params, f"{p}.fc2", blk.fc2.weight, blk.fc2.bias, s[f"{p}.g"], s[f"{p}.mlp"], wb)
        # x_out of block i is x_in of block i+1: one scale for both (the last block keeps its own).
        s_next = s[f"b{i + 1}.x_in"] if i + 1 < cfg.depth else s[f"{p}.x_out"]
        s[f"{p}.x_out"] = s_next
        _put(params, f"{p}.add2", intops.add_params(s[f"{p}.x_mid"], s[f"{p}.mlp"], s_next))

    _layernorm(params, "head.ln", model.ln_post, s[f"b{cfg.depth - 1}.x_out"], s["lnp"])
    _linear(params, "head.proj", model.proj.weight, None, s["lnp"], s["emb"])
    cls_emb = model.class_embeddings.double()
    s["class_emb"] = cls_emb.abs().max().item() / 127.0
    params["head.class_emb"] = intops.quantize_real(cls_emb, s["class_emb"])
    calib = {"method": "percentile" if percentile < 100 else "max", "percentile": percentile, "images": images}
    return IntModel(cfg, params, s, calib, widths)


# --------------------------------------------------------------------------- loading and checking

def expected_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """The name → shape of every IntModel parameter (scalars are ())."""
    d, h, e = cfg.width, cfg.hidden, cfg.embed_dim
    shapes: dict[str, tuple[int, ...]] = {
        "embed.w": (d, cfg.patch_dim), "embed.b": (cfg.num_patches, d), "embed.m": (d,), "embed.shift": (d,),
        "embed.cls": (d,),
        "head.proj.w": (e, d), "head.proj.m": (e,), "head.proj.shift": (e,),
        "head.class_emb": (cfg.num_classes, e),
    }

    def ln(name):
        shapes.update({f"{name}.g": (d,), f"{name}.b": (d,), f"{name}.shift": (), f"{name}.eps": ()})

    def lin(name, n_out, n_in, bias=True):
        shapes.update({f"{name}.w": (n_out, n_in), f"{name}.m": (n_out,), f"{name}.shift": (n_out,)})
        if bias:
            shapes[f"{name}.b"] = (n_out,)

    ln("head.ln")
    if cfg.pre_ln:
        ln("pre.ln")
    for i in range(cfg.depth):
        p = f"b{i}"
        ln(f"{p}.ln1")
        ln(f"{p}.ln2")
        lin(f"{p}.qkv", 3 * d, d)
        lin(f"{p}.proj", d, d)
        lin(f"{p}.fc1", h, d)
        lin(f"{p}.fc2", d, h)
        shapes.update({f"{p}.softmax.{k}": () for k in ("pre", "x0", "qb", "qc")})
        shapes.update({f"{p}.ctx.m": (), f"{p}.ctx.shift": ()})
        if cfg.act == "gelu":
            shapes.update({f"{p}.gelu.{k}": () for k in ("qb", "qc", "m", "shift")})
        else:
            shapes[f"{p}.gelu.table"] = (intops.TABLE_SIZE,)
        for a in ("add1", "add2"):
            shapes.update({f"{p}.{a}.{k}": () for k in ("m_a", "m_b", "shift")})
    return shapes


def validate(im: IntModel) -> None:
    """Raise QexitError unless every parameter is present, shaped, typed and in range: int8
    weights, int32 biases, every (multiplier, shift) pair, and the LayerNorm, softmax and GELU
    constants within the ranges ``model.intops`` derives its bit widths from."""
    shapes = expected_shapes(im.config)
    if im.widths is not None:
        im.widths = check_widths(im.widths, im.config.depth)
        for i, (w, _) in enumerate(im.widths):
            for lin in LINEARS:
                t = im.params.get(f"b{i}.{lin}.w")
                if isinstance(t, torch.Tensor) and t.dtype == torch.int64:
                    intops.check_range(t, w, f"IntModel parameter b{i}.{lin}.w (block {i + 1})")
    missing = sorted(set(shapes) - set(im.params))
    if missing:
        raise QexitError(f"IntModel lacks {len(missing)} parameters (first: {missing[0]}); it does not "
                         "match its config — re-run `qexit quantize`")
    for name, shape in shapes.items():
        t = im.params[name]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or tuple(t.shape) != shape:
            got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
            raise QexitError(f"IntModel parameter {name} is {got}, expected int64 {shape}; re-run `qexit quantize`")
        if name.endswith(".w") or name in ("embed.cls", "head.class_emb"):
            intops.check_int8(t, f"IntModel parameter {name}")
    for name in shapes:
        if name.endswith(".m") and name[:-2] + ".shift" in shapes:
            intops.check_multiplier(im.params[name], im.params[name[:-2] + ".shift"], f"IntModel {name[:-2]}")
        if name.endswith(".m_a"):
            base = name[:-4]
            intops.check_multiplier(im.params[name], im.params[base + ".shift"], f"IntModel {base}")
            intops.check_multiplier(im.params[base + ".m_b"], im.params[base + ".shift"], f"IntModel {base}")
        if name.endswith(".softmax.pre"):
            base = name[:-4]
            intops.check_softmax_params(**{k: im.params[f"{base}.{k}"] for k in ("pre", "x0", "qb", "qc")},
                                        name=f"IntModel {base}")
        elif name.endswith(".gelu.qb"):
            base = name[:-3]
            intops.check_gelu_params(**{k: im.params[f"{base}.{k}"] for k in ("qb", "qc", "m", "shift")},
                                     name=f"IntModel {base}")
        elif name.endswith(".gelu.table"):
            intops.check_table(im.params[name], f"IntModel {name[:-6]}")
        elif name.endswith(".eps"):
            base = name[:-4]
            intops.check_layernorm_params(**{k: im.params[f"{base}.{k}"] for k in ("g", "b", "shift", "eps")},
                                          name=f"IntModel {base}")
        elif name.endswith(".b") and f"{name[:-2]}.w" in shapes:      # a linear layer's int32 bias
            b = im.params[name]
            if b.numel() and (b.min() < intops.INT32_MIN or b.max() > intops.INT32_MAX):
                raise QexitError(f"IntModel parameter {name} holds values outside int32; the IntModel is corrupt")


def load_intmodel(path: Path | str, config: ViTConfig | None = None) -> IntModel:
    """Load and validate an IntModel file; ``config``, when given, must match."""
    blob = load_artifact(path, "IntModel", FORMAT, VERSION, "make it with `qexit quantize`")
    cfg = ViTConfig.from_dict(blob["config"])
    if config is not None and cfg != config:
        raise QexitError(f"IntModel {path} was made for another model config; re-run `qexit quantize` "
                         "on this checkpoint")
    im = IntModel(cfg, blob["params"], blob["scales"], blob.get("calibration", {}), blob.get("widths"))
    validate(im)
    if Path(path).resolve() == SHIPPED_INTMODEL.resolve() and im.digest() != shipped_intmodel_digest():
        raise QexitError(f"the shipped IntModel {SHIPPED_INTMODEL} does not match its recorded hash "
                         f"({SHIPPED_INTMODEL_DIGEST.name}); restore it with `git checkout {SHIPPED_INTMODEL.name}` "
                         "or pass your own with --intmodel")
    return im


def shipped_intmodel_digest() -> str:
    """The recorded hash of the shipped IntModel (``IntModel.digest``)."""
    return SHIPPED_INTMODEL_DIGEST.read_text().split()[0]


# --------------------------------------------------------------------------- the paper's dynamic INT8

def dynamic_int8(model: CLIPViT) -> CLIPViT:
    """The paper's mode: ``torch.ao.quantization.quantize_dynamic`` on every Linear of the vision tower."""


    with warnings.catch_warnings():  # torch deprecates torch.ao in favour of torchao; the paper used it
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def pixels_to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) → int8 patches ``pixel - 128`` (N, P, patch*patch*C), int64."""
    return patchify(images.to(torch.int64) - PIXEL_OFFSET, patch)


def random_intmodel(cfg: ViTConfig, seed: int = 0, images: int = MIN_CALIBRATION_IMAGES) -> IntModel:
    """A valid IntModel of any size: a randomly initialised FP32 ViT, calibrated on random
    images and quantized like a trained one (for RTL checks at sizes no checkpoint has)."""

    torch.manual_seed(seed)
    model = CLIPViT(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (images, cfg.channels, cfg.image_size, cfg.image_size), dtype=torch.uint8, generator=g)
    im = quantize(model, pixels)
    validate(im)
    return im
