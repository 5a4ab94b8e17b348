"""The exit head and gate in fixed point, defined as the hardware computes them.

The float head (``model.exits.heads``) and gate (``model.exits.gate``) are trained as before,
then quantized here. The input at candidate layer l is what the golden model's int8 tokens x
(scale s_x of that block's output) give, summed over the P patch tokens ([CLS] left out):

    S_i = sum_p x_{p,i}                       int, |S| <= 128 P (13 bits for P = 49)
    V   = sum_i (P * sum_p x_{p,i}**2 - S_i**2)   int64, >= 0: SAV = V * s_x**2 / (P**2 D)

Every step below is a ``model.intops`` kernel, with its bit widths stated there:

1. SSA: a = requantize(S, M_a, sh_a), int8 at s_a (the mean S s_x / P, requantized);
2. LN: y = layernorm(a, g, b, shift, eps), int8 at s_ln (the head's own LN affine);
3. dense 1 + ReLU: h = max(requantize(gemm(y, W1, b1), M_1, sh_1), 0), int8 at s_h;
4. dense 2: e = requantize(gemm(h, W2, b2), M_2, sh_2), int8 at s_e: the embedding;
5. class scores: d_c = e · t_c, int32 (t = the unit-norm class embeddings, int8 at 1/127).
   The class is argmax d (what the comparator takes): the cosine's 1/|e| is common to all
   classes, so it cannot change the arg-max;
6. the gate's logits: n = sum e**2 (< E 2**14), r = isqrt(n << 16) (|e| with 8 fraction bits),
   inv = floor(2**40 / max(r, 1)) (one reciprocal per image), z1 = round_shift(d * inv, 24)
   (|d inv| < 2**55), z_c = round_shift(z1 * M_z, sh_z): int32 at 2**-Z_BITS, the float logit
   scale * cos;
7. confidence and margin: p = softmax(z) with ``softmax_params(2**-Z_BITS)`` (I-BERT i-exp with
   one reciprocal per row, the layer engine's softmax) but with 15-bit outputs (``prob_bits``,
   at 2**-15: 7 bits leave every p >= 0.99 at 127/128, where the thresholds sit),
   c = p_(1), m = p_(1) - p_(2);
8. SAV: v = V >> sav_shift (chosen so that v fits 16 bits on the calibration set, saturated);
9. the gate: G = sat32(W_c c + W_m m + W_s v + B), with the float weights scaled by
   2**GATE_BITS (24) (the comparator's int32 gate): exit iff G >= the threshold register
   ceil(logit(tau) * 2**GATE_BITS). A layer the thresholds switch off is not a candidate
   (the comparator's mask bit), so it has no register.

Scales s_a, s_ln, s_h, s_e are static: the 99.99th percentile of the float head's own values
on calibration inputs, over 127, as the backbone's activations are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model import intops
from model.exits.gate import Gate
from model.exits.heads import ExitHeads

Z_BITS = 16            # the gate's logits: int32 at 2**-16
GATE_BITS = 24         # the gate's pre-activation: fixed point with 24 fraction bits
GATE_PROB_BITS = 15    # confidence and margin: probabilities at 2**-15
SAV_BITS = 16          # v = V >> sav_shift fits this many bits on the calibration set
NORM_FRAC = 8          # r = |e| with 8 fraction bits
INV_BITS = 40          # inv = floor(2**40 / r)
Z1_SHIFT = 24          # d * inv >> 24 before the logit scale
PERCENTILE = 99.99


def _scale(x: torch.Tensor) -> float:
    v = torch.quantile(x.detach().abs().flatten().double()[:1_000_000], PERCENTILE / 100).item()
    return max(v, 1e-8) / 127.0


@dataclass
class FixedLayer:
    """One candidate layer's integer head and gate."""
    params: dict[str, torch.Tensor]

    def __getitem__(self, k):
        return self.params[k]


