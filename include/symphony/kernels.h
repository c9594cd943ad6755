/* Elementwise f32 kernels (conversions, RMSNorm, SwiGLU, softmax, RoPE, vector helpers)
 * in three variants, scalar, AVX2+FMA and AVX-512, behind one table of function pointers.
 *
 * The variant is chosen once per process, on first use, from cpuid and the OS state check
 * (XGETBV); the environment variable SYMPHONY_SIMD=scalar|avx2|avx512 forces one. Every
 * variant gives the same bits on every run for the same inputs. The variants agree with
 * each other bit for bit in the conversions, RoPE, axpy, scale and add. In exp and the
 * reductions (RMSNorm, softmax, log-sum-exp, dot, sum of squares) they differ by rounding.
 *
 * Conventions for every kernel: n counts elements; n == 0 is valid and does nothing;
 * 16-bit buffers are byte pointers with no alignment requirement (data mapped straight
 * from safetensors files); f32 buffers need only the natural alignment of float.
 * Output buffers may alias their input exactly (in place) where a kernel says so, and must
 * not overlap it partially.
 */
#ifndef SYMPHONY_KERNELS_H
#define SYMPHONY_KERNELS_H

#include <stddef.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sym_simd_variant {
    SYM_SIMD_SCALAR = 0,
    SYM_SIMD_AVX2,   /* AVX2 + FMA + F16C */
    SYM_SIMD_AVX512, /* AVX-512 F, BW, VL, DQ + FMA + F16C */
    SYM_SIMD_VARIANT_COUNT
} sym_simd_variant;

typedef struct sym_kernels {
    sym_simd_variant variant;
    const char *name; /* "scalar", "avx2" or "avx512", as SYMPHONY_SIMD spells it */

    /* dst[i] = src[i] for n bf16 values; exact. */
    void (*bf16_to_f32)(float *dst, const void *src, size_t n);
    /* dst[i] = src[i] for n IEEE binary16 values; exact, denormals included. */
    void (*f16_to_f32)(float *dst, const void *src, size_t n);
    /* Rounds to nearest, ties to even. A NaN stays NaN with its sign, made quiet.
     * Finite values beyond the bf16 range round to Inf, as RNE prescribes. */
    void (*f32_to_bf16)(void *dst, const float *src, size_t n);
    /* Rounds to nearest, ties to even (denormal results included). A NaN stays NaN with its
     * sign, made quiet. Returns the number of finite inputs that became +-Inf, which are
     * those with |x| >= 65520; the caller decides whether that is an error. */
    size_t (*f32_to_f16)(void *dst, const float *src, size_t n);

    /* y[i] = w[i] * (x[i] / sqrt(mean(x^2) + eps)), with the mean summed in f32 in a fixed
     * order. y may alias x. */
    void (*rmsnorm)(float *y, const float *x, const float *w, size_t n, float eps);
    /* out[i] = silu(g[i]) * u[i], silu(x) = x / (1 + exp(-x)). silu(-Inf) is taken as 0,
     * its limit, so out = 0 * u there (torch 2 gives NaN). out may alias g or u. */
    void (*swiglu)(float *out, const float *g, const float *u, size_t n);
    /* y[i] = exp(x[i]). The scalar variant calls expf. The vector variants stay within
     * 2 ulp of the correctly rounded result on the tests' sweep of [-104, 89], denormal
     * results included. exp(-Inf) = 0, exp(+Inf) = Inf, NaN stays NaN. y may alias x. */
    void (*exp)(float *y, const float *x, size_t n);
    /* y = exp(x - max(x)) / sum(exp(x - max(x))). y may alias x. A row of only -Inf, or
     * one containing NaN or +Inf, gives NaN (as torch.softmax). */
    void (*softmax)(float *y, const float *x, size_t n);
    /* Returns log(sum(exp(x))) computed as max + log(sum(exp(x - max))); -Inf when every
     * element is -Inf or n == 0, +Inf when some element is +Inf, NaN when one is NaN. */
    float (*logsumexp)(const float *x, size_t n);
    /* Rotates one row of head_dim (even) in place at one position, pairing dimension i with
     * i + head_dim/2 (rotate_half): x'[i] = x[i] c - x[i+h] s, x'[i+h] = x[i+h] c + x[i] s,
     * where c = cos_row[i], s = sin_row[i], h = head_dim/2, and the tables hold h values. */
    void (*rope)(float *x, const float *cos_row, const float *sin_row, size_t head_dim);

    /* Returns sum(a[i] * b[i]), accumulated in f64. */
    double (*dot)(const float *a, const float *b, size_t n);
    /* Returns sum(x[i]^2), accumulated in f64. */
    double (*sum_squares)(const float *x, size_t n);
    /* y[i] += a * x[i] (product rounded, then the sum; no fused multiply-add). */
    void (*axpy)(float *y, float a, const float *x, size_t n);
    /* y[i] *= a. */
    void (*scale)(float *y, float a, size_t n);
    /* y[i] += x[i]. */
    void (*add)(float *y, const float *x, size_t n);
} sym_kernels;

/* Returns the kernel table chosen for this process, choosing it on the first call
 * (thread-safe): SYMPHONY_SIMD when set, else the widest variant the CPU and OS support.
 * Fails with SYM_ERR_INVALID when SYMPHONY_SIMD names no variant, and SYM_ERR_UNSUPPORTED
 * when it names one this CPU or OS lacks; later calls return the same result. */
sym_status sym_kernels_select(const sym_kernels **kernels, sym_error *err);

/* Returns the name of the chosen variant ("scalar", "avx2", "avx512"), or NULL when
 * sym_kernels_select failed. Chooses the variant first if needed. */
const char *sym_kernels_variant_name(void);

/* Returns the table of one variant, or fails with SYM_ERR_UNSUPPORTED and the reason
 * ("avx512: this CPU lacks AVX-512F") when the CPU or OS lacks it. Ignores SYMPHONY_SIMD;
 * meant for tests and benchmarks that run every variant. */
sym_status sym_kernels_get(sym_simd_variant variant, const sym_kernels **kernels,
                           sym_error *err);

/* Chooses a variant as sym_kernels_select does, for a given SYMPHONY_SIMD value (NULL or
 * "" means unset), without touching the process-wide choice. */
sym_status sym_simd_choose(const char *request, sym_simd_variant *variant, sym_error *err);

/* Returns the variant's name, or "unknown" for a value out of range. */
const char *sym_simd_variant_str(sym_simd_variant variant);

#ifdef __cplusplus
}
#endif

#endif
