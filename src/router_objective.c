/* The two router objectives and their gradients over one batch of tokens, split across
 * worker threads in fixed contiguous parts so that the result depends only on the thread
 * count, never on scheduling. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "router_internal.h"

/* One part's share of a batch: tokens [begin, end) of the batch's token list. */
typedef struct part_range {
    size_t begin, end;
} part_range;

static part_range part_of(size_t count, unsigned part, unsigned parts)
{
    part_range r = {count * part / parts, count * (part + 1) / parts};
    return r;
}

typedef void (*part_task)(void *context, unsigned part, unsigned parts);

typedef struct part_job {
    part_task task;
    void *context;
    unsigned part, parts;
} part_job;

static void *run_part_job(void *arg)
{
    part_job *job = arg;
    job->task(job->context, job->part, job->parts);
    return NULL;
}

/* Runs task for every part, part 0 on the calling thread. A part whose thread cannot be
 * started runs on the calling thread afterwards. The results are the same either way,
 * because every part writes only its own buffers. */
static void run_parts(unsigned parts, part_task task, void *context)
{
    pthread_t threads[SYM_ROUTER_MAX_THREADS];
    part_job jobs[SYM_ROUTER_MAX_THREADS];
    int started[SYM_ROUTER_MAX_THREADS] = {0};

    for (unsigned p = 1; p < parts; p++) {
        jobs[p] = (part_job){task, context, p, parts};
        started[p] = pthread_create(&threads[p], NULL, run_part_job, &jobs[p]) == 0;
    }
    task(context, 0, parts);
    for (unsigned p = 1; p < parts; p++) {
        if (started[p])
            pthread_join(threads[p], NULL);
        else
            task(context, p, parts);
    }
}

sym_status router_check(const sym_router_config *c, const sym_router_data *data,
                        sym_error *err)
{
    if (c->experts < 1 || c->experts > SYM_ROUTER_MAX_EXPERTS)
        return sym_error_set(err, SYM_ERR_INVALID, "router: %zu experts; expected 1 to %d",
                             c->experts, SYM_ROUTER_MAX_EXPERTS);
    if (c->hidden < 1)
        return sym_error_set(err, SYM_ERR_INVALID, "router: hidden size is 0");
    if (c->top_k < 1 || c->top_k > c->experts)
        return sym_error_set(err, SYM_ERR_INVALID, "router: top_k %zu; expected 1 to %zu",
                             c->top_k, c->experts);
    if (c->objective == SYM_ROUTER_DISTILL_TOPK && c->top_k < 2)
        return sym_error_set(err, SYM_ERR_INVALID, "router: the distill-topk objective needs "
                             "top_k of 2 or more: with one expert per token its weight is "
                             "always 1, so the router gets no gradient");
    if (sym_router_objective_name(c->objective) == NULL)
        return sym_error_set(err, SYM_ERR_INVALID, "router: unknown objective %d",
                             (int)c->objective);
    if (c->threads < 1 || c->threads > SYM_ROUTER_MAX_THREADS)
        return sym_error_set(err, SYM_ERR_INVALID, "router: %u threads; expected 1 to %d",
                             c->threads, SYM_ROUTER_MAX_THREADS);
    for (size_t e = 0; c->label_weights != NULL && e < c->experts; e++) {
        if (!(c->label_weights[e] >= 0.0) || !isfinite(c->label_weights[e]))
            return sym_error_set(err, SYM_ERR_INVALID, "router: weight %g of label %zu; "
                                 "expected finite, >= 0", c->label_weights[e], e);
    }
    if (!(c->balance >= 0.0) || !isfinite(c->balance))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: load-balancing coefficient %g; expected finite, >= 0",
                             c->balance);
    if (data->x == NULL || data->labels == NULL)
        return sym_error_set(err, SYM_ERR_INVALID, "router: hidden states or labels missing");
    if (sym_router_objective_uses_experts(c->objective) && data->expert_outputs == NULL)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: the distillation objective needs expert_outputs");
    for (size_t t = 0; t < data->tokens; t++) {
        if (data->labels[t] >= c->experts)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "router: label %u of token %zu is not an expert index "
                                 "(expected below %zu)", data->labels[t], t, c->experts);
    }
    return SYM_OK;
}