@dataclass
class FixedHead:
    layers: list[FixedLayer]
    class_t: torch.Tensor          # (C, E) int8: unit-norm class embeddings at 1/127
    patches: int
    softmax: dict[str, torch.Tensor]

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``s`` (N, K, D) patch-token sums, ``v`` (N, K) the SAV numerators →
        (class scores (N, K, C) int32, gate pre-activations (N, K) int)."""
        scores, gates = [], []
        for k, lay in enumerate(self.layers):
            d, g = self.layer(k, s[:, k], v[:, k])
            scores.append(d)
            gates.append(g)
        return torch.stack(scores, 1), torch.stack(gates, 1)

    def layer(self, k: int, s: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate ``k``'s head on sums ``s`` (N, D) and SAV numerators ``v`` (N,)."""
        e = self.embedding(k, self.ssa_norm(k, s))
        d = self.scores(e)
        return d, self.gate(k, e, d, v)

    # the stages, in hardware order (each one a block of hw/tools/hls.py)
    def ssa_norm(self, k: int, s: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: the SSA requantized to int8, then the head's LayerNorm: int8 (N, D)."""
        p = self.layers[k]
        a = intops.requantize(s, p["m_a"], p["sh_a"])
        return intops.layernorm(a, p["ln_g"], p["ln_b"], p["ln_shift"], p["ln_eps"])

    def dense(self, k: int, x: torch.Tensor, i: int) -> torch.Tensor:
        """Dense ``i`` (1 or 2): the int32 accumulator, saturated (before requantization)."""
        p = self.layers[k]
        return intops.gemm(x, p[f"w{i}"], p[f"b{i}"])

    def requant(self, k: int, acc: torch.Tensor, i: int) -> torch.Tensor:
        p = self.layers[k]
        return intops.requantize(acc, p[f"m{i}"], p[f"sh{i}"])

    def embedding(self, k: int, y: torch.Tensor) -> torch.Tensor:
        """Steps 3-4: dense → ReLU → dense, the int8 embedding (N, E)."""
        h = self.requant(k, self.dense(k, y, 1), 1).clamp(min=0)
        return self.requant(k, self.dense(k, h, 2), 2)

    def scores(self, e: torch.Tensor) -> torch.Tensor:
        """Step 5: the int32 class scores (N, C)."""
        return intops.matmul(e, self.class_t.t())

    def gate(self, k: int, e: torch.Tensor, d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Steps 6-9: the gate's int32 pre-activation (N,)."""
        p = self.layers[k]
        n = (e * e).sum(-1)
        r = intops.isqrt(n << (2 * NORM_FRAC))
        inv = (1 << INV_BITS) // r.clamp(min=1)
        z1 = intops.round_shift(d * inv[:, None], Z1_SHIFT)
        z = intops.round_shift(z1 * p["m_z"], p["sh_z"]).clamp(intops.INT32_MIN, intops.INT32_MAX)
        prob = intops.softmax(z, **self.softmax, prob_bits=GATE_PROB_BITS)
        top = prob.topk(min(2, prob.shape[-1]), dim=-1).values
        c = top[:, 0]
        m = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
        sav = (v >> p["sav_shift"]).clamp(max=2 ** SAV_BITS - 1)
        return (p["w_c"] * c + p["w_m"] * m + p["w_s"] * sav + p["bias"]).clamp(intops.INT32_MIN, intops.INT32_MAX)

    @property
    def width(self) -> int:
        return self.layers[0]["w1"].shape[1]

    @property
    def hidden(self) -> int:
        return self.layers[0]["w1"].shape[0]

    @property
    def embed_dim(self) -> int:
        return self.class_t.shape[1]

    @property
    def classes(self) -> int:
        return self.class_t.shape[0]

    def state(self) -> dict:
        """Plain tensors and numbers (``torch.load(weights_only=True)`` reads them back)."""
        return {"layers": [dict(lay.params) for lay in self.layers], "class_t": self.class_t,
                "patches": self.patches, "softmax": dict(self.softmax)}

    @classmethod
    def from_state(cls, st: dict) -> "FixedHead":
        return cls([FixedLayer(dict(p)) for p in st["layers"]], st["class_t"], int(st["patches"]), dict(st["softmax"]))


def thresholds(taus: torch.Tensor) -> torch.Tensor:
    """Gate probabilities τ per layer → threshold registers ceil(logit(τ) 2**GATE_BITS), in
    int32; τ <= 0 (every sample exits) gives INT32_MIN, which every saturated gate reaches."""
    t = taus.double()
    reg = torch.ceil(torch.logit(t.clamp(1e-12, 1 - 1e-12)) * 2 ** GATE_BITS).clamp(intops.INT32_MIN, intops.INT32_MAX)
    return torch.where(t <= 0, torch.tensor(float(intops.INT32_MIN), dtype=torch.float64), reg).to(torch.int64)


def token_sums(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 tokens (N, T, D) of one layer → (S (N, D), V (N,)) over the patch tokens."""
    x = tokens[:, 1:].to(torch.int64)
    p = x.shape[1]
    s = x.sum(1)
    return s, (p * (x * x).sum(1) - s * s).sum(-1)


def quantize_head(heads: ExitHeads, gate: Gate, class_embeddings: torch.Tensor, s_x: list[float],
                  s: torch.Tensor, v: torch.Tensor, patches: int, layers: list[int] | None = None) -> FixedHead:
    """The float heads of ``layers`` (indices into ``heads``; default all) and the gate (one
    row per layer) → FixedHead, with activation scales calibrated on ``s`` (N, K, D) and ``v``
    (N, K) (the gating split) and ``s_x`` the token scale per layer."""
    t = F.normalize(class_embeddings.double(), dim=-1)
    class_t = intops.quantize_real(t, 1 / 127)
    width = s.shape[-1]
    out = []
    with torch.no_grad():
        for k, hk in enumerate(range(heads.layers) if layers is None else layers):
            mean = s[:, k].double() * s_x[k] / patches
            s_a = _scale(mean)
            ln = F.layer_norm(mean, (width,)) * heads.ln_weight[hk].double() + heads.ln_bias[hk].double()
            s_ln = _scale(ln)
            hid = torch.relu(ln @ heads.w1[hk].double() + heads.b1[hk].double())
            s_h = _scale(hid)
            emb = hid @ heads.w2[hk].double() + heads.b2[hk].double()
            s_e = _scale(emb)
            p: dict[str, torch.Tensor] = {}
            p["m_a"], p["sh_a"] = intops.quantize_multiplier(s_x[k] / patches / s_a)
            lnp = intops.layernorm_params(heads.ln_weight[hk].double(), heads.ln_bias[hk].double(), s_a, s_ln, eps=1e-5)
            p.update({"ln_g": lnp["g"], "ln_b": lnp["b"], "ln_shift": lnp["shift"], "ln_eps": lnp["eps"]})
            for name, w, b, s_in, s_out in (("1", heads.w1[hk], heads.b1[hk], s_ln, s_h),
                                            ("2", heads.w2[hk], heads.b2[hk], s_h, s_e)):
                wt = w.t().double()
                s_w = (wt.abs().amax(1) / 127).clamp(min=1e-12)
                p[f"w{name}"] = intops.quantize_real(wt, s_w[:, None])
                p[f"b{name}"] = intops.quantize_real(b.double(), s_in * s_w, bits=32)
                p[f"m{name}"], p[f"sh{name}"] = intops.quantize_multiplier(s_in * s_w / s_out)
            scale = heads.log_scale[hk].exp().clamp(max=100).item()
            p["m_z"], p["sh_z"] = intops.quantize_multiplier(
                scale / 127 * 2 ** (Z_BITS + Z1_SHIFT - (INV_BITS - NORM_FRAC)))
            v_max = max(int(v[:, k].max()), 1)
            p["sav_shift"] = torch.tensor(max(0, v_max.bit_length() - SAV_BITS))
            wc, wm, ws = gate.weight[k].double().tolist()
            sav_unit = s_x[k] ** 2 / (patches ** 2 * width) * 2 ** int(p["sav_shift"])
            p["w_c"] = torch.tensor(round(wc / 2 ** GATE_PROB_BITS * 2 ** GATE_BITS))
            p["w_m"] = torch.tensor(round(wm / 2 ** GATE_PROB_BITS * 2 ** GATE_BITS))
            p["w_s"] = torch.tensor(round(ws * sav_unit * 2 ** GATE_BITS))
            p["bias"] = torch.tensor(round(float(gate.bias[k]) * 2 ** GATE_BITS))
            out.append(FixedLayer({k2: torch.as_tensor(v2, dtype=torch.int64) for k2, v2 in p.items()}))
    return FixedHead(out, class_t, patches, intops.softmax_params(2.0 ** -Z_BITS))
