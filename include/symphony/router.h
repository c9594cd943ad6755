/* Router training for one MoE layer on cached hidden states (stage II of the merge).
 *
 * A router is a matrix W [experts, hidden] (row-major f32). For a hidden state x it gives
 * logits W x, probabilities p = softmax(W x), the top_k experts by probability, and their
 * weights renormalised to sum to 1, as Mixtral routes. Training reads only the inputs X
 * [tokens, hidden] of one layer and never backpropagates through the model.
 *
 * Three objectives. The first two use the full softmax, so that experts outside the top-k
 * still get a gradient:
 *   SYM_ROUTER_DOMAIN   mean cross-entropy of p against each token's domain label, plus a
 *                       Switch-style load-balancing term balance * N * sum_e f_e P_e, where
 *                       f_e is the fraction of the batch whose top-1 expert is e (held
 *                       constant in the gradient) and P_e the batch mean of p_e;
 *   SYM_ROUTER_DISTILL  mean over tokens of || sum_e p_e y_e(x) - y_label(x) ||^2, where
 *                       y_e(x) is expert e's output: the mixture should reproduce the
 *                       token's own domain expert.
 * The third trains the mixture the model computes at inference:
 *   SYM_ROUTER_DISTILL_TOPK  mean over tokens of || sum_{e in K} w_e y_e(x) - y_label(x) ||^2,
 *                       where K is the token's top_k experts by p and w their renormalised
 *                       weights, w = softmax of the logits of K; experts outside K get no
 *                       gradient from that token.
 * sym_router_config.label_weights scales each token's term by its label's weight.
 * The optimiser is AdamW with PyTorch's update rule (decoupled weight decay).
 *
 * Results are deterministic for a given seed, thread count and SIMD variant.
 */
#ifndef SYMPHONY_ROUTER_H
#define SYMPHONY_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/kernels.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest number of experts a router may have (Mixtral uses 8). */
#define SYM_ROUTER_MAX_EXPERTS 64
/* Largest number of worker threads for one training run. */
#define SYM_ROUTER_MAX_THREADS 64

typedef enum sym_router_objective {
    SYM_ROUTER_DOMAIN = 0,
    SYM_ROUTER_DISTILL,
    SYM_ROUTER_DISTILL_TOPK,
} sym_router_objective;

/* The objective's name in configs and on the command line ("classify", "distill",
 * "distill-topk"), or NULL for a value outside the enum. */
const char *sym_router_objective_name(sym_router_objective objective);

/* Sets *objective from its name; returns 0 when name is not one. */
int sym_router_objective_parse(const char *name, sym_router_objective *objective);

/* Nonzero for the objectives that need every expert's output (the distillation ones). */
int sym_router_objective_uses_experts(sym_router_objective objective);

/* How W is initialised before the first step. */
typedef enum sym_router_gate_mode {
    SYM_ROUTER_GATE_ZERO = 0, /* all zeros: uniform routing */
    SYM_ROUTER_GATE_RANDOM,   /* uniform in [-1/sqrt(hidden), 1/sqrt(hidden)), seeded */
    SYM_ROUTER_GATE_ROWS,     /* copied from sym_router_config.init_rows */
} sym_router_gate_mode;

/* Settings of one training run. sym_router_config_init fills the defaults. */
typedef struct sym_router_config {
    size_t experts; /* N, 1..SYM_ROUTER_MAX_EXPERTS */
    size_t hidden;  /* length of each hidden state, >= 1 */
    size_t top_k;   /* experts per token, 1..experts; used for the load report */
    sym_router_objective objective;

    sym_router_gate_mode gate_mode;
    const float *init_rows; /* [experts, hidden], read only for SYM_ROUTER_GATE_ROWS */

    /* AdamW, as torch.optim.AdamW. Defaults: lr 1e-3, betas 0.9 and 0.999, eps 1e-8,
     * weight decay 0. */
    double lr, beta1, beta2, eps, weight_decay;
    size_t steps;      /* optimiser steps; 0 evaluates the initial router only */
    size_t batch_size; /* tokens per step; capped at the training split's size */
    uint64_t seed;     /* drives the held-out split, the batches and random gates */

    /* Fraction of the tokens held out for the report, in [0, 1). The held-out tokens are
     * the first round(fraction * tokens) of a permutation drawn from the seed. */
    double holdout_fraction;
    double balance; /* coefficient of the load-balancing term (domain objective only) */
    /* [experts] or NULL: each token's term of the objective (cross-entropy or squared
     * error) is multiplied by the weight of its label. NULL weights every label 1. */
    const double *label_weights;
    unsigned threads; /* worker threads, 1..SYM_ROUTER_MAX_THREADS */
    sym_simd_variant variant; /* kernel variant; see use_process_variant */
    int use_process_variant;  /* nonzero: take sym_kernels_select's variant instead */
} sym_router_config;

/* Fills every field with its default for a router of experts x hidden. */
void sym_router_config_init(sym_router_config *config, size_t experts, size_t hidden);

/* Fills out [count, experts, hidden] (row-major f32) with every expert's output for the
 * hidden states of the given token indices (rows of sym_router_data.x). Returns SYM_OK or
 * a failure with err filled; a failure stops training and is passed to the caller. */
typedef sym_status (*sym_router_expert_fn)(void *context, const uint32_t *tokens,
                                           size_t count, float *out, sym_error *err);

