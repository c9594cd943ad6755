/* Router kernels, scalar reference. Every other variant is tested against these. */
#include <math.h>

#include "router_internal.h"

static void logits(float *out, const float *w, const float *x, size_t tokens, size_t experts,
                   size_t hidden)
{
    for (size_t t = 0; t < tokens; t++) {
        const float *row = x + t * hidden;
        for (size_t e = 0; e < experts; e++) {
            const float *gate = w + e * hidden;
            float sum = 0.0f;
            for (size_t i = 0; i < hidden; i++)
                sum += gate[i] * row[i];
            out[t * experts + e] = sum;
        }
    }
}

static void accumulate_grad(float *grad, const float *dlogits, const float *x, size_t tokens,
                            size_t experts, size_t hidden)
{
    for (size_t t = 0; t < tokens; t++) {
        const float *row = x + t * hidden;
        for (size_t e = 0; e < experts; e++) {
            float d = dlogits[t * experts + e];
            float *g = grad + e * hidden;
            for (size_t i = 0; i < hidden; i++)
                g[i] += d * row[i];
        }
    }
}

static double distill_token(float *dp, const float *p, const float *y, const float *target,
                            size_t experts, size_t hidden)
{
    double sums[SYM_ROUTER_MAX_EXPERTS] = {0};
    double loss = 0.0;
    for (size_t i = 0; i < hidden; i++) {
        float r = -target[i];
        for (size_t e = 0; e < experts; e++)
            r += p[e] * y[e * hidden + i];
        loss += (double)r * (double)r;
        for (size_t e = 0; e < experts; e++)
            sums[e] += (double)r * (double)y[e * hidden + i];
    }
    for (size_t e = 0; e < experts; e++)
        dp[e] = (float)sums[e];
    return loss;
}

static void adamw(float *w, const float *g, float *m, float *v, size_t n,
                  const sym_router_adamw *s)
{
    for (size_t i = 0; i < n; i++) {
        float decayed = w[i] * s->decay;
        float m1 = s->beta1 * m[i] + s->one_minus_beta1 * g[i];
        float v1 = s->beta2 * v[i] + s->one_minus_beta2 * (g[i] * g[i]);
        float denom = sqrtf(v1) / s->bias2_sqrt + s->eps;
        m[i] = m1;
        v[i] = v1;
        w[i] = decayed - s->step_size * (m1 / denom);
    }
}

const sym_router_kernels sym_router_kernels_scalar = {
    .variant = SYM_SIMD_SCALAR,
    .name = "scalar",
    .logits = logits,
    .accumulate_grad = accumulate_grad,
    .distill_token = distill_token,
    .adamw = adamw,
};
