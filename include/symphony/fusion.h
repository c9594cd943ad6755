/* Fusion arithmetic: weighted means, SLERP and multi-SLERP, output conversion.
 *
 * Every rule is a linear combination out = sum_i c_i x_i of the source tensors, with the
 * coefficients computed first (for SLERP from the Gram matrix of the flattened tensors), so
 * a tensor can be produced in row blocks after one pass that accumulates the Gram matrix.
 * Sums are taken in double and rounded once to f32.
 */
#ifndef SYMPHONY_FUSION_H
#define SYMPHONY_FUSION_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/safetensors.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Above this normalised dot product SLERP falls back to linear interpolation. */
#define SYM_SLERP_DOT_THRESHOLD 0.9995

/* Adds the dot products of n blocks of count elements to gram[n * n] (row-major,
 * symmetric). Call once per block, on a zeroed matrix, to cover a whole tensor. */
void sym_fusion_gram_add(const float *const *src, size_t n, size_t count, double *gram);

/* SLERP of two flattened tensors x0, x1 at t in [0, 1], in coefficients:
 * out = c[0] x0 + c[1] x1 with theta the angle between them,
 * c[0] = sin((1 - t) theta) / sin theta and c[1] = sin(t theta) / sin theta, or (1 - t, t)
 * when the normalised dot product exceeds SYM_SLERP_DOT_THRESHOLD or either norm is 0.
 * gram is the 2 x 2 Gram matrix. */
void sym_slerp_coefficients(const double *gram, double t, double *coef);

/* Multi-SLERP of n tensors with weights w (summing to 1), in coefficients. It is the
 * SLERP fold r_1 = x_1, r_i = slerp(r_{i-1}, x_i, w_i / (w_1 + ... + w_i)), so for n = 2
 * it is SLERP at t = w_2, and when all tensors are parallel it is the weighted mean. Each
 * r_i stays a combination of the x_j, so the angles come from the Gram matrix alone.
 * The fold depends on the order of the sources when n > 2. */
void sym_multi_slerp_coefficients(const double *gram, const double *weights, size_t n,
                                  double *coef);

/* out[j] = sum_i coef[i] * src[i][j] for j < count, summed in double. */
void sym_fusion_combine(const float *const *src, const double *coef, size_t n, size_t count,
                        float *out);

/* Returns the index of the first NaN or Inf in values, or count when all are finite. */
size_t sym_find_nonfinite(const float *values, size_t count);

/* Converts count f32 values to dtype (F32, F16 or BF16, little-endian) at dst with the
 * process's SIMD kernels. BF16 and F16 round to nearest even; NaN stays NaN. *overflow is
 * increased by the finite values that became Inf in F16 (|x| >= 65520), so the caller can
 * report them. Fails when SYMPHONY_SIMD names a variant that cannot run. */
sym_status sym_convert_f32(const float *src, size_t count, sym_dtype dtype, uint8_t *dst,
                           uint64_t *overflow, sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