/* Training data of one layer. The trainer reads it and never keeps a pointer after
 * returning. */
typedef struct sym_router_data {
    const float *x;         /* [tokens, hidden] row-major f32 hidden states */
    size_t tokens;          /* T >= 2 */
    const uint32_t *labels; /* [tokens], each < experts: the token's domain expert */

    /* Distillation only: computes expert outputs for a batch of at most batch_size tokens,
     * so the caller need not hold T x N x hidden floats. The trainer keeps one buffer of
     * batch_size x experts x hidden floats for them. */
    sym_router_expert_fn expert_outputs;
    void *expert_context;
} sym_router_data;

/* Expert outputs held in memory, for sym_router_dense_experts. */
typedef struct sym_router_dense {
    const float *y; /* [tokens, experts, hidden] */
    size_t experts, hidden;
} sym_router_dense;

/* A sym_router_expert_fn that copies rows out of a sym_router_dense (the context). */
sym_status sym_router_dense_experts(void *context, const uint32_t *tokens, size_t count,
                                    float *out, sym_error *err);

/* Per-layer summary of a training run, for the pipeline to print and store. Losses are the
 * objective (including the load-balancing term for SYM_ROUTER_DOMAIN) over the whole split
 * with the final router; the load-balancing term then uses the split as one batch. */
typedef struct sym_router_report {
    size_t train_tokens, holdout_tokens, steps;
    double initial_train_loss; /* before the first step */
    double train_loss;
    double holdout_loss;       /* NaN when no token is held out */
    double train_accuracy;     /* fraction whose top-1 expert equals the label */
    double holdout_accuracy;   /* NaN when no token is held out */
    /* Fraction of all top-k slots, over every token, that go to each expert; the first
     * `experts` entries are used and sum to 1. */
    double expert_load[SYM_ROUTER_MAX_EXPERTS];
} sym_router_report;

/* Trains a router and writes it to w [experts, hidden]. report may be NULL. Fails with
 * SYM_ERR_INVALID on a bad setting or label, SYM_ERR_NONFINITE when the loss or the
 * weights stop being finite, SYM_ERR_NOMEM, or whatever the expert callback returns. */
sym_status sym_router_train(const sym_router_config *config, const sym_router_data *data,
                            float *w, sym_router_report *report, sym_error *err);

/* Computes the objective of config over the tokens listed in tokens[0..count) at weights
 * w, as one batch, into *loss, and its gradient with respect to w into grad [experts,
 * hidden] (overwritten) unless grad is NULL. Training uses the same code per step. */
sym_status sym_router_objective_eval(const sym_router_config *config,
                                     const sym_router_data *data, const float *w,
                                     const uint32_t *tokens, size_t count, double *loss,
                                     float *grad, sym_error *err);

/* Routes one hidden state: writes the top_k experts by probability (highest first, ties to
 * the lower index) to experts_out and their renormalised weights to weights_out. */
sym_status sym_router_route(const float *w, size_t experts, size_t hidden, const float *x,
                            size_t top_k, uint32_t *experts_out, float *weights_out,
                            sym_error *err);

/* Constants of one AdamW step t (counting from 1):
 *   w <- w * decay;  m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;
 *   w <- w - step_size * m / (sqrt(v) / bias2_sqrt + eps)
 * with decay = 1 - lr * weight_decay, step_size = lr / (1 - beta1^t) and
 * bias2_sqrt = sqrt(1 - beta2^t). */
typedef struct sym_router_adamw {
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float eps, decay, step_size, bias2_sqrt;
} sym_router_adamw;

/* Router kernels, one table per SIMD variant. Shapes are row-major f32; n == 0 is valid. */
typedef struct sym_router_kernels {
    sym_simd_variant variant;
    const char *name;

    /* logits[t * experts + e] = sum_i w[e * hidden + i] * x[t * hidden + i]. */
    void (*logits)(float *logits, const float *w, const float *x, size_t tokens,
                   size_t experts, size_t hidden);
    /* grad[e * hidden + i] += sum_t dlogits[t * experts + e] * x[t * hidden + i]. */
    void (*accumulate_grad)(float *grad, const float *dlogits, const float *x, size_t tokens,
                            size_t experts, size_t hidden);
    /* For one token with expert outputs y [experts, hidden], probabilities p [experts] and
     * target [hidden]: r = sum_e p[e] y[e] - target; dp[e] = sum_i r[i] y[e][i]; returns
     * sum_i r[i]^2. experts <= SYM_ROUTER_MAX_EXPERTS. */
    double (*distill_token)(float *dp, const float *p, const float *y, const float *target,
                            size_t experts, size_t hidden);
    /* One AdamW step over n parameters, as torch.optim.AdamW (see sym_router_adamw). The
     * variants agree bit for bit: no fused multiply-add, correctly rounded sqrt and
     * division in the same order. */
    void (*adamw)(float *w, const float *g, float *m, float *v, size_t n,
                  const sym_router_adamw *step);
} sym_router_kernels;

/* Fills the constants of AdamW step t (>= 1) from the configuration's hyperparameters. */
void sym_router_adamw_init(sym_router_adamw *step, const sym_router_config *config,
                           uint64_t t);

/* Returns the table of one variant, or fails with SYM_ERR_UNSUPPORTED when the CPU or OS
 * lacks it (the same check as sym_kernels_get). */
sym_status sym_router_kernels_get(sym_simd_variant variant,
                                  const sym_router_kernels **kernels, sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
