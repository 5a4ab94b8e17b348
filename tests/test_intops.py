"""Integer kernels: exactness where exact, error bounds against float, extremes via hypothesis."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from model import intops
from model.errors import QexitError

int8s = st.integers(-128, 127)
FAST = settings(max_examples=60, deadline=None)


def rows(min_size=2, max_size=64):
    return st.lists(int8s, min_size=min_size, max_size=max_size).map(lambda v: torch.tensor([v]))


# ---------------------------------------------------------------- gemm and requantize

def test_gemm_matches_exact_sum_and_saturates():
    a = torch.full((2, 4), -128)
    w = torch.full((3, 4), -128)
    acc = intops.gemm(a, w, torch.tensor([1, 2, 3]))
    assert acc.tolist() == [[65537, 65538, 65539]] * 2
    c = intops.OverflowCounter()
    big = intops.gemm(torch.full((1, 200_000), 127), torch.full((1, 200_000), 127), counter=c)
    assert big.item() == intops.INT32_MAX and c.total_overflows == 1


@FAST
@given(st.integers(intops.INT32_MIN, intops.INT32_MAX), st.floats(1e-6, 100.0))
def test_requantize_rounds_half_up_once(acc, real):
    m, s = intops.quantize_multiplier(real)
    got = intops.requantize(torch.tensor([acc]), m, s).item()
    exact = acc * m.item() / 2 ** s.item()          # the rational value the hardware sees
    want = max(-128, min(127, math.floor(exact + 0.5)))
    assert got == want


def test_requantize_half_cases_go_up():
    m, s = torch.tensor([1 << 30]), torch.tensor([31])  # multiply by 0.5
    out = intops.requantize(torch.tensor([1, 3, -1, -3, 255, 256, 300]), m, s)
    assert out.tolist() == [1, 2, 0, -1, 127, 127, 127]


def test_quantize_multiplier_accuracy_and_range():
    r = torch.logspace(-8, 4, 200, dtype=torch.float64)
    m, s = intops.quantize_multiplier(r)
    assert ((m >= 2 ** 30) & (m < 2 ** 31)).all()
    assert ((m.double() / 2.0 ** s - r).abs() / r).max() < 2 ** -30
    with pytest.raises(QexitError, match="outside the representable range"):
        intops.quantize_multiplier(1e-15)
    with pytest.raises(QexitError, match="positive"):
        intops.quantize_multiplier(-1.0)


def test_check_multiplier_rejects_out_of_range():
    with pytest.raises(QexitError, match="multiplier outside"):
        intops.check_multiplier(torch.tensor([2 ** 31]), torch.tensor([5]), "x")
    with pytest.raises(QexitError, match="shift outside"):
        intops.check_multiplier(torch.tensor([5]), torch.tensor([63]), "x")


def test_add_aligns_scales():
    p = intops.add_params(0.1, 0.02, 0.05)
    a = torch.arange(-128, 128)
    b = torch.flip(a, [0])
    got = intops.add(a, b, **p)
    want = torch.round((a * 0.1 + b * 0.02) / 0.05).clamp(-128, 127)
    assert (got - want).abs().max() <= 1


# ---------------------------------------------------------------- isqrt

@FAST
@given(st.lists(st.integers(0, 2 ** intops.ISQRT_BITS - 1), min_size=1, max_size=50))
def test_isqrt_is_exact_floor(values):
    want = [math.isqrt(v) for v in values]
    assert intops.isqrt(torch.tensor(values)).tolist() == want
    assert intops.isqrt_digits(torch.tensor(values)).tolist() == want


def test_isqrt_at_perfect_squares():
    """Where the float root is most likely off by one: k**2 - 1, k**2, k**2 + 1 for k up to 2**28."""
    k = torch.cat([torch.arange(0, 5000), torch.randint(0, 2 ** 28, (20000,), generator=torch.Generator().manual_seed(0)),
                   torch.arange(2 ** 28 - 5000, 2 ** 28)])
    n = torch.stack([k * k - 1, k * k, k * k + 1]).flatten().clamp(0, 2 ** intops.ISQRT_BITS - 1)
    assert torch.equal(intops.isqrt(n), intops.isqrt_digits(n))
    assert intops.isqrt(n[::997]).tolist() == [math.isqrt(int(v)) for v in n[::997]]


def test_isqrt_edges():
    top = 2 ** intops.ISQRT_BITS - 1
    v = [0, 1, 2, 3, 4, 15, 16, 17, top, top - 1, (2 ** 28 - 1) ** 2, (2 ** 28 - 1) ** 2 - 1, (2 ** 27) ** 2]
    assert intops.isqrt(torch.tensor(v)).tolist() == [math.isqrt(x) for x in v]
    for bad in (-1, top + 1):
        with pytest.raises(QexitError, match="isqrt input"):
            intops.isqrt(torch.tensor([bad]))


def _layernorm_two_pass(x, g, b, shift, eps):
    """The earlier two-pass definition: sum(c**2) over D, with c_i = D*x_i - sum(x)."""
    d = x.shape[-1]
    c = d * x - x.sum(-1, keepdim=True)
    den = torch.tensor([[math.isqrt(((int(v) << 16) // d) + int(eps))] for v in (c * c).sum(-1)])
    r = (1 << intops.LN_RECIP_BITS) // den.clamp(min=1)
    y = intops.round_shift(c * r, intops.LN_RECIP_BITS - intops.LN_SQRT_BITS - intops.LN_FRAC_BITS)
    return intops.round_shift(g * y + b, shift).clamp(-128, 127)


def test_layernorm_one_pass_equals_two_pass_and_stays_in_its_widths():
    g = torch.Generator().manual_seed(3)
    for d in (2, 7, 64, 768, intops.LN_MAX_D):
        x = torch.randint(-128, 128, (40, d), generator=g)
        x[0], x[1], x[2] = -128, 127, 0                               # zero variance
        x[3] = torch.where(torch.arange(d) % 2 == 0, -128, 127)       # the largest variance
        x[4] = 0
        x[4, 0] = 127                                                 # the largest |z-score|
        gamma, beta = torch.rand(d, generator=g) + 0.5, torch.randn(d, generator=g)
        p = intops.layernorm_params(gamma, beta, 0.05, 0.02)
        assert torch.equal(intops.layernorm(x, **p), _layernorm_two_pass(x, **p))
        s, q = x.sum(-1), (x * x).sum(-1)
        var_num = d * q - s * s
        assert -2 ** 19 <= s.min() and s.max() < 2 ** 19 and q.max() <= 2 ** 26 and var_num.min() >= 0 and var_num.max() < 2 ** 38
        den = intops.isqrt((var_num << 16) + p["eps"]).clamp(min=1)
        y = intops.round_shift((d * x - s[:, None]) * ((1 << 40) // den[:, None]), 20)
        assert y.abs().max() < 2 ** 20 and (p["g"][None] * y + p["b"]).abs().max() < 2 ** 49
    with pytest.raises(QexitError, match="exceed"):
        intops.layernorm(torch.zeros(1, intops.LN_MAX_D + 1, dtype=torch.int64), **p)


def test_layernorm_and_gelu_constants_are_range_checked():
    p = intops.layernorm_params(torch.ones(8), torch.zeros(8), 0.05, 0.02)
    with pytest.raises(QexitError, match="eps"):
        intops.check_layernorm_params(**dict(p, eps=torch.tensor(2 ** 60)))
    with pytest.raises(QexitError, match="g ="):
        intops.check_layernorm_params(**dict(p, g=p["g"] * 2 ** 10))
    with pytest.raises(QexitError, match="too fine"):
        intops.gelu_params(1e-5, 0.01)
    q = intops.gelu_params(0.05, 0.02)
    with pytest.raises(QexitError, match="qb"):
        intops.check_gelu_params(**dict(q, qb=torch.tensor(5)))


# ---------------------------------------------------------------- LayerNorm

def _ln_case(x_q, s_in, gamma, beta):
    ref = F.layer_norm(x_q.double() * s_in, (x_q.shape[-1],), gamma.double(), beta.double())
    s_out = max(ref.abs().max().item(), 1e-3) / 127
    out = intops.layernorm(x_q, **intops.layernorm_params(gamma, beta, s_in, s_out))
    return out, ref / s_out


def test_layernorm_error_bound_against_float():
    torch.manual_seed(0)
    x = torch.randint(-128, 128, (64, 50, 64))
    out, ref = _ln_case(x, 0.05, torch.rand(64) + 0.5, torch.randn(64) * 0.2)
    assert (out.double() - ref).abs().max() <= 1.0  # within one output LSB


@FAST
@given(rows(), st.floats(0.1, 4.0), st.floats(-1.0, 1.0))
def test_layernorm_extremes(x, gamma, beta):
    d = x.shape[-1]
    out, ref = _ln_case(x, 0.02, torch.full((d,), gamma), torch.full((d,), beta))
    assert out.min() >= -128 and out.max() <= 127
    assert (out.double() - ref.clamp(-128, 127)).abs().max() <= 1.0


def test_layernorm_zero_variance_gives_beta():
    d = 32
    beta = torch.linspace(-1, 1, d)
    p = intops.layernorm_params(torch.ones(d), beta, 0.05, 1 / 127)
    for v in (-128, 0, 127):
        out = intops.layernorm(torch.full((3, d), v), **p)
        assert torch.equal(out[0], torch.round(beta * 127).to(torch.int64))


# ---------------------------------------------------------------- softmax

@pytest.mark.parametrize("s_in", [1e-5, 3e-4, 0.01, 0.2])
def test_softmax_error_bound_against_float(s_in):
    torch.manual_seed(1)
    scores = torch.round(torch.randn(200, 50) * 3 / s_in).to(torch.int64)
    p = intops.softmax(scores, **intops.softmax_params(s_in))
    ref = torch.softmax(scores.double() * s_in, -1)
    assert (p.double() / 128 - ref).abs().max() < 0.012  # 1.5 LSB of 2**-7
    assert (p.sum(-1) - 128).abs().max() <= 26            # rows sum to ~1


@FAST
@given(st.lists(st.integers(-(2 ** 24), 2 ** 24), min_size=1, max_size=64))
def test_softmax_extremes(v):
    scores = torch.tensor([v])
    p = intops.softmax(scores, **intops.softmax_params(1e-3))
    assert p.min() >= 0 and p.max() <= 127
    assert p[0, scores.argmax()].item() == p.max().item()


def test_softmax_all_equal_row_is_uniform():
    p = intops.softmax(torch.full((1, 16), 12345), **intops.softmax_params(1e-3))
    assert (p == 8).all()


SCALES = [10.0 ** e for e in torch.linspace(-9, 4, 61).tolist()]


def _softmax_spec(row: list[int], pre: int, x0: int, qb: int, qc: int) -> list[int]:
    """The softmax contract on Python integers (no width limits, no clamp before the shift)."""
    top = max(row)
    xs = [max((v - top) >> pre if pre >= 0 else (v - top) << -pre, -intops.EXP_MAX_SHIFT * x0) for v in row]
    es = []
    for x in xs:
        z = (-x) // x0
        es.append(((x + z * x0 + qb) ** 2 + qc) >> z)
    r = (1 << intops.RECIP_BITS) // sum(es)
    return [min(127, (e * r + (1 << 24)) >> 25) for e in es]


def test_softmax_params_stay_in_their_stated_ranges():
    for s_in in SCALES + [1.0 / 2 ** 37, 2.0 ** 20]:
        p = intops.softmax_params(s_in)                   # raises if outside the ranges
        assert p["qb"] ** 2 + p["qc"] < 2 ** intops.EXP_BITS
    with pytest.raises(QexitError, match="pre-shift"):
        intops.softmax_params(1e-12)
    with pytest.raises(QexitError, match="x0"):
        intops.check_softmax_params(pre=0, x0=500, qb=169, qc=14993)


@pytest.mark.parametrize("s_in", SCALES[::4])
def test_i_exp_bounds_over_its_whole_domain(s_in):
    p = intops.softmax_params(s_in)
    x0 = int(p["x0"])
    x = torch.arange(-intops.EXP_MAX_SHIFT * x0, 1)        # every x the clamp lets through
    e = intops.i_exp(x, p["x0"], p["qb"], p["qc"])
    assert e.min() >= 0 and e.max() < 2 ** intops.EXP_BITS
    assert e[0] == 0 and e[-1] == p["qb"] ** 2 + p["qc"]
    assert (e[1:] >= e[:-1]).all()                          # monotone in x


@pytest.mark.parametrize("s_in", [1e-9, 1e-4, 1e-3, 1e-2, 0.3, 50.0])
def test_softmax_over_the_full_int32_range(s_in):
    g = torch.Generator().manual_seed(7)
    rows = torch.randint(intops.INT32_MIN, intops.INT32_MAX + 1, (200, 50), generator=g)
    rows[:, :3] = torch.tensor([intops.INT32_MAX, intops.INT32_MIN, 0])
    near = rows[100:] // (2 ** torch.randint(8, 31, (100, 1), generator=g))   # narrower gaps too
    rows = torch.cat([rows[:100], near, torch.tensor([[intops.INT32_MIN] * 49 + [intops.INT32_MAX]]),
                      torch.full((1, 50), intops.INT32_MIN)])
    p = intops.softmax_params(s_in)
    got = intops.softmax(rows, **p)
    prm = {k: int(v) for k, v in p.items()}
    assert got.tolist() == [_softmax_spec(r, **prm) for r in rows.tolist()]
    assert got.min() >= 0 and got.max() <= 127
    ref = torch.softmax(rows.double() * s_in, -1)
    assert (got.double() / 128 - ref).abs().max() < 0.012


def test_softmax_issue_examples():
    # An int32-extreme row at s_in = 1e-2 used to overflow int64 and give all zeros.
    p = intops.softmax(torch.tensor([[2 ** 31 - 1, -2 ** 31, 0]]), **intops.softmax_params(1e-2))
    assert p.tolist() == [[127, 0, 0]]
    # A gap of 5,000,000 at s_in = 1e-3 (exp(-5000)) used to give i-exp 360 and probability 1.
    p = intops.softmax(torch.tensor([[0, -5_000_000]]), **intops.softmax_params(1e-3))
    assert p.tolist() == [[127, 0]]


def test_softmax_rejects_overlong_rows():
    with pytest.raises(QexitError, match="exceed"):
        intops.softmax(torch.zeros(1, intops.SOFTMAX_MAX_ROW + 1, dtype=torch.int64),
                       **intops.softmax_params(1e-3))


def test_quantize_real_rounds_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, -128.5, -300.0])
    assert intops.quantize_real(x, 1.0).tolist() == [0, 2, 2, 0, -2, 126, 127, -128, -128]


# ---------------------------------------------------------------- GELU

@pytest.mark.parametrize("s_in,s_out", [(0.05, 0.05), (0.01, 0.005), (0.2, 0.1)])
def test_gelu_error_bound_against_float(s_in, s_out):
    x = torch.arange(-128, 128)
    got = intops.gelu(x, **intops.gelu_params(s_in, s_out))
    ref = (F.gelu(x.double() * s_in) / s_out).clamp(-128, 127)
    # i-GELU's polynomial erf is good to about 0.02 in real units, plus one output LSB of rounding
    assert ((got.double() - ref).abs() * s_out).max() <= 0.025 + s_out


@pytest.mark.parametrize("s_in", [1e-3, 0.01, 0.05, 0.5, 4.0])
def test_gelu_product_stays_in_int32(s_in):
    p = intops.gelu_params(s_in, 0.02)
    x = torch.arange(-128, 128)
    t = torch.minimum(x.abs(), -p["qb"])
    prod = x * (torch.sign(x) * (p["qc"] - (t + p["qb"]) ** 2) + p["qc"])
    assert prod.abs().max() < 2 ** 31 and p["qb"] ** 2 < 2 ** 24


def test_gelu_extremes_and_sign():
    p = intops.gelu_params(0.05, 0.05)
    out = intops.gelu(torch.tensor([-128, 0, 127]), **p)
    assert out[1] == 0 and out[0] <= 0 and out[2] == 127


@pytest.mark.parametrize("k", [1, 1024, 1025, 4096])
def test_int_matmul_is_exact_at_the_float_bounds(k):
    """The largest sums each float path takes (all -128 x -128, and random) equal int64."""
    g = torch.Generator().manual_seed(k)
    for a, b in ((torch.full((3, k), -128), torch.full((k, 5), -128)),
                 (torch.full((3, k), 127), torch.full((k, 5), -128)),
                 (torch.randint(-128, 128, (7, k), generator=g), torch.randint(-128, 128, (k, 9), generator=g))):
        got = intops.int_matmul(a, b)
        assert got.dtype == torch.int64 and torch.equal(got, a @ b)
    assert intops.int_matmul(torch.full((1, k), -128), torch.full((k, 1), -128)).item() == k * 2 ** 14


def test_int_matmul_falls_back_to_int64():
    """Operands outside int8, and float32 below full precision, do not take the float32 path."""
    a = torch.tensor([[2 ** 40, 1]])
    b = torch.tensor([[3], [2 ** 20]])
    assert torch.equal(intops.int_matmul(a, b), a @ b)
    was = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        x = torch.randint(-128, 128, (4, 1000))
        assert torch.equal(intops.int_matmul(x, x.t()), x @ x.t())
    finally:
        torch.set_float32_matmul_precision(was)


def test_gelu_table_equals_the_formula():
    """gelu looks int8 inputs up in a 256-entry table built with the same formula; the overflow
    count is the formula's."""
    prm = intops.gelu_params(0.05, 0.01)
    x = torch.arange(-128, 128).repeat(3)
    c1, c2 = intops.OverflowCounter(), intops.OverflowCounter()
    got = intops.gelu(x, **prm, counter=c1)
    want = intops.requantize(intops._gelu_product(x, prm["qb"], prm["qc"]), prm["m"], prm["shift"], c2, "gelu")
    assert torch.equal(got, want) and c1.counts == c2.counts and c1.counts["gelu"] > 0
