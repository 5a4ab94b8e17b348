"""Integer-only kernels: the numeric contract shared by the golden model, the RTL and the head.

Every kernel takes and returns int64 torch tensors that hold the values of the narrower
types named below. Nothing here uses floating point on activations; float appears only in
the ``*_params`` helpers that turn real scales into integer constants at quantization time.

The contract, stated once:

* **GEMM**: int8 x int8 products summed in an int32 accumulator (plus an int32 bias).
  An accumulator outside int32 *saturates* to the int32 range and is counted in
  ``OverflowCounter`` (the RTL saturates the same way; it never wraps silently).
* **Requantize** (``requantize``): ``y = sat8((acc * M + 2**(s-1)) >> s)`` with ``M`` an
  int32 in [0, 2**31) and ``s`` in [1, 62]; ``>>`` is an arithmetic shift (floor), so the
  rounding rule is *round half up* (towards +inf), applied exactly once. ``sat8`` clamps
  to [-128, 127] and counts the clamped values.
* **Softmax**: I-BERT's i-exp (polynomial on [-ln2, 0] and a shift) on max-subtracted scores
  brought to a fixed resolution by a shift and clamped where exp is 0, then a per-row
  reciprocal ``floor(2**RECIP_BITS / sum)`` and ``(e * r) >> (RECIP_BITS - 7)`` rounded
  half up: probabilities are int8 at scale 2**-7 (0..127; 128 saturates to 127).
* **GELU**: I-BERT's i-GELU (second-order polynomial for erf) on an int8 input, with the
  result requantized to int8.
* **LayerNorm**: integer mean and variance in one pass, a digit-recurrence integer square
  root (exact floor), one reciprocal per row, then gamma/beta folded into integer constants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from model.errors import QexitError

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
MULT_BITS = 31          # requantization multiplier M lies in [0, 2**31)
SHIFT_MIN, SHIFT_MAX = 1, 62
PROB_BITS = 7           # softmax output: int8 at scale 2**-PROB_BITS
RECIP_BITS = 32         # per-row reciprocal precision of softmax (LayerNorm: LN_RECIP_BITS)
LN_FRAC_BITS = 12       # fixed-point fraction of the normalised LayerNorm value
LN_SQRT_BITS = 8        # extra fraction bits of the LayerNorm square root (small variances)
LN_RECIP_BITS = 40      # LayerNorm per-row reciprocal precision
GAMMA_BITS = 15         # LayerNorm gamma/s_out multipliers are kept to 15 bits plus sign


@dataclass
class OverflowCounter:
    """Counts values that left their declared range (and were saturated) at each named point."""
    counts: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n_over: int, n_total: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n_over)
        self.totals[name] = self.totals.get(name, 0) + int(n_total)

    @property
    def total_overflows(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict[str, float]:
        """Fraction saturated per point."""
        return {k: self.counts[k] / max(1, self.totals[k]) for k in self.counts}


def _check_int(x: torch.Tensor, name: str) -> None:
    if x.dtype != torch.int64:
        raise QexitError(f"{name} must be an int64 tensor of integer values, got {x.dtype}")


def saturate(x: torch.Tensor, lo: int, hi: int, counter: OverflowCounter | None = None,
             name: str = "") -> torch.Tensor:
    if x.numel() == 0:
        return x.clamp(lo, hi)
    low, high = torch.aminmax(x)
    if low >= lo and high <= hi:                     # nothing to clamp (the common case): one pass
        if counter is not None:
            counter.add(name, 0, x.numel())
        return x
    out = x.clamp(lo, hi)
    if counter is not None:
        counter.add(name, (out != x).count_nonzero().item(), x.numel())
    return out


BITS = (2, 8)           # the narrowest and widest value a mixed-precision IntModel may declare


def int_range(bits: int) -> tuple[int, int]:
    """The two's-complement range of a ``bits``-wide value held in an int8 container."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def check_range(x: torch.Tensor, bits: int, name: str) -> None:
    """Raise if ``x`` holds values outside its declared ``bits``-wide range."""
    lo, hi = int_range(bits)
    if x.numel() and (x.min() < lo or x.max() > hi):
        raise QexitError(f"{name} holds values outside its declared {bits}-bit range [{lo}, {hi}] "
                         f"(min {x.min().item()}, max {x.max().item()}); the IntModel is corrupt")


