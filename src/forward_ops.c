#include "forward_ops.h"

#include <math.h>

void fwd_rms_norm(float *y, const float *x, const float *w, size_t rows, size_t n, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += (double)xr[i] * (double)xr[i];
        float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
        for (size_t i = 0; i < n; i++)
            yr[i] = w[i] * (xr[i] * scale);
    }
}

void fwd_swiglu(float *gate, const float *up, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void fwd_softmax(float *x, size_t n)
{
    float max = -INFINITY;
    for (size_t i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    float sum = 0;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

void fwd_rope(float *x, const float *cos_t, const float *sin_t, size_t head_dim)
{
    size_t half = head_dim / 2;
    for (size_t i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * cos_t[i] - b * sin_t[i];
        x[i + half] = b * cos_t[i] + a * sin_t[i];
    }
}

void fwd_add(float *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}