static void *alloc_floats(size_t n)
{
    return n == 0 ? NULL : malloc(n * sizeof(float));
}

sym_status router_workspace_init(router_workspace *ws, const sym_router_config *config,
                                 const sym_router_data *data, size_t capacity,
                                 sym_error *err)
{
    memset(ws, 0, sizeof *ws);
    ws->config = config;
    ws->data = data;
    ws->capacity = capacity;

    sym_status status;
    if (config->use_process_variant)
        status = sym_kernels_select(&ws->kernels, err);
    else
        status = sym_kernels_get(config->variant, &ws->kernels, err);
    if (status != SYM_OK)
        return sym_error_prefix(err, "router kernels");
    status = sym_router_kernels_get(ws->kernels->variant, &ws->router_kernels, err);
    if (status != SYM_OK)
        return status;

    size_t n = config->experts, h = config->hidden;
    if (capacity > SIZE_MAX / n / h / sizeof(float) / SYM_ROUTER_MAX_THREADS)
        return sym_error_set(err, SYM_ERR_LIMIT, "router: batch of %zu tokens is too large",
                             capacity);
    ws->logits = alloc_floats(capacity * n);
    ws->dlogits = alloc_floats(capacity * n);
    ws->dprobs = alloc_floats(capacity * n);
    ws->part_grad = alloc_floats(config->threads * n * h);
    int uses_experts = sym_router_objective_uses_experts(config->objective);
    if (uses_experts)
        ws->expert_out = alloc_floats(capacity * n * h);
    int distill_missing = uses_experts && ws->expert_out == NULL;
    if (ws->logits == NULL || ws->dlogits == NULL || ws->dprobs == NULL ||
        ws->part_grad == NULL || distill_missing) {
        router_workspace_free(ws);
        return sym_error_set(err, SYM_ERR_NOMEM,
                             "router: out of memory for a batch of %zu tokens x %zu experts "
                             "x %zu hidden", capacity, n, h);
    }
    return SYM_OK;
}

void router_workspace_free(router_workspace *ws)
{
    free(ws->logits);
    free(ws->dlogits);
    free(ws->dprobs);
    free(ws->expert_out);
    free(ws->part_grad);
    memset(ws, 0, sizeof *ws);
}

/* Writes the indices of the k largest of p[0..n) to order, largest first, ties to the
 * lower index. */
static void select_top_k(const float *p, size_t n, size_t k, uint32_t *order)
{
    for (size_t slot = 0; slot < k; slot++) {
        size_t best = n;
        for (size_t e = 0; e < n; e++) {
            int taken = 0;
            for (size_t s = 0; s < slot; s++)
                taken |= order[s] == e;
            if (!taken && (best == n || p[e] > p[best]))
                best = e;
        }
        order[slot] = (uint32_t)best;
    }
}

/* Replaces the probabilities p[0..n) by the renormalised weights of the experts in
 * order[0..k) and zeros elsewhere: the weights Mixtral mixes the top-k experts with. */
static void keep_top_k(float *p, size_t n, const uint32_t *order, size_t k)
{
    float kept[SYM_ROUTER_MAX_EXPERTS];
    double sum = 0.0;
    for (size_t s = 0; s < k; s++)
        sum += (double)p[order[s]];
    for (size_t s = 0; s < k; s++)
        kept[s] = (float)((double)p[order[s]] / sum);
    memset(p, 0, n * sizeof *p);
    for (size_t s = 0; s < k; s++)
        p[order[s]] = kept[s];
}

/* What every forward part needs. */
typedef struct forward_job {
    router_workspace *ws;
    const float *w;
    const uint32_t *tokens;
    size_t count;
} forward_job;

