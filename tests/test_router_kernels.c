/* Router kernels: the scalar reference against double-precision formulas, AdamW against a
 * hand-computed update, and every vector variant the CPU has against the scalar one. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/router.h"
#include "testlib.h"

/* Hidden sizes around the 8- and 16-lane boundaries, plus a model-sized one. */
static const size_t hiddens[] = {1, 7, 8, 9, 16, 17, 31, 33, 64, 100, 4096};
#define HIDDEN_COUNT (sizeof hiddens / sizeof hiddens[0])
static const size_t expert_counts[] = {1, 2, 4, 8, 13};
#define EXPERT_COUNT (sizeof expert_counts / sizeof expert_counts[0])

static uint64_t rng_state = 0x2545f4914f6cdd1du;

/* Uniform in [-range, range). */
static float random_float(float range)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((float)(rng_state >> 40) / 16777216.0f * 2.0f - 1.0f) * range;
}

static float *random_array(size_t n, float range)
{
    float *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = random_float(range);
    return a;
}

/* Relative error of got against want, measured against scale (a sum of magnitudes). */
static double rel_err(double got, double want, double scale)
{
    return fabs(got - want) / (scale > 1e-30 ? scale : 1e-30);
}

static void check_scalar_logits(const sym_router_kernels *k, size_t n, size_t h)
{
    size_t tokens = 3;
    float *w = random_array(n * h, 1.0f), *x = random_array(tokens * h, 2.0f);
    float out[3 * 13];
    k->logits(out, w, x, tokens, n, h);
    for (size_t t = 0; t < tokens; t++) {
        for (size_t e = 0; e < n; e++) {
            double want = 0.0, scale = 0.0;
            for (size_t i = 0; i < h; i++) {
                want += (double)w[e * h + i] * (double)x[t * h + i];
                scale += fabs((double)w[e * h + i] * (double)x[t * h + i]);
            }
            double err = rel_err(out[t * n + e], want, scale);
            CHECKF(err < 1e-5, "scalar logits n=%zu h=%zu [%zu,%zu]: %g vs %g", n, h, t, e,
                   (double)out[t * n + e], want);
        }
    }
    free(w);
    free(x);
}

static void check_scalar_distill(const sym_router_kernels *k, size_t n, size_t h)
{
    float *y = random_array(n * h, 1.0f), *target = random_array(h, 1.0f);
    float p[13], dp[13];
    for (size_t e = 0; e < n; e++)
        p[e] = (float)(e + 1) / (float)(n * (n + 1) / 2);

    double loss = k->distill_token(dp, p, y, target, n, h);
    double want_loss = 0.0, want_dp[13] = {0};
    for (size_t i = 0; i < h; i++) {
        double r = -(double)target[i];
        for (size_t e = 0; e < n; e++)
            r += (double)p[e] * (double)y[e * h + i];
        want_loss += r * r;
        for (size_t e = 0; e < n; e++)
            want_dp[e] += r * (double)y[e * h + i];
    }
    CHECKF(rel_err(loss, want_loss, want_loss) < 1e-5, "distill loss n=%zu h=%zu: %g vs %g",
           n, h, loss, want_loss);
    for (size_t e = 0; e < n; e++)
        CHECKF(fabs((double)dp[e] - want_dp[e]) < 1e-5 * (double)h,
               "distill dp n=%zu h=%zu e=%zu: %g vs %g", n, h, e, (double)dp[e], want_dp[e]);
    free(y);
    free(target);
}

