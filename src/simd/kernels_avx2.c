/* AVX2 + FMA + F16C kernels, 8 floats per step. Each loop leaves a tail of fewer than 8
 * elements, which is copied through a padded stack buffer so that it is computed by the
 * same vector code (and rounds the same way) as the body. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd/kernels_impl.h"

#define LANES 8

/* Loads n < 8 floats and fills the other lanes with fill. */
static __m256 load_tail(const float *src, size_t n, float fill)
{
    float buffer[LANES];
    for (size_t i = 0; i < LANES; i++)
        buffer[i] = fill;
    memcpy(buffer, src, n * sizeof *src);
    return _mm256_loadu_ps(buffer);
}

static void store_tail(float *dst, __m256 v, size_t n)
{
    float buffer[LANES];
    _mm256_storeu_ps(buffer, v);
    memcpy(dst, buffer, n * sizeof *dst);
}

/* Loads n <= 8 16-bit values from an unaligned byte pointer, zero-filling the rest. */
static __m128i load_u16x8(const void *src, size_t n)
{
    if (n == LANES)
        return _mm_loadu_si128((const __m128i *)src);
    uint16_t buffer[LANES] = {0};
    memcpy(buffer, src, n * sizeof *buffer);
    return _mm_loadu_si128((const __m128i *)buffer);
}

static void store_u16x8(void *dst, __m128i v, size_t n)
{
    if (n == LANES) {
        _mm_storeu_si128((__m128i *)dst, v);
        return;
    }
    uint16_t buffer[LANES];
    _mm_storeu_si128((__m128i *)buffer, v);
    memcpy(dst, buffer, n * sizeof *buffer);
}

static float sum_lanes(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float max_lanes(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static double sum_lanes_pd(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

/* exp(x): x = n ln2 + r with |r| <= ln2/2, exp(r) by a degree-7 polynomial (Cephes
 * expf coefficients), then the scaling by 2^n done in two factors 2^(n/2) so that
 * results down in the denormal range round once, at the last product. */
static __m256 exp_ps(__m256 x)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);

    /* max/min return their second operand when one is NaN, which keeps x's NaN. */
    x = _mm256_max_ps(_mm256_set1_ps(SYM_EXP_ARG_MIN), x);
    x = _mm256_min_ps(_mm256_set1_ps(SYM_EXP_ARG_MAX), x);

    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2_hi, x);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);

    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));

    /* n is in [-150, 128]; each half is in [-75, 64], a normal power of two. */
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 scale1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 scale2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, scale1), scale2);
}

static void bf16_to_f32(float *dst, const void *src, size_t n)
{
    const unsigned char *bytes = src;
    for (size_t i = 0; i < n; i += LANES) {
        size_t count = n - i < LANES ? n - i : LANES;
        __m256i wide = _mm256_cvtepu16_epi32(load_u16x8(bytes + 2 * i, count));
        __m256 v = _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
        if (count == LANES)
            _mm256_storeu_ps(dst + i, v);
        else
            store_tail(dst + i, v, count);
    }
}

static void f16_to_f32(float *dst, const void *src, size_t n)
{
    const unsigned char *bytes = src;
    for (size_t i = 0; i < n; i += LANES) {
        size_t count = n - i < LANES ? n - i : LANES;
        __m256 v = _mm256_cvtph_ps(load_u16x8(bytes + 2 * i, count));
        if (count == LANES)
            _mm256_storeu_ps(dst + i, v);
        else
            store_tail(dst + i, v, count);
    }
}

/* Rounds 8 floats to bf16 bit patterns (in the low half of each 32-bit lane). */
static __m256i round_to_bf16(__m256 x)
{
    __m256i bits = _mm256_castps_si256(x);
    __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff));
    __m256i is_nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7f800000));

    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
    rounded = _mm256_srli_epi32(rounded, 16);
    __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
}

static void f32_to_bf16(void *dst, const float *src, size_t n)
{
    unsigned char *bytes = dst;
    for (size_t i = 0; i < n; i += LANES) {
        size_t count = n - i < LANES ? n - i : LANES;
        __m256 x = count == LANES ? _mm256_loadu_ps(src + i) : load_tail(src + i, count, 0);
        __m256i r = round_to_bf16(x);
        /* Every lane is <= 0xffff, so the unsigned saturating pack only narrows. */
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r),
                                          _mm256_extracti128_si256(r, 1));
        store_u16x8(bytes + 2 * i, packed, count);
    }
}

