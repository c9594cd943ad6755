/* Internal to the router trainer: the per-variant kernel tables. */
#ifndef SYMPHONY_ROUTER_INTERNAL_H
#define SYMPHONY_ROUTER_INTERNAL_H

#include "symphony/router.h"

extern const sym_router_kernels sym_router_kernels_scalar;
extern const sym_router_kernels sym_router_kernels_avx2;
extern const sym_router_kernels sym_router_kernels_avx512;

/* Sums over the tokens of one batch or split, from which the objective is computed. */
typedef struct router_stats {
    size_t count;   /* tokens seen */
    size_t correct; /* tokens whose top-1 expert equals the label */
    double cross_entropy_sum, distill_sum;
    double prob_sum[SYM_ROUTER_MAX_EXPERTS]; /* sum of p_e */
    size_t top1[SYM_ROUTER_MAX_EXPERTS];     /* tokens whose top-1 expert is e */
    size_t topk[SYM_ROUTER_MAX_EXPERTS];     /* top-k slots that go to e */
} router_stats;

/* Buffers for the forward and backward pass over up to `capacity` tokens. */
typedef struct router_workspace {
    const sym_router_config *config;
    const sym_router_data *data;
    const sym_router_kernels *router_kernels;
    const sym_kernels *kernels;
    size_t capacity;
    float *logits;       /* [capacity, experts], then the probabilities in place (for
                          * the top-k objective, the renormalised top-k weights) */
    float *dlogits;      /* [capacity, experts] */
    float *dprobs;       /* [capacity, experts], distillation: sum_i r_i y_e,i per token */
    float *expert_out;   /* [capacity, experts, hidden], distillation only */
    float *part_grad;    /* [threads, experts, hidden] */
    router_stats part_stats[SYM_ROUTER_MAX_THREADS];
} router_workspace;

/* Checks the configuration and the data (labels included) before any work. */
sym_status router_check(const sym_router_config *config, const sym_router_data *data,
                        sym_error *err);

sym_status router_workspace_init(router_workspace *ws, const sym_router_config *config,
                                 const sym_router_data *data, size_t capacity,
                                 sym_error *err);
void router_workspace_free(router_workspace *ws);

/* Runs the forward pass over tokens[0..count), count <= capacity, adding to *stats. The
 * probabilities stay in ws->logits for router_backward. */
sym_status router_forward(router_workspace *ws, const float *w, const uint32_t *tokens,
                          size_t count, router_stats *stats, sym_error *err);

/* Returns the objective computed from a batch's or split's sums. */
double router_loss(const sym_router_config *config, const router_stats *stats);

/* Writes the gradient of the objective of the batch last run through router_forward, whose
 * sums are *stats, into grad [experts, hidden]. */
void router_backward(router_workspace *ws, const uint32_t *tokens, size_t count,
                     const router_stats *stats, float *grad);

#endif