/* Three AdamW steps against the update written out in double precision. */
static void check_adamw_reference(const sym_router_kernels *k)
{
    sym_router_config c;
    sym_router_config_init(&c, 2, 3);
    c.lr = 0.01;
    c.beta1 = 0.8;
    c.beta2 = 0.99;
    c.eps = 1e-6;
    c.weight_decay = 0.1;

    float w[6] = {0.5f, -1.0f, 2.0f, 0.0f, 1e-3f, -0.25f};
    float m[6] = {0}, v[6] = {0};
    double wd[6], md[6] = {0}, vd[6] = {0};
    for (int i = 0; i < 6; i++)
        wd[i] = w[i];
    const float grads[3][6] = {{0.1f, -0.2f, 0.3f, 0.0f, 5.0f, -1e-4f},
                               {-0.1f, 0.1f, 0.3f, 1.0f, -5.0f, 2e-4f},
                               {0.2f, 0.0f, -0.3f, 1.0f, 4.0f, 0.0f}};

    for (int t = 1; t <= 3; t++) {
        sym_router_adamw step;
        sym_router_adamw_init(&step, &c, (uint64_t)t);
        k->adamw(w, grads[t - 1], m, v, 6, &step);
        for (int i = 0; i < 6; i++) {
            double g = grads[t - 1][i];
            wd[i] *= 1.0 - 0.01 * 0.1;
            md[i] = 0.8 * md[i] + 0.2 * g;
            vd[i] = 0.99 * vd[i] + 0.01 * g * g;
            double mhat = md[i] / (1.0 - pow(0.8, t));
            double vhat = vd[i] / (1.0 - pow(0.99, t));
            wd[i] -= 0.01 * mhat / (sqrt(vhat) + 1e-6);
        }
    }
    for (int i = 0; i < 6; i++) {
        CHECKF(fabs((double)w[i] - wd[i]) < 1e-6, "adamw %s w[%d]: %.9g vs %.9g", k->name, i,
               (double)w[i], wd[i]);
        CHECKF(fabs((double)m[i] - md[i]) < 1e-6, "adamw %s m[%d]", k->name, i);
        CHECKF(fabs((double)v[i] - vd[i]) < 1e-6, "adamw %s v[%d]", k->name, i);
    }
}

static void check_variant_logits(const sym_router_kernels *ref, const sym_router_kernels *k,
                                 size_t n, size_t h)
{
    size_t tokens = 5;
    float *w = random_array(n * h, 1.0f), *x = random_array(tokens * h, 3.0f);
    float a[5 * 13], b[5 * 13];
    ref->logits(a, w, x, tokens, n, h);
    k->logits(b, w, x, tokens, n, h);
    for (size_t i = 0; i < tokens * n; i++) {
        double scale = 3.0 * (double)h;
        CHECKF(fabs((double)a[i] - (double)b[i]) < 1e-6 * scale, "%s logits n=%zu h=%zu [%zu]",
               k->name, n, h, i);
    }
    free(w);
    free(x);
}

static void check_variant_grad(const sym_router_kernels *ref, const sym_router_kernels *k,
                               size_t n, size_t h)
{
    size_t tokens = 4;
    float *x = random_array(tokens * h, 2.0f), *d = random_array(tokens * n, 0.5f);
    float *ga = random_array(n * h, 1.0f);
    float *gb = malloc(n * h * sizeof *gb);
    memcpy(gb, ga, n * h * sizeof *gb);
    ref->accumulate_grad(ga, d, x, tokens, n, h);
    k->accumulate_grad(gb, d, x, tokens, n, h);
    for (size_t i = 0; i < n * h; i++)
        CHECKF(fabs((double)ga[i] - (double)gb[i]) < 1e-5, "%s grad n=%zu h=%zu [%zu]: %g %g",
               k->name, n, h, i, (double)ga[i], (double)gb[i]);
    free(x);
    free(d);
    free(ga);
    free(gb);
}