static size_t f32_to_f16(void *dst, const float *src, size_t n)
{
    unsigned char *bytes = dst;
    const __m256 sign_off = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 overflow_min = _mm256_set1_ps(65520.0f);
    const __m256 infinity = _mm256_set1_ps(INFINITY);
    size_t overflows = 0;
    for (size_t i = 0; i < n; i += LANES) {
        size_t count = n - i < LANES ? n - i : LANES;
        __m256 x = count == LANES ? _mm256_loadu_ps(src + i) : load_tail(src + i, count, 0);
        __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        store_u16x8(bytes + 2 * i, h, count);

        /* RNE sends exactly the finite |x| >= 65520 to Inf. */
        __m256 magnitude = _mm256_and_ps(x, sign_off);
        __m256 big = _mm256_cmp_ps(magnitude, overflow_min, _CMP_GE_OQ);
        __m256 finite = _mm256_cmp_ps(magnitude, infinity, _CMP_LT_OQ);
        int mask = _mm256_movemask_ps(_mm256_and_ps(big, finite));
        overflows += (size_t)__builtin_popcount((unsigned)mask);
    }
    return overflows;
}

static void rmsnorm(float *y, const float *x, const float *w, size_t n, float eps)
{
    __m256 acc0 = _mm256_setzero_ps();
    __m256 acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 2 * LANES <= n; i += 2 * LANES) {
        __m256 a = _mm256_loadu_ps(x + i);
        __m256 b = _mm256_loadu_ps(x + i + LANES);
        acc0 = _mm256_fmadd_ps(a, a, acc0);
        acc1 = _mm256_fmadd_ps(b, b, acc1);
    }
    for (; i < n; i += LANES) {
        __m256 a = n - i >= LANES ? _mm256_loadu_ps(x + i) : load_tail(x + i, n - i, 0);
        acc0 = _mm256_fmadd_ps(a, a, acc0);
    }
    float sum = sum_lanes(_mm256_add_ps(acc0, acc1));
    __m256 inverse = _mm256_set1_ps(1.0f / sqrtf(sum / (float)n + eps));

    for (i = 0; i < n; i += LANES) {
        if (n - i >= LANES) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), inverse);
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), v));
        } else {
            __m256 v = _mm256_mul_ps(load_tail(x + i, n - i, 0), inverse);
            store_tail(y + i, _mm256_mul_ps(load_tail(w + i, n - i, 0), v), n - i);
        }
    }
}

static __m256 swiglu_ps(__m256 g, __m256 u)
{
    __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
    __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    __m256 minus_inf = _mm256_cmp_ps(g, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ);
    silu = _mm256_andnot_ps(minus_inf, silu);
    return _mm256_mul_ps(silu, u);
}

static void swiglu(float *out, const float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i += LANES) {
        if (n - i >= LANES) {
            __m256 r = swiglu_ps(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i));
            _mm256_storeu_ps(out + i, r);
        } else {
            __m256 r = swiglu_ps(load_tail(g + i, n - i, 0), load_tail(u + i, n - i, 0));
            store_tail(out + i, r, n - i);
        }
    }
}

static void exp_f32(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += LANES) {
        if (n - i >= LANES)
            _mm256_storeu_ps(y + i, exp_ps(_mm256_loadu_ps(x + i)));
        else
            store_tail(y + i, exp_ps(load_tail(x + i, n - i, 0)), n - i);
    }
}

static float row_max(const float *x, size_t n)
{
    __m256 m = _mm256_set1_ps(-INFINITY);
    for (size_t i = 0; i < n; i += LANES) {
        __m256 v = n - i >= LANES ? _mm256_loadu_ps(x + i) : load_tail(x + i, n - i, -INFINITY);
        m = _mm256_max_ps(m, v);
    }
    return max_lanes(m);
}

/* Sums exp(x - m) over the row, storing each term in y unless y is NULL. */
static float sum_exp_shifted(float *y, const float *x, size_t n, float m)
{
    __m256 shift = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    for (size_t i = 0; i < n; i += LANES) {
        size_t count = n - i < LANES ? n - i : LANES;
        __m256 v = count == LANES ? _mm256_loadu_ps(x + i) : load_tail(x + i, count, -INFINITY);
        __m256 e = exp_ps(_mm256_sub_ps(v, shift));
        /* The -Inf padding gives exp(-Inf - m) = 0, adding nothing for finite m. */
        sum = _mm256_add_ps(sum, e);
        if (y != NULL && count == LANES)
            _mm256_storeu_ps(y + i, e);
        else if (y != NULL)
            store_tail(y + i, e, count);
    }
    return sum_lanes(sum);
}

