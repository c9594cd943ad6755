/* Router kernels, AVX2 + FMA: 8 floats per step, the tail through maskload/maskstore.
 * Sums use fused multiply-add in f32 lanes, so they differ from the scalar reference by
 * rounding; AdamW uses separate multiplies and adds and matches it bit for bit. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "router_internal.h"

#define LANES 8

/* Lane i is active (all ones) when i < remaining. */
static __m256i tail_mask(size_t remaining)
{
    static const int32_t ramp[2 * LANES] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                            0,  0,  0,  0,  0,  0,  0,  0};
    size_t active = remaining >= LANES ? LANES : remaining;
    return _mm256_loadu_si256((const __m256i *)(ramp + LANES - active));
}

static __m256 load(const float *p, __m256i k)
{
    return _mm256_maskload_ps(p, k);
}

/* Sums the eight lanes in a fixed order. */
static float sum_lanes(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float dot_f32(const float *a, const float *b, size_t n)
{
    __m256 acc0 = _mm256_setzero_ps();
    __m256 acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + LANES), _mm256_loadu_ps(b + i + LANES),
                               acc1);
    }
    for (; i < n; i += LANES) {
        __m256i k = tail_mask(n - i);
        acc0 = _mm256_fmadd_ps(load(a + i, k), load(b + i, k), acc0);
    }
    return sum_lanes(_mm256_add_ps(acc0, acc1));
}

static void logits(float *out, const float *w, const float *x, size_t tokens, size_t experts,
                   size_t hidden)
{
    for (size_t t = 0; t < tokens; t++) {
        for (size_t e = 0; e < experts; e++)
            out[t * experts + e] = dot_f32(w + e * hidden, x + t * hidden, hidden);
    }
}

/* g[i] += d * x[i] */
static void fma_row(float *g, float d, const float *x, size_t n)
{
    __m256 vd = _mm256_set1_ps(d);
    for (size_t i = 0; i < n; i += LANES) {
        __m256i k = tail_mask(n - i);
        _mm256_maskstore_ps(g + i, k, _mm256_fmadd_ps(vd, load(x + i, k), load(g + i, k)));
    }
}

static void accumulate_grad(float *grad, const float *dlogits, const float *x, size_t tokens,
                            size_t experts, size_t hidden)
{
    for (size_t t = 0; t < tokens; t++) {
        for (size_t e = 0; e < experts; e++)
            fma_row(grad + e * hidden, dlogits[t * experts + e], x + t * hidden, hidden);
    }
}

static double distill_token(float *dp, const float *p, const float *y, const float *target,
                            size_t experts, size_t hidden)
{
    __m256 sums[SYM_ROUTER_MAX_EXPERTS];
    __m256 loss = _mm256_setzero_ps();
    for (size_t e = 0; e < experts; e++)
        sums[e] = _mm256_setzero_ps();

    for (size_t i = 0; i < hidden; i += LANES) {
        __m256i k = tail_mask(hidden - i);
        __m256 r = _mm256_sub_ps(_mm256_setzero_ps(), load(target + i, k));
        for (size_t e = 0; e < experts; e++)
            r = _mm256_fmadd_ps(_mm256_set1_ps(p[e]), load(y + e * hidden + i, k), r);
        loss = _mm256_fmadd_ps(r, r, loss);
        for (size_t e = 0; e < experts; e++)
            sums[e] = _mm256_fmadd_ps(r, load(y + e * hidden + i, k), sums[e]);
    }

    for (size_t e = 0; e < experts; e++)
        dp[e] = sum_lanes(sums[e]);
    return sum_lanes(loss);
}

static void adamw(float *w, const float *g, float *m, float *v, size_t n,
                  const sym_router_adamw *s)
{
    __m256 beta1 = _mm256_set1_ps(s->beta1), omb1 = _mm256_set1_ps(s->one_minus_beta1);
    __m256 beta2 = _mm256_set1_ps(s->beta2), omb2 = _mm256_set1_ps(s->one_minus_beta2);
    __m256 eps = _mm256_set1_ps(s->eps), decay = _mm256_set1_ps(s->decay);
    __m256 step = _mm256_set1_ps(s->step_size), bias2 = _mm256_set1_ps(s->bias2_sqrt);
    for (size_t i = 0; i < n; i += LANES) {
        __m256i k = tail_mask(n - i);
        __m256 vg = load(g + i, k);
        __m256 decayed = _mm256_mul_ps(load(w + i, k), decay);
        __m256 m1 = _mm256_add_ps(_mm256_mul_ps(beta1, load(m + i, k)), _mm256_mul_ps(omb1, vg));
        __m256 v1 = _mm256_add_ps(_mm256_mul_ps(beta2, load(v + i, k)),
                                  _mm256_mul_ps(omb2, _mm256_mul_ps(vg, vg)));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v1), bias2), eps);
        __m256 w1 = _mm256_sub_ps(decayed, _mm256_mul_ps(step, _mm256_div_ps(m1, denom)));
        _mm256_maskstore_ps(m + i, k, m1);
        _mm256_maskstore_ps(v + i, k, v1);
        _mm256_maskstore_ps(w + i, k, w1);
    }
}

const sym_router_kernels sym_router_kernels_avx2 = {
    .variant = SYM_SIMD_AVX2,
    .name = "avx2",
    .logits = logits,
    .accumulate_grad = accumulate_grad,
    .distill_token = distill_token,
    .adamw = adamw,
};