static void check_variant_distill(const sym_router_kernels *ref, const sym_router_kernels *k,
                                  size_t n, size_t h)
{
    float *y = random_array(n * h, 1.0f), *target = random_array(h, 1.0f);
    float p[13], da[13], db[13];
    for (size_t e = 0; e < n; e++)
        p[e] = 1.0f / (float)n;
    double la = ref->distill_token(da, p, y, target, n, h);
    double lb = k->distill_token(db, p, y, target, n, h);
    CHECKF(rel_err(lb, la, la) < 1e-5, "%s distill loss n=%zu h=%zu: %g vs %g", k->name, n,
           h, lb, la);
    for (size_t e = 0; e < n; e++)
        CHECKF(fabs((double)da[e] - (double)db[e]) < 1e-5 * (double)h,
               "%s distill dp n=%zu h=%zu e=%zu", k->name, n, h, e);
    free(y);
    free(target);
}

/* AdamW must give the scalar bits exactly, at every length and tail. */
static void check_variant_adamw(const sym_router_kernels *ref, const sym_router_kernels *k,
                                size_t len)
{
    float *w0 = random_array(len, 1.0f), *g = random_array(len, 0.1f);
    float *m0 = random_array(len, 0.01f), *v0 = random_array(len, 0.01f);
    for (size_t i = 0; i < len; i++)
        v0[i] = fabsf(v0[i]);
    size_t bytes = len * sizeof(float);
    float *wa = malloc(bytes), *ma = malloc(bytes), *va = malloc(bytes);
    float *wb = malloc(bytes), *mb = malloc(bytes), *vb = malloc(bytes);
    memcpy(wa, w0, bytes), memcpy(wb, w0, bytes);
    memcpy(ma, m0, bytes), memcpy(mb, m0, bytes);
    memcpy(va, v0, bytes), memcpy(vb, v0, bytes);

    sym_router_config c;
    sym_router_config_init(&c, 1, 1);
    c.weight_decay = 0.01;
    sym_router_adamw step;
    sym_router_adamw_init(&step, &c, 7);
    ref->adamw(wa, g, ma, va, len, &step);
    k->adamw(wb, g, mb, vb, len, &step);
    CHECKF(memcmp(wa, wb, bytes) == 0, "%s adamw w differs from scalar, n=%zu", k->name, len);
    CHECKF(memcmp(ma, mb, bytes) == 0, "%s adamw m differs from scalar, n=%zu", k->name, len);
    CHECKF(memcmp(va, vb, bytes) == 0, "%s adamw v differs from scalar, n=%zu", k->name, len);
    free(w0), free(g), free(m0), free(v0);
    free(wa), free(ma), free(va), free(wb), free(mb), free(vb);
}

int main(void)
{
    const sym_router_kernels *scalar;
    sym_error err;
    CHECK(sym_router_kernels_get(SYM_SIMD_SCALAR, &scalar, &err) == SYM_OK);

    for (size_t ni = 0; ni < EXPERT_COUNT; ni++) {
        for (size_t hi = 0; hi < HIDDEN_COUNT; hi++) {
            check_scalar_logits(scalar, expert_counts[ni], hiddens[hi]);
            check_scalar_distill(scalar, expert_counts[ni], hiddens[hi]);
        }
    }

    int tested = 0;
    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
        const sym_router_kernels *k;
        if (sym_router_kernels_get((sym_simd_variant)v, &k, &err) != SYM_OK) {
            printf("variant %s not tested: %s\n", sym_simd_variant_str((sym_simd_variant)v),
                   err.message);
            continue;
        }
        tested++;
        check_adamw_reference(k);
        for (size_t ni = 0; ni < EXPERT_COUNT; ni++) {
            for (size_t hi = 0; hi < HIDDEN_COUNT; hi++) {
                check_variant_logits(scalar, k, expert_counts[ni], hiddens[hi]);
                check_variant_grad(scalar, k, expert_counts[ni], hiddens[hi]);
                check_variant_distill(scalar, k, expert_counts[ni], hiddens[hi]);
            }
        }
        for (size_t len = 0; len < 70; len++)
            check_variant_adamw(scalar, k, len);
        check_variant_adamw(scalar, k, 8 * 4096 + 3);
    }
    printf("%d variants tested\n", tested);
    return test_finish("test_router_kernels");
}
