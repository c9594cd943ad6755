/* The elementwise steps, through the dispatched SIMD kernels of kernels.h. */
#include "forward_ops.h"

#include "symphony/kernels.h"

static const sym_kernels *kernels;

sym_status fwd_ops_init(sym_error *err)
{
    return sym_kernels_select(&kernels, err);
}

void fwd_rms_norm(float *y, const float *x, const float *w, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++)
        kernels->rmsnorm(y + r * n, x + r * n, w, n, eps);
}

void fwd_swiglu(float *gate, const float *up, size_t n)
{
    kernels->swiglu(gate, gate, up, n);
}

void fwd_softmax(float *x, size_t n)
{
    kernels->softmax(x, x, n);
}

void fwd_rope(float *x, const float *cos_t, const float *sin_t, size_t head_dim)
{
    kernels->rope(x, cos_t, sin_t, head_dim);
}

void fwd_add(float *dst, const float *src, size_t n)
{
    kernels->add(dst, src, n);
}

float fwd_dot(const float *a, const float *b, size_t n)
{
    return (float)kernels->dot(a, b, n);
}

void fwd_axpy(float *y, float a, const float *x, size_t n)
{
    kernels->axpy(y, a, x, n);
}
