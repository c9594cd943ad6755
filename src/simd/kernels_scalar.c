/* Scalar kernels: the reference every vector variant is tested against, and the fallback
 * on CPUs without AVX2. They favour clarity over speed. The conversions work on bit
 * patterns, so their results do not depend on the compiler or the FPU mode. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "simd/kernels_impl.h"

static uint32_t f32_bits(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static float f32_from_bits(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Reads the i-th 16-bit value of an unaligned little-endian buffer. */
static uint16_t load_u16(const void *src, size_t i)
{
    uint16_t value;
    memcpy(&value, (const unsigned char *)src + 2 * i, sizeof value);
    return value;
}

static void store_u16(void *dst, size_t i, uint16_t value)
{
    memcpy((unsigned char *)dst + 2 * i, &value, sizeof value);
}

static void bf16_to_f32(float *dst, const void *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f32_from_bits((uint32_t)load_u16(src, i) << 16);
}

static float f16_bits_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f;
    uint32_t mantissa = h & 0x3ff;

    if (exponent == 0x1f) {
        /* Inf, or NaN made quiet as the F16C instructions do. */
        uint32_t quiet = mantissa != 0 ? 0x00400000 : 0;
        return f32_from_bits(sign | 0x7f800000 | quiet | (mantissa << 13));
    }
    if (exponent != 0)
        return f32_from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13));
    if (mantissa == 0)
        return f32_from_bits(sign);

    /* Denormal, mantissa * 2^-24: shift the leading one into the implicit bit. */
    uint32_t shift = 0;
    while ((mantissa & 0x400) == 0) {
        mantissa <<= 1;
        shift++;
    }
    return f32_from_bits(sign | ((113 - shift) << 23) | ((mantissa & 0x3ff) << 13));
}

static void f16_to_f32(float *dst, const void *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = f16_bits_to_f32(load_u16(src, i));
}

static uint16_t f32_to_bf16_bits(float x)
{
    uint32_t bits = f32_bits(x);
    if ((bits & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((bits >> 16) | 0x0040);
    /* Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the
     * dropped half is above one half, or equal to it with the kept part odd. */
    bits += 0x7fff + ((bits >> 16) & 1);
    return (uint16_t)(bits >> 16);
}

static void f32_to_bf16(void *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_u16(dst, i, f32_to_bf16_bits(src[i]));
}

/* Rounds a magnitude below the f16 normal range (2^-14) to a denormal f16 mantissa. */
static uint16_t f16_denormal_bits(uint32_t magnitude)
{
    if (magnitude <= 0x33000000) /* <= 2^-25, half the smallest denormal: rounds to 0 */
        return 0;
    uint32_t exponent = magnitude >> 23;
    uint32_t mantissa = (magnitude & 0x7fffff) | 0x800000;
    /* The value is mantissa * 2^(exponent - 150), in units of 2^-24 that is
     * mantissa >> (126 - exponent); the shift is 14..24 here. */
    uint32_t shift = 126 - exponent;
    uint32_t kept = mantissa >> shift;
    uint32_t rest = mantissa & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1)))
        kept++;
    return (uint16_t)kept;
}

static uint16_t f32_to_f16_bits(float x)
{
    uint32_t bits = f32_bits(x);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    uint32_t magnitude = bits & 0x7fffffff;

    if (magnitude > 0x7f800000)
        return (uint16_t)(sign | 0x7e00 | ((magnitude >> 13) & 0x3ff));
    if (magnitude >= 0x477ff000) /* >= 65520, halfway above 65504: rounds to Inf */
        return (uint16_t)(sign | 0x7c00);
    if (magnitude < 0x38800000)
        return (uint16_t)(sign | f16_denormal_bits(magnitude));

    /* Normal: rebias the exponent from 127 to 15, then round off 13 mantissa bits. */
    uint32_t rebased = magnitude - 0x38000000;
    rebased += 0x0fff + ((rebased >> 13) & 1);
    return (uint16_t)(sign | (rebased >> 13));
}

static size_t f32_to_f16(void *dst, const float *src, size_t n)
{
    size_t overflows = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = f32_to_f16_bits(src[i]);
        if ((h & 0x7fff) == 0x7c00 && isfinite(src[i]))
            overflows++;
        store_u16(dst, i, h);
    }
    return overflows;
}

static void rmsnorm(float *y, const float *x, const float *w, size_t n, float eps)
{
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++)
        sum += x[i] * x[i];
    float inverse = 1.0f / sqrtf(sum / (float)n + eps);
    for (size_t i = 0; i < n; i++)
        y[i] = w[i] * (x[i] * inverse);
}

static void swiglu(float *out, const float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float silu = g[i] == -INFINITY ? 0.0f : g[i] / (1.0f + expf(-g[i]));
        out[i] = silu * u[i];
    }
}

static void exp_f32(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = expf(x[i]);
}

/* Returns the maximum of a row, skipping NaN, or -Inf when n == 0. */
static float row_max(const float *x, size_t n)
{
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (x[i] > m)
            m = x[i];
    }
    return m;
}

static void softmax(float *y, const float *x, size_t n)
{
    float m = row_max(x, n);
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        y[i] = expf(x[i] - m);
        sum += y[i];
    }
    for (size_t i = 0; i < n; i++)
        y[i] /= sum;
}

static float logsumexp(const float *x, size_t n)
{
    float m = row_max(x, n);
    if (!isfinite(m))
        return sym_logsumexp_nonfinite(x, n, m);
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++)
        sum += expf(x[i] - m);
    return m + logf(sum);
}

static void rope(float *x, const float *cos_row, const float *sin_row, size_t head_dim)
{
    size_t half = head_dim / 2;
    for (size_t i = 0; i < half; i++) {
        float a = x[i];
        float b = x[i + half];
        x[i] = a * cos_row[i] - b * sin_row[i];
        x[i + half] = b * cos_row[i] + a * sin_row[i];
    }
}

static double dot(const float *a, const float *b, size_t n)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)a[i] * (double)b[i];
    return sum;
}

static double sum_squares(const float *x, size_t n)
{
    return dot(x, x, n);
}

static void axpy(float *y, float a, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale(float *y, float a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= a;
}

static void add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

const sym_kernels sym_kernels_scalar = {
    .variant = SYM_SIMD_SCALAR,
    .name = "scalar",
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
