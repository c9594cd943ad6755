/* Elementwise steps of the forward pass in f32, on the dispatched SIMD kernels.
 * Shapes are row-major; n is the row length.
 */
#ifndef SYMPHONY_FORWARD_OPS_H
#define SYMPHONY_FORWARD_OPS_H

#include <stddef.h>

#include "symphony/status.h"

/* Selects the kernel variant; call before any other function here. */
sym_status fwd_ops_init(sym_error *err);

/* y[r] = w * x[r] / sqrt(mean(x[r]^2) + eps) for each of rows rows. y may equal x. */
void fwd_rms_norm(float *y, const float *x, const float *w, size_t rows, size_t n, float eps);

/* gate[i] = silu(gate[i]) * up[i]. */
void fwd_swiglu(float *gate, const float *up, size_t n);

/* Softmax of one row in place, in f32 with the maximum subtracted first. */
void fwd_softmax(float *x, size_t n);

/* Rotates one head vector x[head_dim] by rotate_half: dimension i pairs with
 * i + head_dim / 2, using cos/sin of the position's angles [head_dim / 2]. */
void fwd_rope(float *x, const float *cos_t, const float *sin_t, size_t head_dim);

/* dst[i] += src[i]. */
void fwd_add(float *dst, const float *src, size_t n);

/* Returns sum(a[i] * b[i]), accumulated in f64. */
float fwd_dot(const float *a, const float *b, size_t n);

/* y[i] += a * x[i]. */
void fwd_axpy(float *y, float a, const float *x, size_t n);

#endif