/* Forward pass of one token j of the batch: logits, log-sum-exp, softmax, top-k. */
static void forward_token(forward_job *job, size_t j, router_stats *stats)
{
    router_workspace *ws = job->ws;
    size_t n = ws->config->experts, h = ws->config->hidden;
    uint32_t token = job->tokens[j];
    uint32_t label = ws->data->labels[token];
    float *z = ws->logits + j * n;
    const double *lw = ws->config->label_weights;
    double weight = lw != NULL ? lw[label] : 1.0;

    ws->router_kernels->logits(z, job->w, ws->data->x + (size_t)token * h, 1, n, h);
    float lse = ws->kernels->logsumexp(z, n);
    stats->cross_entropy_sum += weight * ((double)lse - (double)z[label]);
    ws->kernels->softmax(z, z, n);

    uint32_t order[SYM_ROUTER_MAX_EXPERTS] = {0};
    select_top_k(z, n, ws->config->top_k, order);
    stats->top1[order[0]]++;
    stats->correct += order[0] == label;
    for (size_t s = 0; s < ws->config->top_k; s++)
        stats->topk[order[s]]++;
    for (size_t e = 0; e < n; e++)
        stats->prob_sum[e] += (double)z[e];

    if (ws->config->objective == SYM_ROUTER_DISTILL_TOPK)
        keep_top_k(z, n, order, ws->config->top_k);
    if (sym_router_objective_uses_experts(ws->config->objective)) {
        const float *y = ws->expert_out + j * n * h;
        float *dp = ws->dprobs + j * n;
        double loss = ws->router_kernels->distill_token(dp, z, y, y + label * h, n, h);
        stats->distill_sum += weight * loss;
        for (size_t e = 0; lw != NULL && e < n; e++)
            dp[e] = (float)(weight * (double)dp[e]);
    }
    stats->count++;
}

static void forward_part(void *context, unsigned part, unsigned parts)
{
    forward_job *job = context;
    router_stats *stats = &job->ws->part_stats[part];
    memset(stats, 0, sizeof *stats);
    part_range r = part_of(job->count, part, parts);
    for (size_t j = r.begin; j < r.end; j++)
        forward_token(job, j, stats);
}

static void add_stats(router_stats *total, const router_stats *part, size_t experts)
{
    total->count += part->count;
    total->correct += part->correct;
    total->cross_entropy_sum += part->cross_entropy_sum;
    total->distill_sum += part->distill_sum;
    for (size_t e = 0; e < experts; e++) {
        total->prob_sum[e] += part->prob_sum[e];
        total->top1[e] += part->top1[e];
        total->topk[e] += part->topk[e];
    }
}

sym_status router_forward(router_workspace *ws, const float *w, const uint32_t *tokens,
                          size_t count, router_stats *stats, sym_error *err)
{
    const sym_router_data *data = ws->data;
    if (sym_router_objective_uses_experts(ws->config->objective)) {
        sym_status status = data->expert_outputs(data->expert_context, tokens, count,
                                                 ws->expert_out, err);
        if (status != SYM_OK)
            return sym_error_prefix(err, "router: expert outputs");
    }

    forward_job job = {ws, w, tokens, count};
    run_parts(ws->config->threads, forward_part, &job);
    for (unsigned p = 0; p < ws->config->threads; p++)
        add_stats(stats, &ws->part_stats[p], ws->config->experts);
    return SYM_OK;
}

double router_loss(const sym_router_config *config, const router_stats *stats)
{
    double count = (double)stats->count;
    if (sym_router_objective_uses_experts(config->objective))
        return stats->distill_sum / count;

    double balance = 0.0;
    for (size_t e = 0; e < config->experts; e++)
        balance += (double)stats->top1[e] / count * (stats->prob_sum[e] / count);
    return stats->cross_entropy_sum / count + config->balance * (double)config->experts * balance;
}

/* What every backward part needs. */
typedef struct backward_job {
    router_workspace *ws;
    const uint32_t *tokens;
    size_t count;
    double balance_grad[SYM_ROUTER_MAX_EXPERTS]; /* d loss / d p_e from the balance term */
} backward_job;

/* Writes d loss / d logits of token j, given d loss / d p in dp:
 * dz_e = p_e (dp_e - sum_i p_i dp_i), the softmax Jacobian. */
static void softmax_backward(float *dz, const float *p, const double *dp, size_t n)
{
    double mean = 0.0;
    for (size_t e = 0; e < n; e++)
        mean += (double)p[e] * dp[e];
    for (size_t e = 0; e < n; e++)
        dz[e] = (float)((double)p[e] * (dp[e] - mean));
}

