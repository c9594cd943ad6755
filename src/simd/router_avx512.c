/* Router kernels, AVX-512: 16 floats per step, the tail through a lane mask. Sums use
 * fused multiply-add in f32 lanes, so they differ from the scalar reference by rounding;
 * AdamW uses separate multiplies and adds and matches it bit for bit. */
#include <immintrin.h>
#include <math.h>

#include "router_internal.h"

#define LANES 16

static __mmask16 tail_mask(size_t remaining)
{
    return remaining >= LANES ? (__mmask16)0xffff : (__mmask16)((1u << remaining) - 1u);
}

static float dot_f32(const float *a, const float *b, size_t n)
{
    __m512 acc0 = _mm512_setzero_ps();
    __m512 acc1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + LANES), _mm512_loadu_ps(b + i + LANES),
                               acc1);
    }
    for (; i < n; i += LANES) {
        __mmask16 k = tail_mask(n - i);
        acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i),
                               acc0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
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
    __m512 vd = _mm512_set1_ps(d);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 k = tail_mask(n - i);
        __m512 r = _mm512_fmadd_ps(vd, _mm512_maskz_loadu_ps(k, x + i),
                                   _mm512_maskz_loadu_ps(k, g + i));
        _mm512_mask_storeu_ps(g + i, k, r);
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
    __m512 sums[SYM_ROUTER_MAX_EXPERTS];
    __m512 loss = _mm512_setzero_ps();
    for (size_t e = 0; e < experts; e++)
        sums[e] = _mm512_setzero_ps();

    for (size_t i = 0; i < hidden; i += LANES) {
        __mmask16 k = tail_mask(hidden - i);
        __m512 r = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(k, target + i));
        for (size_t e = 0; e < experts; e++)
            r = _mm512_fmadd_ps(_mm512_set1_ps(p[e]),
                                _mm512_maskz_loadu_ps(k, y + e * hidden + i), r);
        loss = _mm512_fmadd_ps(r, r, loss);
        for (size_t e = 0; e < experts; e++)
            sums[e] = _mm512_fmadd_ps(r, _mm512_maskz_loadu_ps(k, y + e * hidden + i), sums[e]);
    }

    for (size_t e = 0; e < experts; e++)
        dp[e] = _mm512_reduce_add_ps(sums[e]);
    return _mm512_reduce_add_ps(loss);
}

static void adamw(float *w, const float *g, float *m, float *v, size_t n,
                  const sym_router_adamw *s)
{
    __m512 beta1 = _mm512_set1_ps(s->beta1), omb1 = _mm512_set1_ps(s->one_minus_beta1);
    __m512 beta2 = _mm512_set1_ps(s->beta2), omb2 = _mm512_set1_ps(s->one_minus_beta2);
    __m512 eps = _mm512_set1_ps(s->eps), decay = _mm512_set1_ps(s->decay);
    __m512 step = _mm512_set1_ps(s->step_size), bias2 = _mm512_set1_ps(s->bias2_sqrt);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 k = tail_mask(n - i);
        __m512 vg = _mm512_maskz_loadu_ps(k, g + i);
        __m512 decayed = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + i), decay);
        __m512 m1 = _mm512_add_ps(_mm512_mul_ps(beta1, _mm512_maskz_loadu_ps(k, m + i)),
                                  _mm512_mul_ps(omb1, vg));
        __m512 v1 = _mm512_add_ps(_mm512_mul_ps(beta2, _mm512_maskz_loadu_ps(k, v + i)),
                                  _mm512_mul_ps(omb2, _mm512_mul_ps(vg, vg)));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v1), bias2), eps);
        __m512 w1 = _mm512_sub_ps(decayed, _mm512_mul_ps(step, _mm512_div_ps(m1, denom)));
        _mm512_mask_storeu_ps(m + i, k, m1);
        _mm512_mask_storeu_ps(v + i, k, v1);
        _mm512_mask_storeu_ps(w + i, k, w1);
    }
}

const sym_router_kernels sym_router_kernels_avx512 = {
    .variant = SYM_SIMD_AVX512,
    .name = "avx512",
    .logits = logits,
    .accumulate_grad = accumulate_grad,
    .distill_token = distill_token,
    .adamw = adamw,
};
