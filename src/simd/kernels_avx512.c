/* AVX-512 kernels, 16 floats per step. Tails of fewer than 16 elements use masked loads
 * and stores, which never touch memory in masked-off lanes. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>

#include "simd/kernels_impl.h"

#define LANES 16

/* Mask of the first min(n - i, 16) lanes. */
static __mmask16 lane_mask(size_t n, size_t i)
{
    size_t count = n - i < LANES ? n - i : LANES;
    return (__mmask16)((1u << count) - 1);
}

static __m512 load_masked(const float *src, __mmask16 mask, float fill)
{
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, src);
}

/* exp(x): x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 polynomial (Cephes
 * expf coefficients), then vscalefps multiplies by 2^n with one rounding, which also
 * gives correctly rounded denormal results and Inf on overflow. */
static __m512 exp_ps(__m512 x)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
    const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);

    /* max/min return their second operand when one is NaN, which keeps x's NaN. */
    x = _mm512_max_ps(_mm512_set1_ps(SYM_EXP_ARG_MIN), x);
    x = _mm512_min_ps(_mm512_set1_ps(SYM_EXP_ARG_MAX), x);

    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, x);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);

    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

static void bf16_to_f32(float *dst, const void *src, size_t n)
{
    const unsigned char *bytes = src;
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m256i h = _mm256_maskz_loadu_epi16(mask, bytes + 2 * i);
        __m512i wide = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_mask_storeu_ps(dst + i, mask, _mm512_castsi512_ps(wide));
    }
}

static void f16_to_f32(float *dst, const void *src, size_t n)
{
    const unsigned char *bytes = src;
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m256i h = _mm256_maskz_loadu_epi16(mask, bytes + 2 * i);
        _mm512_mask_storeu_ps(dst + i, mask, _mm512_cvtph_ps(h));
    }
}

static void f32_to_bf16(void *dst, const float *src, size_t n)
{
    unsigned char *bytes = dst;
    const __m512i nan_min = _mm512_set1_epi32(0x7f800001);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512i bits = _mm512_castps_si512(_mm512_maskz_loadu_ps(mask, src + i));
        __m512i magnitude = _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff));
        __mmask16 is_nan = _mm512_cmpge_epi32_mask(magnitude, nan_min);

        /* Round to nearest even: add 0x7fff plus the lowest kept bit, drop 16 bits. */
        __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
        __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
        rounded = _mm512_srli_epi32(rounded, 16);
        __m512i quiet_nan = _mm512_or_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
        rounded = _mm512_mask_mov_epi32(rounded, is_nan, quiet_nan);

        _mm256_mask_storeu_epi16(bytes + 2 * i, mask, _mm512_cvtepi32_epi16(rounded));
    }
}

static size_t f32_to_f16(void *dst, const float *src, size_t n)
{
    unsigned char *bytes = dst;
    const __m512 overflow_min = _mm512_set1_ps(65520.0f);
    const __m512 infinity = _mm512_set1_ps(INFINITY);
    size_t overflows = 0;
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 x = _mm512_maskz_loadu_ps(mask, src + i);
        __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(bytes + 2 * i, mask, h);

        /* RNE sends exactly the finite |x| >= 65520 to Inf. */
        __m512 magnitude = _mm512_abs_ps(x);
        __mmask16 big = _mm512_cmp_ps_mask(magnitude, overflow_min, _CMP_GE_OQ);
        __mmask16 finite = _mm512_cmp_ps_mask(magnitude, infinity, _CMP_LT_OQ);
        overflows += (size_t)__builtin_popcount((unsigned)(big & finite));
    }
    return overflows;
}

static void rmsnorm(float *y, const float *x, const float *w, size_t n, float eps)
{
    __m512 acc0 = _mm512_setzero_ps();
    __m512 acc1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        __m512 a = _mm512_loadu_ps(x + i);
        __m512 b = _mm512_loadu_ps(x + i + LANES);
        acc0 = _mm512_fmadd_ps(a, a, acc0);
        acc1 = _mm512_fmadd_ps(b, b, acc1);
    }
    for (; i < n; i += LANES) {
        __m512 a = _mm512_maskz_loadu_ps(lane_mask(n, i), x + i);
        acc0 = _mm512_fmadd_ps(a, a, acc0);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    __m512 inverse = _mm512_set1_ps(1.0f / sqrtf(sum / (float)n + eps));

    for (i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, x + i), inverse);
        v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, w + i), v);
        _mm512_mask_storeu_ps(y + i, mask, v);
    }
}

static void swiglu(float *out, const float *g, const float *u, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 minus_inf = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 gv = _mm512_maskz_loadu_ps(mask, g + i);
        __m512 uv = _mm512_maskz_loadu_ps(mask, u + i);
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 silu = _mm512_div_ps(gv, _mm512_add_ps(one, e));
        /* silu(-Inf) = 0 rather than -Inf / Inf. */
        __mmask16 finite_or_nan = _mm512_cmp_ps_mask(gv, minus_inf, _CMP_NEQ_UQ);
        silu = _mm512_maskz_mov_ps(finite_or_nan, silu);
        _mm512_mask_storeu_ps(out + i, mask, _mm512_mul_ps(silu, uv));
    }
}