static void backward_token(backward_job *job, size_t j)
{
    router_workspace *ws = job->ws;
    size_t n = ws->config->experts;
    const float *p = ws->logits + j * n;
    float *dz = ws->dlogits + j * n;
    double inv_count = 1.0 / (double)job->count;

    /* For the top-k objective p contains the renormalised top-k weights and zeros
     * elsewhere, so the same Jacobian gives the gradient of the softmax over the top-k
     * logits. */
    if (sym_router_objective_uses_experts(ws->config->objective)) {
        double dp[SYM_ROUTER_MAX_EXPERTS];
        for (size_t e = 0; e < n; e++)
            dp[e] = 2.0 * inv_count * (double)ws->dprobs[j * n + e];
        softmax_backward(dz, p, dp, n);
        return;
    }

    /* Cross-entropy: weight (p - onehot(label)) / count; the balance term through the
     * softmax. */
    softmax_backward(dz, p, job->balance_grad, n);
    uint32_t label = ws->data->labels[job->tokens[j]];
    const double *lw = ws->config->label_weights;
    double scale = (lw != NULL ? lw[label] : 1.0) * inv_count;
    for (size_t e = 0; e < n; e++) {
        double onehot = e == label ? 1.0 : 0.0;
        dz[e] = (float)((double)dz[e] + ((double)p[e] - onehot) * scale);
    }
}

static void backward_part(void *context, unsigned part, unsigned parts)
{
    backward_job *job = context;
    router_workspace *ws = job->ws;
    size_t n = ws->config->experts, h = ws->config->hidden;
    float *grad = ws->part_grad + part * n * h;
    memset(grad, 0, n * h * sizeof *grad);

    part_range r = part_of(job->count, part, parts);
    for (size_t j = r.begin; j < r.end; j++) {
        backward_token(job, j);
        const float *x = ws->data->x + (size_t)job->tokens[j] * h;
        ws->router_kernels->accumulate_grad(grad, ws->dlogits + j * n, x, 1, n, h);
    }
}

void router_backward(router_workspace *ws, const uint32_t *tokens, size_t count,
                     const router_stats *stats, float *grad)
{
    const sym_router_config *c = ws->config;
    backward_job job = {ws, tokens, count, {0}};
    /* The balance term alpha N sum_e f_e P_e with P_e = mean_t p_te gives
     * d/dp_te = alpha N f_e / count, with f_e held constant. */
    for (size_t e = 0; e < c->experts; e++) {
        double f = (double)stats->top1[e] / (double)stats->count;
        job.balance_grad[e] = c->balance * (double)c->experts * f / (double)count;
    }
    run_parts(c->threads, backward_part, &job);

    size_t size = c->experts * c->hidden;
    memcpy(grad, ws->part_grad, size * sizeof *grad);
    for (unsigned p = 1; p < c->threads; p++)
        ws->kernels->add(grad, ws->part_grad + p * size, size);
}

sym_status sym_router_objective_eval(const sym_router_config *config,
                                     const sym_router_data *data, const float *w,
                                     const uint32_t *tokens, size_t count, double *loss,
                                     float *grad, sym_error *err)
{
    sym_status status = router_check(config, data, err);
    if (status != SYM_OK)
        return status;
    if (count == 0)
        return sym_error_set(err, SYM_ERR_INVALID, "router: empty batch");
    for (size_t j = 0; j < count; j++) {
        if (tokens[j] >= data->tokens)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "router: token index %u out of range (%zu tokens)",
                                 tokens[j], data->tokens);
    }

    router_workspace ws;
    status = router_workspace_init(&ws, config, data, count, err);
    if (status != SYM_OK)
        return status;
    router_stats stats;
    memset(&stats, 0, sizeof stats);
    status = router_forward(&ws, w, tokens, count, &stats, err);
    if (status == SYM_OK) {
        *loss = router_loss(config, &stats);
        if (grad != NULL)
            router_backward(&ws, tokens, count, &stats, grad);
    }
    router_workspace_free(&ws);
    return status;
}
