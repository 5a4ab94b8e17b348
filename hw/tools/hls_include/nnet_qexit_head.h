// The integer steps of qexit's exit head that hls4ml has no layer for, as hls4ml extension
// layers (registered by hw/head_hls.py). Each function is the C++ of one stage of
// model/exits/fixed.py (FixedHead), with the same integers, the same rounding rule
// (round_shift: (x + 2**(s-1)) >> s, half up) and the same saturations; every width is the
// one stated in model/intops.py. Loops have constant trip counts, so HLS can unroll or
// pipeline them; arithmetic is on long long (64-bit) where the widths need more than 32 bits.
#ifndef NNET_QEXIT_HEAD_H_
#define NNET_QEXIT_HEAD_H_

#include "nnet_common.h"

namespace nnet {

static inline long long qx_round_shift(long long x, int s) { return (x + (1LL << (s - 1))) >> s; }

static inline long long qx_sat(long long x, long long lo, long long hi) { return x < lo ? lo : (x > hi ? hi : x); }

// isqrt of n in [0, 2**56): one root bit per step, from the top (intops.isqrt).
static inline long long qx_isqrt(long long n) {
    long long root = 0;
    for (int bit = 27; bit >= 0; bit--) {
        long long trial = root | (1LL << bit);
        if (trial * trial <= n) root = trial;
    }
    return root;
}

// ---------------------------------------------------------------- token sums
// x: tokens x width int8 ([CLS] first). out[i] = S_i = sum_{p>=1} x[p][i] (i < width);
// out[width] = V = sum_i (P * sum_p x[p][i]**2 - S_i**2), P = tokens - 1.
struct qx_token_sums_config {
    static const unsigned tokens = 50;
    static const unsigned width = 64;
};

template <class data_T, class res_T, typename CONFIG_T>
void qx_token_sums(data_T x[CONFIG_T::tokens * CONFIG_T::width], res_T out[CONFIG_T::width + 1]) {
    const long long P = CONFIG_T::tokens - 1;
    long long v = 0;
    for (unsigned i = 0; i < CONFIG_T::width; i++) {
        long long s = 0, q = 0;
        for (unsigned p = 1; p < CONFIG_T::tokens; p++) {
            long long t = x[p * CONFIG_T::width + i].to_int64();
            s += t;
            q += t * t;
        }
        out[i] = s;
        v += P * q - s * s;
    }
    out[CONFIG_T::width] = v;
}

// ---------------------------------------------------------------- SSA requantize + LayerNorm
// in: the token sums (width + 1 values, the last is V and unused here) -> int8 (width).
// a = sat8(round_shift(S * m_a, sh_a)); then intops.layernorm(a, g, b, shift, eps).
struct qx_ssa_norm_config {
    static const unsigned width = 64;
    static const long long m_a = 1;
    static const int sh_a = 1;
    static const int shift = 13;
    static const long long eps = 0;
};

template <class data_T, class res_T, typename CONFIG_T>
void qx_ssa_norm(data_T in[CONFIG_T::width + 1], res_T out[CONFIG_T::width], typename CONFIG_T::g_t g[CONFIG_T::width],
                 typename CONFIG_T::b_t b[CONFIG_T::width]) {
    const long long D = CONFIG_T::width;
    long long a[CONFIG_T::width];
    long long s = 0, q = 0;
    for (unsigned i = 0; i < CONFIG_T::width; i++) {
        a[i] = qx_sat(qx_round_shift(in[i].to_int64() * CONFIG_T::m_a, CONFIG_T::sh_a), -128, 127);
        s += a[i];
        q += a[i] * a[i];
    }
    long long var_num = D * q - s * s;                                 // [0, 2**38)
    long long den = qx_isqrt((var_num << 16) + CONFIG_T::eps);          // LN_SQRT_BITS = 8
    long long r = (1LL << 40) / (den < 1 ? 1 : den);                   // LN_RECIP_BITS = 40
    for (unsigned i = 0; i < CONFIG_T::width; i++) {
        long long y = qx_round_shift((D * a[i] - s) * r, 40 - 8 - 12);  // LN_FRAC_BITS = 12
        out[i] = qx_sat(qx_round_shift(g[i].to_int64() * y + b[i].to_int64(), CONFIG_T::shift), -128, 127);
    }
}

// ---------------------------------------------------------------- per-channel requantizer
// acc (int32, from a Dense) -> sat8(round_shift(acc * m[c], sh[c])).
struct qx_requant_config {
    static const unsigned n = 64;
};

template <class data_T, class res_T, typename CONFIG_T>
void qx_requant(data_T in[CONFIG_T::n], res_T out[CONFIG_T::n], typename CONFIG_T::m_t m[CONFIG_T::n],
                typename CONFIG_T::sh_t sh[CONFIG_T::n]) {
    for (unsigned c = 0; c < CONFIG_T::n; c++) {
        out[c] = qx_sat(qx_round_shift(in[c].to_int64() * m[c].to_int64(), (int)sh[c].to_int64()), -128, 127);
    }
}

// ---------------------------------------------------------------- the gate
// e: the int8 embedding (embed), d: the int32 class scores (classes), sv: the token sums
// (width + 1, V last). out[c] = d[c] for c < classes, out[classes] = G, the gate's int32
// pre-activation (model/exits/fixed.py steps 6-9):
//   n = sum e**2; r = isqrt(n << 16); inv = 2**40 / max(r, 1); z1 = round_shift(d*inv, 24);
//   z = sat32(round_shift(z1 * m_z, sh_z)); p = softmax(z) at 2**-15 (I-BERT i-exp, one
//   reciprocal); c = p_(1), m = p_(1) - p_(2); sav = min(V >> sav_shift, 2**16 - 1);
//   G = sat32(w_c c + w_m m + w_s sav + bias).
struct qx_gate_config {
    static const unsigned embed = 64;
    static const unsigned classes = 10;
    static const unsigned width = 64;
    static const long long m_z = 1;
    static const int sh_z = 1;
    static const int pre = 0;
    static const long long x0 = 64, qb = 128, qc = 8192;
    static const long long d_min = 0, x_min = 0;     // intops.exp_floor(pre, x0)
    static const int sav_shift = 0;
    static const long long w_c = 0, w_m = 0, w_s = 0, bias = 0;
};

template <class e_T, class d_T, class sv_T, class res_T, typename CONFIG_T>
void qx_gate(e_T e[CONFIG_T::embed], d_T d[CONFIG_T::classes], sv_T sv[CONFIG_T::width + 1],
             res_T out[CONFIG_T::classes + 1]) {
    const long long I32_MIN = -2147483648LL, I32_MAX = 2147483647LL;
    long long n = 0;
    for (unsigned i = 0; i < CONFIG_T::embed; i++) {
        long long t = e[i].to_int64();
        n += t * t;
    }
    long long r = qx_isqrt(n << 16);                              // NORM_FRAC = 8
    long long inv = (1LL << 40) / (r < 1 ? 1 : r);                // INV_BITS = 40
    long long z[CONFIG_T::classes];
    long long zmax = I32_MIN;
    for (unsigned c = 0; c < CONFIG_T::classes; c++) {
        long long dc = d[c].to_int64();
        out[c] = dc;
        long long z1 = qx_round_shift(dc * inv, 24);              // Z1_SHIFT = 24
        z[c] = qx_sat(qx_round_shift(z1 * CONFIG_T::m_z, CONFIG_T::sh_z), I32_MIN, I32_MAX);
        if (z[c] > zmax) zmax = z[c];
    }
    // softmax (intops.softmax, prob_bits = 15)
    long long ex[CONFIG_T::classes];
    long long sum = 0;
    for (unsigned c = 0; c < CONFIG_T::classes; c++) {
        long long dd = z[c] - zmax;
        if (dd < CONFIG_T::d_min) dd = CONFIG_T::d_min;
        long long x = CONFIG_T::pre >= 0 ? (dd >> CONFIG_T::pre) : (dd << -CONFIG_T::pre);
        if (x < CONFIG_T::x_min) x = CONFIG_T::x_min;
        long long zz = (-x) / CONFIG_T::x0;
        long long p = x + zz * CONFIG_T::x0;
        ex[c] = ((p + CONFIG_T::qb) * (p + CONFIG_T::qb) + CONFIG_T::qc) >> zz;
        sum += ex[c];
    }
    long long rr = (1LL << 32) / sum;                             // RECIP_BITS = 32
    long long top1 = -1, top2 = -1;
    for (unsigned c = 0; c < CONFIG_T::classes; c++) {
        long long p = qx_sat(qx_round_shift(ex[c] * rr, 32 - 15), 0, (1LL << 15) - 1);
        if (p > top1) {
            top2 = top1;
            top1 = p;
        } else if (p > top2) {
            top2 = p;
        }
    }
    long long margin = top1 - (CONFIG_T::classes > 1 ? top2 : 0);
    long long sav = sv[CONFIG_T::width].to_int64() >> CONFIG_T::sav_shift;
    if (sav > (1LL << 16) - 1) sav = (1LL << 16) - 1;              // SAV_BITS = 16
    long long g = CONFIG_T::w_c * top1 + CONFIG_T::w_m * margin + CONFIG_T::w_s * sav + CONFIG_T::bias;
    out[CONFIG_T::classes] = qx_sat(g, I32_MIN, I32_MAX);
}

} // namespace nnet

#endif
