/* Fusion arithmetic; see include/symphony/fusion.h for the definitions. */
#include "symphony/fusion.h"

#include <math.h>
#include <string.h>

#include "symphony/kernels.h"

void sym_fusion_gram_add(const float *const *src, size_t n, size_t count, double *gram)
{
    for (size_t a = 0; a < n; a++) {
        for (size_t b = a; b < n; b++) {
            double dot = 0.0;
            for (size_t j = 0; j < count; j++)
                dot += (double)src[a][j] * (double)src[b][j];
            gram[a * n + b] += dot;
            if (b != a)
                gram[b * n + a] += dot;
        }
    }
}

void sym_slerp_coefficients(const double *gram, double t, double *coef)
{
    double norm0 = sqrt(gram[0]), norm1 = sqrt(gram[3]);
    coef[0] = 1.0 - t;
    coef[1] = t;
    if (norm0 == 0.0 || norm1 == 0.0)
        return;
    double dot = gram[1] / (norm0 * norm1);
    if (dot > SYM_SLERP_DOT_THRESHOLD)
        return;
    if (dot < -1.0)
        dot = -1.0;
    double theta = acos(dot);
    double sin_theta = sin(theta);
    coef[0] = sin((1.0 - t) * theta) / sin_theta;
    coef[1] = sin(t * theta) / sin_theta;
}

void sym_multi_slerp_coefficients(const double *gram, const double *weights, size_t n,
                                  double *coef)
{
    /* coef holds r = sum_j coef[j] x_j; |r|^2 and <r, x_i> follow from the Gram matrix. */
    memset(coef, 0, n * sizeof *coef);
    coef[0] = 1.0;
    double cumulative = weights[0];
    for (size_t i = 1; i < n; i++) {
        cumulative += weights[i];
        double t = cumulative > 0.0 ? weights[i] / cumulative : 0.0;
        double r_norm2 = 0.0, r_dot_x = 0.0;
        for (size_t a = 0; a < i; a++) {
            r_dot_x += coef[a] * gram[a * n + i];
            for (size_t b = 0; b < i; b++)
                r_norm2 += coef[a] * coef[b] * gram[a * n + b];
        }
        double pair_gram[4] = {r_norm2, r_dot_x, r_dot_x, gram[i * n + i]};
        double pair[2];
        sym_slerp_coefficients(pair_gram, t, pair);
        for (size_t a = 0; a < i; a++)
            coef[a] *= pair[0];
        coef[i] = pair[1];
    }
}

void sym_fusion_combine(const float *const *src, const double *coef, size_t n, size_t count,
                        float *out)
{
    for (size_t j = 0; j < count; j++) {
        double sum = 0.0;
        for (size_t i = 0; i < n; i++)
            sum += coef[i] * (double)src[i][j];
        out[j] = (float)sum;
    }
}

/* Values per block of the branch-free scan in sym_find_nonfinite. */
#define FINITE_BLOCK 1024u

/* Returns whether a full block holds a NaN or Inf: exactly the values whose exponent bits
 * are all ones. The fixed trip count and the lack of branches let GCC -O2 vectorise it. */
static bool block_has_nonfinite(const float *values)
{
    uint32_t any = 0;
    for (size_t j = 0; j < FINITE_BLOCK; j++) {
        uint32_t bits;
        memcpy(&bits, values + j, sizeof bits);
        any |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    return any != 0;
}

size_t sym_find_nonfinite(const float *values, size_t count)
{
    size_t base = 0;
    while (base + FINITE_BLOCK <= count && !block_has_nonfinite(values + base))
        base += FINITE_BLOCK;
    for (size_t j = base; j < count; j++)
        if (!isfinite(values[j]))
            return j;
    return count;
}

sym_status sym_convert_f32(const float *src, size_t count, sym_dtype dtype, uint8_t *dst,
                           uint64_t *overflow, sym_error *err)
{
    const sym_kernels *kernels;
    sym_status s = sym_kernels_select(&kernels, err);
    if (s != SYM_OK)
        return s;
    switch (dtype) {
    case SYM_DTYPE_F32:
        memcpy(dst, src, count * 4);
        return SYM_OK;
    case SYM_DTYPE_BF16:
        kernels->f32_to_bf16(dst, src, count);
        return SYM_OK;
    case SYM_DTYPE_F16:
        *overflow += kernels->f32_to_f16(dst, src, count);
        return SYM_OK;
    default:
        return sym_error_set(err, SYM_ERR_UNSUPPORTED, "output dtype %s is not supported",
                             sym_dtype_name(dtype));
    }
}