def check_int8(x: torch.Tensor, name: str) -> None:
    """Raise if ``x`` is not an int64 tensor holding int8 values."""
    _check_int(x, name)
    if x.numel() and (x.min() < INT8_MIN or x.max() > INT8_MAX):
        raise QexitError(f"{name} holds values outside int8 [{INT8_MIN}, {INT8_MAX}] "
                         f"(min {x.min().item()}, max {x.max().item()})")


_BLAS = [True]


class integer_only:
    """``with intops.integer_only():`` computes every product sum on int64 tensors (the
    definition), instead of on exact float BLAS (``int_matmul``), and every square root by the
    digit recurrence instead of from the exact float root (``isqrt``)."""

    def __enter__(self):
        self.was, _BLAS[0] = _BLAS[0], False

    def __exit__(self, *exc):
        _BLAS[0] = self.was


def int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of int64 tensors holding int8 values, as int64: exactly what int64 arithmetic
    gives. int64 matmul has no BLAS, so the sum runs on float BLAS where that is exact: every
    product is an integer of magnitude <= 2**14, so every partial sum of K of them, in any
    order, is an integer below K * 2**14, exactly representable in float32 while
    K * 2**14 <= 2**24 (K <= 1024) and in float64 while K * 2**14 <= 2**53. float32 is used
    only at full precision (``torch.get_float32_matmul_precision() == "highest"``, no TF32 or
    bf16 shortcuts). Operands outside int8 take the int64 path."""
    k = a.shape[-1]
    if not _BLAS[0] or a.numel() == 0 or b.numel() == 0:
        return a @ b
    (alo, ahi), (blo, bhi) = torch.aminmax(a), torch.aminmax(b)
    if alo < INT8_MIN or ahi > INT8_MAX or blo < INT8_MIN or bhi > INT8_MAX:
        return a @ b
    if k * 2 ** 14 <= 2 ** 24 and torch.get_float32_matmul_precision() == "highest":
        return (a.float() @ b.float()).long()
    if k * 2 ** 14 <= 2 ** 53:
        return (a.double() @ b.double()).long()
    return a @ b


def gemm(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
         counter: OverflowCounter | None = None, name: str = "gemm") -> torch.Tensor:
    """int8 a (..., K) times int8 w (N, K) transposed, plus an int32 bias broadcast over (..., N): int32 (..., N)."""
    if a.shape[-1] != w.shape[-1]:
        raise QexitError(f"{name}: inner dimensions differ ({a.shape[-1]} vs {w.shape[-1]})")
    acc = int_matmul(a, w.t())     # a fresh tensor: the bias is added in place
    if bias is not None:
        acc += bias
    return saturate(acc, INT32_MIN, INT32_MAX, counter, name + ".acc")


def matmul(a: torch.Tensor, b: torch.Tensor, counter: OverflowCounter | None = None,
           name: str = "matmul") -> torch.Tensor:
    """int8 a (..., M, K) times int8 b (..., K, N): int32 (..., M, N) (activation x activation)."""
    return saturate(int_matmul(a, b), INT32_MIN, INT32_MAX, counter, name + ".acc")


# --------------------------------------------------------------------------- requantize

def quantize_multiplier(real: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real positive scale(s) r → (M, s) with r ≈ M / 2**s, M in [2**30, 2**31), s in range.

    Raises when r is too large or too small for the shift range (the IntModel would be wrong).
    """
    r = torch.as_tensor(real, dtype=torch.float64).reshape(-1)
    if (r <= 0).any() or not torch.isfinite(r).all():
        raise QexitError(f"requantization scale must be positive and finite, got {r.min().item()}")
    mant, exp = torch.frexp(r)                       # r = mant * 2**exp, mant in [0.5, 1)
    m = torch.round(mant * 2.0 ** MULT_BITS).to(torch.int64)
    shift = (MULT_BITS - exp).to(torch.int64)
    carry = m == 2 ** MULT_BITS                      # rounding up to 2**31: halve
    m = torch.where(carry, m // 2, m)
    shift = torch.where(carry, shift - 1, shift)
    if (shift < SHIFT_MIN).any() or (shift > SHIFT_MAX).any():
        bad = r[(shift < SHIFT_MIN) | (shift > SHIFT_MAX)][0].item()
        raise QexitError(f"requantization scale {bad:.3g} is outside the representable range "
                         f"2**-{SHIFT_MAX - MULT_BITS}..2**{MULT_BITS - SHIFT_MIN}; check calibration")
    return m, shift


def check_multiplier(m: torch.Tensor, shift: torch.Tensor, name: str) -> None:
    """Raise if a stored (M, s) pair breaks the contract (used when loading an IntModel)."""
    if m.dtype != torch.int64 or shift.dtype != torch.int64:
        raise QexitError(f"{name}: multiplier and shift must be int64 tensors")
    if (m < 0).any() or (m >= 2 ** MULT_BITS).any():
        raise QexitError(f"{name}: multiplier outside [0, 2**{MULT_BITS}); the IntModel is corrupt")
    if (shift < SHIFT_MIN).any() or (shift > SHIFT_MAX).any():
        raise QexitError(f"{name}: shift outside [{SHIFT_MIN}, {SHIFT_MAX}]; the IntModel is corrupt")


def round_shift(x: torch.Tensor, shift: torch.Tensor | int, inplace: bool = False) -> torch.Tensor:
    """``(x + 2**(s-1)) >> s``: divide by 2**s rounding half up. The one rounding rule.

    ``inplace`` reuses ``x`` (a temporary the caller owns): same integers, half the memory traffic."""
    if isinstance(shift, int) or shift.dim() == 0:
        s = int(shift)
        half = 1 << (s - 1)
    else:
        s = shift
        half = 1 << (shift - 1)
    if inplace and (isinstance(s, int) or torch.broadcast_shapes(x.shape, s.shape) == x.shape):
        x.add_(half)
    else:
        x = x + half
    return x.__irshift__(s)


def requantize(acc: torch.Tensor, m: torch.Tensor, shift: torch.Tensor,
               counter: OverflowCounter | None = None, name: str = "requant",
               lo: int = INT8_MIN, hi: int = INT8_MAX) -> torch.Tensor:
    """int32 accumulator → int8: ``sat8((acc * M + 2**(s-1)) >> s)``; M, s per last-dim channel or scalar."""
    return saturate(round_shift(acc * m, shift, inplace=True), lo, hi, counter, name)


def quantize_real(x: torch.Tensor, scale: float | torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Float → integer at ``scale`` (``torch.round``: round half to even, then saturate).

    Calibration-time only: weights and biases are rounded here once, so the tie rule never
    reaches the RTL, which sees the stored integers."""
    hi = 2 ** (bits - 1) - 1
    q = torch.round(x.double() / torch.as_tensor(scale, dtype=torch.float64))
    return q.clamp(-hi - 1, hi).to(torch.int64)


# --------------------------------------------------------------------------- residual add

def add_params(s_a: float, s_b: float, s_out: float) -> dict[str, torch.Tensor]:
    """Constants for ``add``: both inputs scaled to s_out with one shared shift."""
    ma, sa = quantize_multiplier(s_a / s_out)
    mb, sb = quantize_multiplier(s_b / s_out)
    shift = torch.minimum(sa, sb)                   # bring both to the smaller shift
    ma = torch.round(ma.double() / 2.0 ** (sa - shift)).to(torch.int64)
    mb = torch.round(mb.double() / 2.0 ** (sb - shift)).to(torch.int64)
    return {"m_a": ma[0], "m_b": mb[0], "shift": shift[0]}


def add(a: torch.Tensor, b: torch.Tensor, m_a: torch.Tensor, m_b: torch.Tensor, shift: torch.Tensor,
        counter: OverflowCounter | None = None, name: str = "add") -> torch.Tensor:
    """Residual add of two int8 tensors at different scales: ``sat8((a*Ma + b*Mb + half) >> s)``."""
    t = a * m_a
    t += b * m_b
    return saturate(round_shift(t, shift, inplace=True), INT8_MIN, INT8_MAX, counter, name)


# --------------------------------------------------------------------------- integer square root

ISQRT_BITS = 56         # isqrt takes n < 2**56 and gives a root < 2**28, one bit per step


def isqrt(n: torch.Tensor) -> torch.Tensor:
    """Exact floor(sqrt(n)) of int64 values in [0, 2**ISQRT_BITS).

    The hardware runs a digit recurrence, one root bit per step from the top, in the remainder
    form that needs no multiplier (``hw.rtl.layernorm.DigitRoot``, in the LayerNorm unit and the
    exit head); after ISQRT_BITS/2 steps it holds the exact floor. The floor is unique, so this computes it the fast way: the
    float64 root (within 2**-24 of the real one for n < 2**56) truncated, then corrected by one
    in each direction with integer squares (under ``integer_only()``, the recurrence itself).
    ``test_intops`` checks both give the same integers.
    """
    _check_int(n, "isqrt input")
    if n.numel() and (n.min() < 0 or n.max() >= 2 ** ISQRT_BITS):
        raise QexitError(f"isqrt input outside [0, 2**{ISQRT_BITS})")
    if not _BLAS[0]:
        return isqrt_digits(n)
    root = torch.sqrt(n.double()).long()
    root -= (root * root > n).long()
    root += ((root + 1) * (root + 1) <= n).long()
    return root


def isqrt_digits(n: torch.Tensor) -> torch.Tensor:
    """``isqrt`` as the hardware computes it: the digit recurrence."""
    root = torch.zeros_like(n)
    for bit in range(ISQRT_BITS // 2 - 1, -1, -1):
        trial = root | (1 << bit)
        root = torch.where(trial * trial <= n, trial, root)
    return root


# --------------------------------------------------------------------------- LayerNorm

LN_MAX_D = 2 ** 12      # row length: |sum x| <= 2**19, sum x**2 <= 2**26, var_num < 2**38
LN_EPS_BITS = 54        # eps < 2**54, so (var_num << 2*LN_SQRT_BITS) + eps < 2**55 < 2**ISQRT_BITS
LN_SHIFT = (1, 40 + LN_FRAC_BITS)   # the output shift of gamma*y + beta (|g| <= 2**15 up to gamma/s_out = 2**26)
LN_B_BITS = 47          # |b| < 2**47 (and |g*y| < 2**15 * 2**20), so g*y + b fits 49 bits


def layernorm_params(gamma: torch.Tensor, beta: torch.Tensor, s_in: float, s_out: float,
                     eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """Constants for ``layernorm``: out = round((gamma*y + beta)/s_out), y = (x-mu)/sqrt(var + eps).

    ``eps`` (in real units, as nn.LayerNorm's) becomes an integer added under the square root.
    y arrives as a fixed-point value with LN_FRAC_BITS fraction bits; gamma/s_out is kept as
    a per-channel multiplier with ``shift`` extra bits, beta/s_out at the combined scale.
    """
    g = gamma.double() / s_out
    gmax = g.abs().max().item()
    shift = max(LN_SHIFT[0] - LN_FRAC_BITS,
                min(LN_SHIFT[1] - LN_FRAC_BITS, GAMMA_BITS - math.ceil(math.log2(max(gmax, 2.0 ** -24)))))
    g_q = torch.round(g * 2.0 ** shift).to(torch.int64)
    b_q = torch.round(beta.double() / s_out * 2.0 ** (shift + LN_FRAC_BITS)).to(torch.int64)
    d = gamma.numel()
    eps_q = round(d * d * eps / s_in ** 2 * 2.0 ** (2 * LN_SQRT_BITS))
    prm = {"g": g_q, "b": b_q, "shift": torch.tensor(shift + LN_FRAC_BITS, dtype=torch.int64),
           "eps": torch.tensor(eps_q, dtype=torch.int64)}
    check_layernorm_params(**prm)
    return prm


def check_layernorm_params(g, b, shift, eps, name: str = "layernorm") -> None:
    """Raise if LayerNorm constants leave the ranges the widths of ``layernorm`` rely on."""
    g, b = torch.as_tensor(g), torch.as_tensor(b)
    checks = (("row length", g.numel(), 1, LN_MAX_D), ("shift", int(shift), *LN_SHIFT),
              ("eps", int(eps), 0, 2 ** LN_EPS_BITS - 1),
              ("g", int(g.abs().max()) if g.numel() else 0, 0, 2 ** GAMMA_BITS),
              ("|b|", int(b.abs().max()) if b.numel() else 0, 0, 2 ** LN_B_BITS - 1))
    for key, v, lo, hi in checks:
        if not lo <= v <= hi:
            raise QexitError(f"{name}: {key} = {v} is outside [{lo}, {hi}]; the IntModel is corrupt "
                             f"or the LayerNorm scales are extreme (re-run `qexit quantize`)")


def layernorm(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, shift: torch.Tensor, eps: torch.Tensor,
              counter: OverflowCounter | None = None, name: str = "layernorm",
              lo: int = INT8_MIN, hi: int = INT8_MAX) -> torch.Tensor:
    """Integer LayerNorm over the last dim (D <= LN_MAX_D) of an int8 tensor, output int8.

    One pass over the row gives S = sum(x) in [-2**19, 2**19) (20 bits signed) and
    Q = sum(x**2) <= 2**26 (27 bits);
    var_num = D*Q - S**2 in [0, 2**38) (= sum(c**2) / D exactly, c_i = D*x_i - S);
    den = isqrt((var_num << 2*LN_SQRT_BITS) + eps) < 2**28 (= D*sqrt(var + eps)*2**LN_SQRT_BITS);
    r = floor(2**LN_RECIP_BITS / max(den, 1)) <= 2**40, once per row;
    c_i = D*x_i - S, |c_i| < 2**20;
    y_i = round_shift(c_i * r, LN_RECIP_BITS - LN_SQRT_BITS - LN_FRAC_BITS), |y_i| < 2**20
    (= (x_i - mean)/sigma with LN_FRAC_BITS fraction bits, and |z-score| <= sqrt(D));
    out = sat8(round_shift(g*y + b, shift)), |g| <= 2**15, |b| < 2**47, g*y + b < 2**49.
    A row with zero variance has y = 0, so its output is the quantized beta.
    """
    d = x.shape[-1]
    if d > LN_MAX_D:
        raise QexitError(f"{name}: rows of {d} values exceed {LN_MAX_D}")
    s = x.sum(-1, keepdim=True)
    var_num = d * (x * x).sum(-1, keepdim=True) - s * s
    den = isqrt((var_num << (2 * LN_SQRT_BITS)) + eps)
    r = (1 << LN_RECIP_BITS) // den.clamp(min=1)
    y = x * d                                        # c = D*x - S, then c*r, in place
    y -= s
    y *= r
    y = round_shift(y, LN_RECIP_BITS - LN_SQRT_BITS - LN_FRAC_BITS, inplace=True)
    y *= g                                           # g*y + b
    y += b
    return saturate(round_shift(y, shift, inplace=True), lo, hi, counter, name)


# --------------------------------------------------------------------------- softmax (I-BERT i-exp)

EXP_A, EXP_B, EXP_C = 0.3585, 1.353, 0.344     # exp(p) ≈ A (p + B)**2 + C on p in [-ln2, 0]
EXP_MAX_SHIFT = 30      # z = (-x) // x0 stops here: x is clamped to [-30*x0, 0], where e = 0
EXP_QB_BITS = 7.5       # ``pre`` brings the score scale s to EXP_B / 2**7.5 within a factor sqrt(2)
# Ranges of the i-exp constants (what ``softmax_params`` can give for any s_in, and what an
# IntModel is checked against). With s in [EXP_B/2**8, EXP_B/2**7]: x0 = floor(ln2/s) in
# [65, 131], qb = floor(EXP_B/s) in [128, 256], qc = floor(EXP_C/(EXP_A s**2)) in [8588, 34352].
SOFTMAX_PRE = (-31, 31)             # the pre-shift of the scores (right when >= 0)
SOFTMAX_X0 = (64, 132)
SOFTMAX_QB = (128, 256)
SOFTMAX_QC = (8192, 2 ** 16 - 1)
EXP_BITS = 17           # 0 <= e <= qb**2 + qc < 2**16 + 2**16 = 2**17
SOFTMAX_MAX_ROW = 2 ** 14           # row length: sum(e) < 2**14 * 2**17 = 2**31


def softmax_params(s_in: float) -> dict[str, torch.Tensor]:
    """Integer constants of i-exp for an input scale ``s_in`` (score units per integer step).

    The input is first brought to a fixed resolution by a shift ``pre`` (right when the scale is
    fine, left when it is coarse), so the constants have fixed ranges whatever the calibration
    gave (``SOFTMAX_X0``, ``SOFTMAX_QB``, ``SOFTMAX_QC``) and so does every intermediate.
    """
    if not (s_in > 0 and math.isfinite(s_in)):
        raise QexitError(f"softmax input scale must be positive and finite, got {s_in}")
    pre = round(math.log2(EXP_B / 2 ** EXP_QB_BITS / s_in))
    if not SOFTMAX_PRE[0] <= pre <= SOFTMAX_PRE[1]:
        raise QexitError(f"softmax input scale {s_in:.3g} needs a pre-shift of {pre}, outside "
                         f"{list(SOFTMAX_PRE)}; check calibration")
    s = s_in * 2 ** pre
    prm = {"pre": pre, "x0": math.floor(math.log(2) / s), "qb": math.floor(EXP_B / s),
           "qc": math.floor(EXP_C / (EXP_A * s ** 2))}
    check_softmax_params(**prm)
    return {k: torch.tensor(v, dtype=torch.int64) for k, v in prm.items()}


def check_softmax_params(pre, x0, qb, qc, name: str = "softmax") -> None:
    """Raise if i-exp constants leave the ranges the widths below are derived from."""
    for key, v, (lo, hi) in (("pre", pre, SOFTMAX_PRE), ("x0", x0, SOFTMAX_X0), ("qb", qb, SOFTMAX_QB),
                             ("qc", qc, SOFTMAX_QC)):
        v = int(v)
        if not lo <= v <= hi:
            raise QexitError(f"{name}: {key} = {v} is outside [{lo}, {hi}]; the IntModel is corrupt")
    if int(qb) <= int(x0):
        raise QexitError(f"{name}: qb = {int(qb)} must exceed x0 = {int(x0)}; the IntModel is corrupt")


def exp_floor(pre: int, x0: int) -> tuple[int, int]:
    """(d_min, x_min): the clamp of the max-subtracted score d before the pre-shift, and of x after.

    x = max(shift(max(d, d_min), pre), x_min) with x_min = -EXP_MAX_SHIFT*x0 equals the unbounded
    max(shift(d, pre), x_min): d_min only keeps the shifter's input narrow (|d_min| < 2**43).
    """
    x_min = -EXP_MAX_SHIFT * x0
    d_min = x_min << pre if pre >= 0 else -((-x_min) >> -pre) - 1
    return d_min, x_min


def i_exp(x: torch.Tensor, x0: torch.Tensor, qb: torch.Tensor, qc: torch.Tensor) -> torch.Tensor:
    """exp of x in [-30*x0, 0] (integer at scale s), up to a constant scale: ((p + qb)**2 + qc) >> z.

    z = (-x) // x0 in [0, 30], p = x + z*x0 in (-x0, 0], p + qb in [1, 256]:
    0 <= e <= qb**2 + qc < 2**EXP_BITS (17 bits); e = 0 at x = -30*x0 since qb**2 + qc < 2**30.
    """
    z = (-x) // x0
    p = x + z * x0
    return ((p + qb) ** 2 + qc) >> z


def softmax(scores: torch.Tensor, pre: torch.Tensor, x0: torch.Tensor, qb: torch.Tensor, qc: torch.Tensor,
            counter: OverflowCounter | None = None, name: str = "softmax", prob_bits: int = PROB_BITS) -> torch.Tensor:
    """Integer softmax over the last dim: int32 scores → int8 probabilities at scale 2**-7
    (``prob_bits`` = 7, the attention's; the exit gate reads 15-bit ones, at 2**-15 in
    [0, 2**15 - 1], from the same e and r with a shorter final shift).

    Widths: d = scores - rowmax in [-(2**32 - 1), 0] (33 bits);
    x = max(shift(max(d, d_min), pre), -30*x0) in [-3960, 0] (13 bits; ``exp_floor``),
    shift = ``>> pre`` (floor), or ``<< -pre`` when pre < 0;
    e = i_exp(x) in [0, 2**17); sum(e) in [qb**2 + qc, 2**31) for rows up to 2**14
    (the row maximum contributes e >= 128**2 + 8192 > 2**14);
    r = floor(2**RECIP_BITS / sum) <= 2**18; e * r <= 2**32;
    p = round_shift(e * r, RECIP_BITS - PROB_BITS) in [0, 128], saturated to [0, 127].
    """
    if scores.shape[-1] > SOFTMAX_MAX_ROW:
        raise QexitError(f"{name}: rows of {scores.shape[-1]} scores exceed {SOFTMAX_MAX_ROW}")
    pre, x0 = int(pre), int(x0)
    d_min, x_min = exp_floor(pre, x0)
    x = scores - scores.max(-1, keepdim=True).values          # d; then x, in place
    x.clamp_(min=d_min)
    if pre >= 0:
        x >>= pre
    else:
        x <<= -pre
    x.clamp_(min=x_min)
    table = i_exp(torch.arange(x_min, 1, dtype=torch.int64), x0, qb, qc)    # x in [x_min, 0]
    e = torch.take(table, x.sub_(x_min).long())
    e *= (1 << RECIP_BITS) // e.sum(-1, keepdim=True)                      # e * r
    return saturate(round_shift(e, RECIP_BITS - prob_bits, inplace=True), 0, 2 ** prob_bits - 1, counter, name)


# --------------------------------------------------------------------------- GELU (I-BERT i-GELU)

ERF_A, ERF_B = -0.2888, -1.769                 # erf(x) ≈ sgn(x) [A (min(|x|, -B) + B)**2 + 1]


GELU_QB = (-2 ** 12, -1)       # qb = floor(ERF_B / s_erf): the erf polynomial's clip point
GELU_QC = (0, 2 ** 23 - 1)      # qc: the "+1" at the polynomial's scale; 256 * qc < 2**31


def gelu_params(s_in: float, s_out: float) -> dict[str, torch.Tensor]:
    """Constants of i-GELU on an int8 input at scale ``s_in``, output int8 at ``s_out``."""
    s_erf = s_in / math.sqrt(2.0)
    qb = math.floor(ERF_B / s_erf)
    qc = math.floor(-1.0 / ERF_A / s_erf ** 2)   # the "+1" at the polynomial's scale (A*s_erf**2 < 0)
    s_poly = -ERF_A * s_erf ** 2                  # erf ≈ sgn * (-(t + qb)**2 + qc) * s_poly
    if qc > GELU_QC[1]:
        raise QexitError(f"GELU input scale {s_in:.3g} is too fine for i-GELU's int32 product "
                         f"(qc = {qc} > 2**23 - 1; needs s_in > ~1e-3); check calibration")
    m, shift = quantize_multiplier(s_in * s_poly / 2.0 / s_out)
    prm = {"qb": torch.tensor(qb), "qc": torch.tensor(qc), "m": m[0], "shift": shift[0]}
    check_gelu_params(**prm)
    return prm


def check_gelu_params(qb, qc, m, shift, name: str = "gelu") -> None:
    """Raise if i-GELU constants leave the ranges the widths of ``gelu`` rely on."""
    for key, v, (lo, hi) in (("qb", int(qb), GELU_QB), ("qc", int(qc), GELU_QC)):
        if not lo <= v <= hi:
            raise QexitError(f"{name}: {key} = {v} is outside [{lo}, {hi}]; the IntModel is corrupt")
    check_multiplier(torch.as_tensor(m).reshape(1), torch.as_tensor(shift).reshape(1), name)


def gelu(x: torch.Tensor, qb: torch.Tensor, qc: torch.Tensor, m: torch.Tensor, shift: torch.Tensor,
         counter: OverflowCounter | None = None, name: str = "gelu", lo: int = INT8_MIN,
         hi: int = INT8_MAX) -> torch.Tensor:
    """i-GELU: x * (erf_int(x) + one) requantized to int8. x is int8 at scale s_in.

    t = min(|x|, -qb) in [0, 128]; (t + qb)**2 <= qb**2 < 2**24; erf in [-qc, qc];
    x * (erf + qc) in (-2**31, 2**31) (an int32, as every requantize input), then
    ``requantize`` (62-bit product). Int8 in, int8 out: the RTL may hold it as a 256-entry table.
    """
    if x.numel() and INT8_MIN <= x.min() and x.max() <= INT8_MAX:
        # an int8 input has 256 values: compute each once, then look them up (same integers)
        v = torch.arange(INT8_MIN, INT8_MAX + 1, dtype=torch.int64)
        return _lookup(round_shift(_gelu_product(v, qb, qc) * m, shift), x, counter, name, lo, hi)
    return requantize(_gelu_product(x, qb, qc), m, shift, counter, name, lo, hi)


# --------------------------------------------------------------------------- a table on int8 input

TABLE_SIZE = INT8_MAX - INT8_MIN + 1    # one entry per int8 input value

def table_params(fn, s_in: float, s_out: float) -> dict[str, torch.Tensor]:
    """An elementwise function of an int8 input at ``s_in`` as a TABLE_SIZE-entry table (index x + 128),
    output at ``s_out``: ``round(fn(x s_in) / s_out)``, before saturation, limited to int32. For
    activations without an integer formula here (CLIP's quick_gelu, x·σ(1.702x)); the table is
    made once, at quantization time, and is what a hardware unit would hold in a ROM."""
    x = torch.arange(INT8_MIN, INT8_MAX + 1, dtype=torch.float64) * s_in
    with torch.no_grad():
        y = torch.round(fn(x) / s_out)
    return {"table": y.clamp(INT32_MIN, INT32_MAX).to(torch.int64)}


def check_table(table: torch.Tensor, name: str = "table") -> None:
    if (tuple(table.shape) != (TABLE_SIZE,) or table.dtype != torch.int64 or table.min() < INT32_MIN
            or table.max() > INT32_MAX):
        raise QexitError(f"{name}: the table must be {TABLE_SIZE} int64 values within int32; the IntModel is corrupt")


def table_lookup(x: torch.Tensor, table: torch.Tensor, counter: OverflowCounter | None = None,
                 name: str = "table", lo: int = INT8_MIN, hi: int = INT8_MAX) -> torch.Tensor:
    """``sat8(table[x + 128])`` for an int8 tensor ``x`` (the saturations counted, as ``gelu``'s)."""
    check_int8(x, f"{name} input")
    return _lookup(table, x, counter, name, lo, hi)


def _lookup(table: torch.Tensor, x: torch.Tensor, counter: OverflowCounter | None, name: str,
            lo: int = INT8_MIN, hi: int = INT8_MAX) -> torch.Tensor:
    """``sat8(table[x + 128])``, x known to be int8: the lookup of ``table_lookup`` and of ``gelu``."""
    return saturate(torch.take(table, x - INT8_MIN), lo, hi, counter, name)


def _gelu_product(x: torch.Tensor, qb, qc) -> torch.Tensor:
    t = torch.minimum(x.abs(), -qb)
    erf = torch.sign(x) * (qc - (t + qb) ** 2)       # erf(x/sqrt2) / s_poly
    return x * (erf + qc)
