/* Router objectives: the loss against an independent double-precision implementation, and
 * the gradient against central finite differences of that implementation, for every
 * objective, every SIMD variant the CPU has, and one or several threads. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/router.h"
#include "testlib.h"

#define EXPERTS 4
#define HIDDEN 9
#define TOKENS 20
#define BATCH 12

static float x[TOKENS * HIDDEN];
static float y[TOKENS * EXPERTS * HIDDEN];
static uint32_t labels[TOKENS];
/* Label weights for the weighted cases: unequal, and one label weighted 0. */
static const double label_weights[EXPERTS] = {0.5, 1.75, 0.0, 1.25};
static const uint32_t batch[BATCH] = {3, 0, 17, 5, 9, 11, 2, 19, 8, 14, 6, 12};

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static double random_unit(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

static void softmax_f64(double *p, const double *z, int n)
{
    double m = z[0], sum = 0.0;
    for (int e = 1; e < n; e++)
        m = z[e] > m ? z[e] : m;
    for (int e = 0; e < n; e++) {
        p[e] = exp(z[e] - m);
        sum += p[e];
    }
    for (int e = 0; e < n; e++)
        p[e] /= sum;
}

#define TOP_K 2

/* Keeps the TOP_K largest of p (ties to the lower index), renormalised, and zeros the rest. */
static void top_k_weights(double *p)
{
    int kept[EXPERTS] = {0};
    double sum = 0.0;
    for (int slot = 0; slot < TOP_K; slot++) {
        int best = -1;
        for (int e = 0; e < EXPERTS; e++) {
            if (!kept[e] && (best < 0 || p[e] > p[best]))
                best = e;
        }
        kept[best] = 1;
        sum += p[best];
    }
    for (int e = 0; e < EXPERTS; e++)
        p[e] = kept[e] ? p[e] / sum : 0.0;
}

/* The objective written out in double precision from its definition. */
static double reference_loss(const double *w, sym_router_objective objective, double balance,
                             const double *weights)
{
    double ce = 0.0, distill = 0.0, prob_mean[EXPERTS] = {0}, top1_frac[EXPERTS] = {0};
    for (int j = 0; j < BATCH; j++) {
        uint32_t t = batch[j];
        double z[EXPERTS], p[EXPERTS];
        for (int e = 0; e < EXPERTS; e++) {
            z[e] = 0.0;
            for (int i = 0; i < HIDDEN; i++)
                z[e] += w[e * HIDDEN + i] * (double)x[t * HIDDEN + i];
        }
        softmax_f64(p, z, EXPERTS);
        double weight = weights != NULL ? weights[labels[t]] : 1.0;
        ce -= weight * log(p[labels[t]]);
        int best = 0;
        for (int e = 0; e < EXPERTS; e++) {
            prob_mean[e] += p[e] / BATCH;
            best = p[e] > p[best] ? e : best;
        }
        top1_frac[best] += 1.0 / BATCH;
        if (objective == SYM_ROUTER_DISTILL_TOPK)
            top_k_weights(p);

        const float *yt = y + (size_t)t * EXPERTS * HIDDEN;
        for (int i = 0; i < HIDDEN; i++) {
            double mix = 0.0;
            for (int e = 0; e < EXPERTS; e++)
                mix += p[e] * (double)yt[e * HIDDEN + i];
            double r = mix - (double)yt[labels[t] * HIDDEN + i];
            distill += weight * r * r;
        }
    }
    if (objective != SYM_ROUTER_DOMAIN)
        return distill / BATCH;
    double lb = 0.0;
    for (int e = 0; e < EXPERTS; e++)
        lb += top1_frac[e] * prob_mean[e];
    return ce / BATCH + balance * EXPERTS * lb;
}

static void check_case(sym_router_objective objective, sym_simd_variant variant,
                       unsigned threads, const double *weights)
{
    sym_router_config c;
    sym_router_config_init(&c, EXPERTS, HIDDEN);
    c.objective = objective;
    c.top_k = TOP_K;
    c.label_weights = weights;
    c.balance = 0.5;
    c.threads = threads;
    c.variant = variant;
    c.use_process_variant = 0;
    sym_router_dense dense = {y, EXPERTS, HIDDEN};
    sym_router_data data = {x, TOKENS, labels, sym_router_dense_experts, &dense};

    float w[EXPERTS * HIDDEN], grad[EXPERTS * HIDDEN];
    double wd[EXPERTS * HIDDEN];
    for (int i = 0; i < EXPERTS * HIDDEN; i++) {
        w[i] = (float)(0.4 * random_unit());
        wd[i] = w[i];
    }

    double loss = 0.0;
    sym_error err;
    sym_status status = sym_router_objective_eval(&c, &data, w, batch, BATCH, &loss, grad,
                                                  &err);
    CHECKF(status == SYM_OK, "eval failed: %s", err.message);
    double want = reference_loss(wd, objective, c.balance, weights);
    char name[64];
    snprintf(name, sizeof name, "%s%s", sym_router_objective_name(objective),
             weights != NULL ? " (label weights)" : "");
    CHECKF(fabs(loss - want) < 1e-5 * fabs(want), "%s %s threads %u loss %.9g vs %.9g", name,
           sym_simd_variant_str(variant), threads, loss, want);

    double max_grad = 0.0;
    double fd[EXPERTS * HIDDEN];
    const double h = 1e-6;
    for (int i = 0; i < EXPERTS * HIDDEN; i++) {
        double saved = wd[i];
        wd[i] = saved + h;
        double up = reference_loss(wd, objective, c.balance, weights);
        wd[i] = saved - h;
        double down = reference_loss(wd, objective, c.balance, weights);
        wd[i] = saved;
        fd[i] = (up - down) / (2.0 * h);
        max_grad = fabs(fd[i]) > max_grad ? fabs(fd[i]) : max_grad;
    }
    CHECKF(max_grad > 1e-3, "%s: gradient is too small to test (%g)", name, max_grad);
    for (int i = 0; i < EXPERTS * HIDDEN; i++)
        CHECKF(fabs((double)grad[i] - fd[i]) < 1e-5 * max_grad,
               "%s %s threads %u grad[%d, %d]: %.9g, finite difference %.9g", name,
               sym_simd_variant_str(variant), threads, i / HIDDEN, i % HIDDEN,
               (double)grad[i], fd[i]);
}

/* A balance coefficient of 50 makes the load-balancing term dominate the cross-entropy,
 * so a wrong sign or scale in its gradient stands out. */
static void check_balance_dominates(void)
{
    sym_router_config c;
    sym_router_config_init(&c, EXPERTS, HIDDEN);
    c.balance = 50.0;
    c.use_process_variant = 0;
    sym_router_data data = {x, TOKENS, labels, NULL, NULL};
    float w[EXPERTS * HIDDEN], grad[EXPERTS * HIDDEN];
    double wd[EXPERTS * HIDDEN];
    for (int i = 0; i < EXPERTS * HIDDEN; i++) {
        w[i] = (float)(0.4 * random_unit());
        wd[i] = w[i];
    }
    double loss;
    sym_error err;
    CHECK(sym_router_objective_eval(&c, &data, w, batch, BATCH, &loss, grad, &err) == SYM_OK);
    const double h = 1e-6;
    for (int i = 0; i < EXPERTS * HIDDEN; i++) {
        double saved = wd[i];
        wd[i] = saved + h;
        double up = reference_loss(wd, SYM_ROUTER_DOMAIN, c.balance, NULL);
        wd[i] = saved - h;
        double down = reference_loss(wd, SYM_ROUTER_DOMAIN, c.balance, NULL);
        wd[i] = saved;
        double fd = (up - down) / (2.0 * h);
        CHECKF(fabs((double)grad[i] - fd) < 1e-4 * (1.0 + fabs(fd)),
               "balance 50 grad[%d]: %.9g, finite difference %.9g", i, (double)grad[i], fd);
    }
}

static void check_bad_label(void)
{
    sym_router_config c;
    sym_router_config_init(&c, EXPERTS, HIDDEN);
    uint32_t bad[TOKENS];
    memcpy(bad, labels, sizeof bad);
    bad[7] = EXPERTS;
    sym_router_data data = {x, TOKENS, bad, NULL, NULL};
    float w[EXPERTS * HIDDEN] = {0};
    double loss;
    sym_error err;
    sym_status status = sym_router_objective_eval(&c, &data, w, batch, BATCH, &loss, NULL,
                                                  &err);
    CHECK(status == SYM_ERR_INVALID);
    CHECKF(strstr(err.message, "token 7") != NULL, "message: %s", err.message);
}

/* With one expert per token the top-k weight is always 1: the objective has no gradient,
 * so the trainer rejects the setting instead of leaving the router untrained. */
static void check_topk_needs_two(void)
{
    sym_router_config c;
    sym_router_config_init(&c, EXPERTS, HIDDEN);
    c.objective = SYM_ROUTER_DISTILL_TOPK;
    c.top_k = 1;
    sym_router_dense dense = {y, EXPERTS, HIDDEN};
    sym_router_data data = {x, TOKENS, labels, sym_router_dense_experts, &dense};
    float w[EXPERTS * HIDDEN] = {0};
    double loss;
    sym_error err;
    sym_status status = sym_router_objective_eval(&c, &data, w, batch, BATCH, &loss, NULL,
                                                  &err);
    CHECK(status == SYM_ERR_INVALID);
    CHECKF(strstr(err.message, "top_k of 2") != NULL, "message: %s", err.message);
}

int main(void)
{
    for (int i = 0; i < TOKENS * HIDDEN; i++)
        x[i] = (float)random_unit();
    for (int i = 0; i < TOKENS * EXPERTS * HIDDEN; i++)
        y[i] = (float)random_unit();
    for (int t = 0; t < TOKENS; t++)
        labels[t] = (uint32_t)(t * 7 % EXPERTS);

    static const unsigned thread_counts[] = {1, 3};
    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
        const sym_router_kernels *k;
        sym_error err;
        if (sym_router_kernels_get((sym_simd_variant)v, &k, &err) != SYM_OK) {
            printf("variant not tested: %s\n", err.message);
            continue;
        }
        for (int ti = 0; ti < 2; ti++) {
            for (int weighted = 0; weighted < 2; weighted++) {
                const double *weights = weighted ? label_weights : NULL;
                check_case(SYM_ROUTER_DOMAIN, (sym_simd_variant)v, thread_counts[ti], weights);
                check_case(SYM_ROUTER_DISTILL, (sym_simd_variant)v, thread_counts[ti], weights);
                check_case(SYM_ROUTER_DISTILL_TOPK, (sym_simd_variant)v, thread_counts[ti],
                           weights);
            }
        }
    }
    check_balance_dominates();
    check_bad_label();
    check_topk_needs_two();
    return test_finish("test_router_grad");
}