static void exp_f32(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        _mm512_mask_storeu_ps(y + i, mask, exp_ps(_mm512_maskz_loadu_ps(mask, x + i)));
    }
}

static float row_max(const float *x, size_t n)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += LANES)
        m = _mm512_max_ps(m, load_masked(x + i, lane_mask(n, i), -INFINITY));
    return _mm512_reduce_max_ps(m);
}

/* Sums exp(x - m) over the row, storing each term in y unless y is NULL. */
static float sum_exp_shifted(float *y, const float *x, size_t n, float m)
{
    __m512 shift = _mm512_set1_ps(m);
    __m512 sum = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), shift));
        /* Masked-off lanes add 0, whatever exp gave for them. */
        sum = _mm512_mask_add_ps(sum, mask, sum, e);
        if (y != NULL)
            _mm512_mask_storeu_ps(y + i, mask, e);
    }
    return _mm512_reduce_add_ps(sum);
}

static void softmax(float *y, const float *x, size_t n)
{
    float sum = sum_exp_shifted(y, x, n, row_max(x, n));
    __m512 divisor = _mm512_set1_ps(sum);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(mask, y + i), divisor);
        _mm512_mask_storeu_ps(y + i, mask, v);
    }
}

static float logsumexp(const float *x, size_t n)
{
    float m = row_max(x, n);
    if (!isfinite(m))
        return sym_logsumexp_nonfinite(x, n, m);
    return m + logf(sum_exp_shifted(NULL, x, n, m));
}

static void rope(float *x, const float *cos_row, const float *sin_row, size_t head_dim)
{
    size_t half = head_dim / 2;
    for (size_t i = 0; i < half; i += LANES) {
        __mmask16 mask = lane_mask(half, i);
        __m512 a = _mm512_maskz_loadu_ps(mask, x + i);
        __m512 b = _mm512_maskz_loadu_ps(mask, x + half + i);
        __m512 c = _mm512_maskz_loadu_ps(mask, cos_row + i);
        __m512 s = _mm512_maskz_loadu_ps(mask, sin_row + i);
        __m512 new_lo = _mm512_sub_ps(_mm512_mul_ps(a, c), _mm512_mul_ps(b, s));
        __m512 new_hi = _mm512_add_ps(_mm512_mul_ps(b, c), _mm512_mul_ps(a, s));
        _mm512_mask_storeu_ps(x + i, mask, new_lo);
        _mm512_mask_storeu_ps(x + half + i, mask, new_hi);
    }
}

static double dot(const float *a, const float *b, size_t n)
{
    __m512d acc0 = _mm512_setzero_pd();
    __m512d acc1 = _mm512_setzero_pd();
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 va = _mm512_maskz_loadu_ps(mask, a + i);
        __m512 vb = _mm512_maskz_loadu_ps(mask, b + i);
        /* Products of two floats are exact in f64, so only the sums round. */
        acc0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(va)),
                               _mm512_cvtps_pd(_mm512_castps512_ps256(vb)), acc0);
        acc1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(va, 1)),
                               _mm512_cvtps_pd(_mm512_extractf32x8_ps(vb, 1)), acc1);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
}

static double sum_squares(const float *x, size_t n)
{
    return dot(x, x, n);
}

static void axpy(float *y, float a, const float *x, size_t n)
{
    __m512 va = _mm512_set1_ps(a);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 product = _mm512_mul_ps(va, _mm512_maskz_loadu_ps(mask, x + i));
        __m512 r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y + i), product);
        _mm512_mask_storeu_ps(y + i, mask, r);
    }
}

static void scale(float *y, float a, size_t n)
{
    __m512 va = _mm512_set1_ps(a);
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, y + i), va);
        _mm512_mask_storeu_ps(y + i, mask, r);
    }
}

static void add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += LANES) {
        __mmask16 mask = lane_mask(n, i);
        __m512 r = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, y + i),
                                 _mm512_maskz_loadu_ps(mask, x + i));
        _mm512_mask_storeu_ps(y + i, mask, r);
    }
}

const sym_kernels sym_kernels_avx512 = {
    .variant = SYM_SIMD_AVX512,
    .name = "avx512",
    .bf16_to_f32 = bf16_to_f32,
    .f16_to_f32 = f16_to_f32,
    .f32_to_bf16 = f32_to_bf16,
    .f32_to_f16 = f32_to_f16,
    .rmsnorm = rmsnorm,
    .swiglu = swiglu,
    .exp = exp_f32,
    .softmax = softmax,
    .logsumexp = logsumexp,
    .rope = rope,
    .dot = dot,
    .sum_squares = sum_squares,
    .axpy = axpy,
    .scale = scale,
    .add = add,
};