static void softmax(float *y, const float *x, size_t n)
{
    float sum = sum_exp_shifted(y, x, n, row_max(x, n));
    __m256 divisor = _mm256_set1_ps(sum);
    for (size_t i = 0; i < n; i += LANES) {
        if (n - i >= LANES)
            _mm256_storeu_ps(y + i, _mm256_div_ps(_mm256_loadu_ps(y + i), divisor));
        else
            store_tail(y + i, _mm256_div_ps(load_tail(y + i, n - i, 0), divisor), n - i);
    }
}

static float logsumexp(const float *x, size_t n)
{
    float m = row_max(x, n);
    if (!isfinite(m))
        return sym_logsumexp_nonfinite(x, n, m);
    return m + logf(sum_exp_shifted(NULL, x, n, m));
}

static void rope_block(float *lo, float *hi, const float *c, const float *s, size_t count)
{
    __m256 a, b, cv, sv;
    if (count == LANES) {
        a = _mm256_loadu_ps(lo);
        b = _mm256_loadu_ps(hi);
        cv = _mm256_loadu_ps(c);
        sv = _mm256_loadu_ps(s);
    } else {
        a = load_tail(lo, count, 0);
        b = load_tail(hi, count, 0);
        cv = load_tail(c, count, 0);
        sv = load_tail(s, count, 0);
    }
    __m256 new_lo = _mm256_sub_ps(_mm256_mul_ps(a, cv), _mm256_mul_ps(b, sv));
    __m256 new_hi = _mm256_add_ps(_mm256_mul_ps(b, cv), _mm256_mul_ps(a, sv));
    if (count == LANES) {
        _mm256_storeu_ps(lo, new_lo);
        _mm256_storeu_ps(hi, new_hi);
    } else {
        store_tail(lo, new_lo, count);
        store_tail(hi, new_hi, count);
    }
}

static void rope(float *x, const float *cos_row, const float *sin_row, size_t head_dim)
{
    size_t half = head_dim / 2;
    for (size_t i = 0; i < half; i += LANES) {
        size_t count = half - i < LANES ? half - i : LANES;
        rope_block(x + i, x + half + i, cos_row + i, sin_row + i, count);
    }
}

static double dot(const float *a, const float *b, size_t n)
{
    __m256d acc0 = _mm256_setzero_pd();
    __m256d acc1 = _mm256_setzero_pd();
    for (size_t i = 0; i < n; i += LANES) {
        __m256 va = n - i >= LANES ? _mm256_loadu_ps(a + i) : load_tail(a + i, n - i, 0);
        __m256 vb = n - i >= LANES ? _mm256_loadu_ps(b + i) : load_tail(b + i, n - i, 0);
        /* Products of two floats are exact in f64, so only the sums round. */
        acc0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(va)),
                               _mm256_cvtps_pd(_mm256_castps256_ps128(vb)), acc0);
        acc1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(va, 1)),
                               _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1)), acc1);
    }
    return sum_lanes_pd(_mm256_add_pd(acc0, acc1));
}

static double sum_squares(const float *x, size_t n)
{
    return dot(x, x, n);
}

static void axpy(float *y, float a, const float *x, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    for (size_t i = 0; i < n; i += LANES) {
        if (n - i >= LANES) {
            __m256 r = _mm256_add_ps(_mm256_loadu_ps(y + i),
                                     _mm256_mul_ps(va, _mm256_loadu_ps(x + i)));
            _mm256_storeu_ps(y + i, r);
        } else {
            __m256 r = _mm256_add_ps(load_tail(y + i, n - i, 0),
                                     _mm256_mul_ps(va, load_tail(x + i, n - i, 0)));
            store_tail(y + i, r, n - i);
        }
    }
}

static void scale(float *y, float a, size_t n)
{
    __m256 va = _mm256_set1_ps(a);
    for (size_t i = 0; i < n; i += LANES) {
        if (n - i >= LANES)
            _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), va));
        else
            store_tail(y + i, _mm256_mul_ps(load_tail(y + i, n - i, 0), va), n - i);
    }
}

static void add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i += LANES) {
        if (n - i >= LANES) {
            __m256 r = _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i));
            _mm256_storeu_ps(y + i, r);
        } else {
            __m256 r = _mm256_add_ps(load_tail(y + i, n - i, 0), load_tail(x + i, n - i, 0));
            store_tail(y + i, r, n - i);
        }
    }
}

const sym_kernels sym_kernels_avx2 = {
    .variant = SYM_SIMD_AVX2,
    .name = "avx2",
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
