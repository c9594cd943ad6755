/* The router training loop: settings, held-out split, initial gates, mini-batches, AdamW
 * steps and the per-layer report. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "router_internal.h"

/* Independent random streams drawn from one seed. */
#define STREAM_SPLIT 0x73706c6974000001u
#define STREAM_BATCH 0x6261746368000002u
#define STREAM_GATE 0x6761746500000003u

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64. */
typedef struct router_rng {
    uint64_t s[4];
} router_rng;

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void rng_seed(router_rng *rng, uint64_t seed, uint64_t stream)
{
    uint64_t state = seed ^ stream;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64(&state);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(router_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, bound), by rejection so that no value is favoured. */
static uint64_t rng_below(router_rng *rng, uint64_t bound)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t r;
    do {
        r = rng_next(rng);
    } while (r >= limit);
    return r % bound;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_unit(router_rng *rng)
{
    return (double)(rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Fisher-Yates shuffle. */
static void shuffle(uint32_t *items, size_t n, router_rng *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rng_below(rng, i);
        uint32_t tmp = items[i - 1];
        items[i - 1] = items[j];
        items[j] = tmp;
    }
}

static const char *const objective_names[] = {
    [SYM_ROUTER_DOMAIN] = "classify",
    [SYM_ROUTER_DISTILL] = "distill",
    [SYM_ROUTER_DISTILL_TOPK] = "distill-topk",
};

const char *sym_router_objective_name(sym_router_objective objective)
{
    size_t i = (size_t)objective;
    return i < sizeof objective_names / sizeof objective_names[0] ? objective_names[i] : NULL;
}

int sym_router_objective_parse(const char *name, sym_router_objective *objective)
{
    for (size_t i = 0; i < sizeof objective_names / sizeof objective_names[0]; i++) {
        if (strcmp(name, objective_names[i]) == 0) {
            *objective = (sym_router_objective)i;
            return 1;
        }
    }
    return 0;
}

int sym_router_objective_uses_experts(sym_router_objective objective)
{
    return objective == SYM_ROUTER_DISTILL || objective == SYM_ROUTER_DISTILL_TOPK;
}

void sym_router_config_init(sym_router_config *config, size_t experts, size_t hidden)
{
    memset(config, 0, sizeof *config);
    config->experts = experts;
    config->hidden = hidden;
    config->top_k = experts < 2 ? experts : 2;
    config->objective = SYM_ROUTER_DOMAIN;
    config->gate_mode = SYM_ROUTER_GATE_ZERO;
    config->lr = 1e-3;
    config->beta1 = 0.9;
    config->beta2 = 0.999;
    config->eps = 1e-8;
    config->weight_decay = 0.0;
    config->steps = 500;
    config->batch_size = 256;
    config->seed = 0;
    config->holdout_fraction = 0.1;
    config->balance = 0.01;
    config->threads = 1;
    config->variant = SYM_SIMD_SCALAR;
    config->use_process_variant = 1;
}

void sym_router_adamw_init(sym_router_adamw *step, const sym_router_config *config,
                           uint64_t t)
{
    double bias1 = 1.0 - pow(config->beta1, (double)t);
    double bias2 = 1.0 - pow(config->beta2, (double)t);
    step->beta1 = (float)config->beta1;
    step->one_minus_beta1 = (float)(1.0 - config->beta1);
    step->beta2 = (float)config->beta2;
    step->one_minus_beta2 = (float)(1.0 - config->beta2);
    step->eps = (float)config->eps;
    step->decay = (float)(1.0 - config->lr * config->weight_decay);
    step->step_size = (float)(config->lr / bias1);
    step->bias2_sqrt = (float)sqrt(bias2);
}

sym_status sym_router_dense_experts(void *context, const uint32_t *tokens, size_t count,
                                    float *out, sym_error *err)
{
    (void)err;
    const sym_router_dense *dense = context;
    size_t row = dense->experts * dense->hidden;
    for (size_t j = 0; j < count; j++)
        memcpy(out + j * row, dense->y + (size_t)tokens[j] * row, row * sizeof *out);
    return SYM_OK;
}

static int in_range(double value, double low, double high)
{
    return value >= low && value < high;
}

/* Checks the optimiser, split and initialisation settings. */
static sym_status check_training(const sym_router_config *c, const sym_router_data *data,
                                 sym_error *err)
{
    if (!(c->lr > 0.0) || !isfinite(c->lr))
        return sym_error_set(err, SYM_ERR_INVALID, "router: lr %g; expected finite, > 0",
                             c->lr);
    if (!in_range(c->beta1, 0.0, 1.0) || !in_range(c->beta2, 0.0, 1.0))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: betas %g, %g; expected each in [0, 1)", c->beta1,
                             c->beta2);
    if (!(c->eps > 0.0) || !isfinite(c->eps))
        return sym_error_set(err, SYM_ERR_INVALID, "router: eps %g; expected finite, > 0",
                             c->eps);
    if (!(c->weight_decay >= 0.0) || !(c->lr * c->weight_decay < 1.0))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: weight decay %g; expected >= 0 with lr * decay < 1",
                             c->weight_decay);
    if (!in_range(c->holdout_fraction, 0.0, 1.0))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: held-out fraction %g; expected in [0, 1)",
                             c->holdout_fraction);
    if (c->batch_size < 1)
        return sym_error_set(err, SYM_ERR_INVALID, "router: batch size 0");
    if (data->tokens < 2 || data->tokens > UINT32_MAX)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: %zu tokens; expected 2 to %u", data->tokens,
                             UINT32_MAX);
    if (c->gate_mode == SYM_ROUTER_GATE_ROWS && c->init_rows == NULL)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: gate mode 'rows' needs init_rows");
    if (c->gate_mode != SYM_ROUTER_GATE_ZERO && c->gate_mode != SYM_ROUTER_GATE_RANDOM &&
        c->gate_mode != SYM_ROUTER_GATE_ROWS)
        return sym_error_set(err, SYM_ERR_INVALID, "router: unknown gate mode %d",
                             (int)c->gate_mode);
    return SYM_OK;
}

static void init_gates(const sym_router_config *c, float *w)
{
    size_t size = c->experts * c->hidden;
    if (c->gate_mode == SYM_ROUTER_GATE_ROWS) {
        memcpy(w, c->init_rows, size * sizeof *w);
        return;
    }
    memset(w, 0, size * sizeof *w);
    if (c->gate_mode != SYM_ROUTER_GATE_RANDOM)
        return;
    /* The bound of torch.nn.Linear's default initialisation. */
    router_rng rng;
    rng_seed(&rng, c->seed, STREAM_GATE);
    double bound = 1.0 / sqrt((double)c->hidden);
    for (size_t i = 0; i < size; i++)
        w[i] = (float)((2.0 * rng_unit(&rng) - 1.0) * bound);
}

/* State of one run: the split, the batch stream and the optimiser's moments. */
typedef struct trainer {
    const sym_router_config *config;
    const sym_router_data *data;
    router_workspace ws;
    uint32_t *order;        /* [tokens]: held-out tokens first, then training tokens */
    size_t holdout_count, train_count, batch;
    uint32_t *train_order;  /* [train_count], reshuffled every epoch */
    size_t cursor;
    router_rng batch_rng;
    float *grad, *m, *v;    /* [experts, hidden] */
} trainer;

static void trainer_free(trainer *tr)
{
    router_workspace_free(&tr->ws);
    free(tr->order);
    free(tr->train_order);
    free(tr->grad);
    free(tr->m);
    free(tr->v);
}

/* Splits the tokens: the first round(fraction * T) of a seeded permutation are held out,
 * never all of them. */
static void split_tokens(trainer *tr)
{
    size_t count = tr->data->tokens;
    for (size_t t = 0; t < count; t++)
        tr->order[t] = (uint32_t)t;
    router_rng rng;
    rng_seed(&rng, tr->config->seed, STREAM_SPLIT);
    shuffle(tr->order, count, &rng);

    size_t held = (size_t)llround(tr->config->holdout_fraction * (double)count);
    tr->holdout_count = held < count ? held : count - 1;
    tr->train_count = count - tr->holdout_count;
    memcpy(tr->train_order, tr->order + tr->holdout_count,
           tr->train_count * sizeof *tr->train_order);
}

static sym_status trainer_init(trainer *tr, const sym_router_config *config,
                               const sym_router_data *data, sym_error *err)
{
    memset(tr, 0, sizeof *tr);
    tr->config = config;
    tr->data = data;
    size_t size = config->experts * config->hidden;
    tr->order = malloc(data->tokens * sizeof *tr->order);
    tr->train_order = malloc(data->tokens * sizeof *tr->train_order);
    tr->grad = calloc(size, sizeof *tr->grad);
    tr->m = calloc(size, sizeof *tr->m);
    tr->v = calloc(size, sizeof *tr->v);
    if (tr->order == NULL || tr->train_order == NULL || tr->grad == NULL || tr->m == NULL ||
        tr->v == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "router: out of memory for %zu tokens",
                             data->tokens);

    split_tokens(tr);
    tr->batch = config->batch_size < tr->train_count ? config->batch_size : tr->train_count;
    rng_seed(&tr->batch_rng, config->seed, STREAM_BATCH);
    shuffle(tr->train_order, tr->train_count, &tr->batch_rng);
    return router_workspace_init(&tr->ws, config, data, tr->batch, err);
}

/* Returns the next mini-batch: consecutive tokens of the shuffled training split, which is
 * reshuffled when fewer than a full batch remain. */
static const uint32_t *next_batch(trainer *tr)
{
    if (tr->cursor + tr->batch > tr->train_count) {
        shuffle(tr->train_order, tr->train_count, &tr->batch_rng);
        tr->cursor = 0;
    }
    const uint32_t *batch = tr->train_order + tr->cursor;
    tr->cursor += tr->batch;
    return batch;
}

/* Runs the forward pass over a whole split in batch-sized chunks. */
static sym_status evaluate(trainer *tr, const float *w, const uint32_t *tokens, size_t count,
                           router_stats *stats, sym_error *err)
{
    memset(stats, 0, sizeof *stats);
    for (size_t begin = 0; begin < count; begin += tr->batch) {
        size_t chunk = count - begin < tr->batch ? count - begin : tr->batch;
        sym_status status = router_forward(&tr->ws, w, tokens + begin, chunk, stats, err);
        if (status != SYM_OK)
            return status;
    }
    return SYM_OK;
}

static sym_status train_step(trainer *tr, float *w, uint64_t step, sym_error *err)
{
    const sym_router_config *c = tr->config;
    const uint32_t *batch = next_batch(tr);
    router_stats stats;
    memset(&stats, 0, sizeof stats);
    sym_status status = router_forward(&tr->ws, w, batch, tr->batch, &stats, err);
    if (status != SYM_OK)
        return status;
    double loss = router_loss(c, &stats);
    if (!isfinite(loss))
        return sym_error_set(err, SYM_ERR_NONFINITE,
                             "router: loss %g at step %llu; lower lr or check the hidden "
                             "states for NaN or Inf", loss, (unsigned long long)step);

    router_backward(&tr->ws, batch, tr->batch, &stats, tr->grad);
    sym_router_adamw adamw;
    sym_router_adamw_init(&adamw, c, step);
    tr->ws.router_kernels->adamw(w, tr->grad, tr->m, tr->v, c->experts * c->hidden, &adamw);
    return SYM_OK;
}

static sym_status check_finite_weights(const trainer *tr, const float *w, sym_error *err)
{
    size_t size = tr->config->experts * tr->config->hidden;
    for (size_t i = 0; i < size; i++) {
        if (!isfinite(w[i]))
            return sym_error_set(err, SYM_ERR_NONFINITE,
                                 "router: weight [%zu, %zu] is %g after training; lower lr",
                                 i / tr->config->hidden, i % tr->config->hidden, (double)w[i]);
    }
    return SYM_OK;
}

/* Fills the report from the final router: losses and accuracy per split, load overall. */
static sym_status fill_report(trainer *tr, const float *w, sym_router_report *report,
                              sym_error *err)
{
    const sym_router_config *c = tr->config;
    router_stats train_stats, held_stats;
    sym_status status = evaluate(tr, w, tr->order + tr->holdout_count, tr->train_count,
                                 &train_stats, err);
    if (status == SYM_OK)
        status = evaluate(tr, w, tr->order, tr->holdout_count, &held_stats, err);
    if (status != SYM_OK)
        return status;

    report->train_tokens = tr->train_count;
    report->holdout_tokens = tr->holdout_count;
    report->steps = c->steps;
    report->train_loss = router_loss(c, &train_stats);
    report->train_accuracy = (double)train_stats.correct / (double)train_stats.count;
    report->holdout_loss = NAN;
    report->holdout_accuracy = NAN;
    if (held_stats.count > 0) {
        report->holdout_loss = router_loss(c, &held_stats);
        report->holdout_accuracy = (double)held_stats.correct / (double)held_stats.count;
    }
    double slots = (double)(tr->data->tokens * c->top_k);
    for (size_t e = 0; e < c->experts; e++)
        report->expert_load[e] = (double)(train_stats.topk[e] + held_stats.topk[e]) / slots;
    return SYM_OK;
}

static sym_status run_training(trainer *tr, float *w, sym_router_report *report,
                               sym_error *err)
{
    const sym_router_config *c = tr->config;
    init_gates(c, w);
    if (report != NULL) {
        memset(report, 0, sizeof *report);
        router_stats stats;
        sym_status status = evaluate(tr, w, tr->order + tr->holdout_count, tr->train_count,
                                     &stats, err);
        if (status != SYM_OK)
            return status;
        report->initial_train_loss = router_loss(c, &stats);
    }

    for (uint64_t step = 1; step <= c->steps; step++) {
        sym_status status = train_step(tr, w, step, err);
        if (status != SYM_OK)
            return status;
    }
    sym_status status = check_finite_weights(tr, w, err);
    if (status != SYM_OK || report == NULL)
        return status;
    return fill_report(tr, w, report, err);
}

sym_status sym_router_train(const sym_router_config *config, const sym_router_data *data,
                            float *w, sym_router_report *report, sym_error *err)
{
    sym_status status = router_check(config, data, err);
    if (status == SYM_OK)
        status = check_training(config, data, err);
    if (status != SYM_OK)
        return status;

    trainer tr;
    status = trainer_init(&tr, config, data, err);
    if (status == SYM_OK)
        status = run_training(&tr, w, report, err);
    trainer_free(&tr);
    return status;
}

sym_status sym_router_route(const float *w, size_t experts, size_t hidden, const float *x,
                            size_t top_k, uint32_t *experts_out, float *weights_out,
                            sym_error *err)
{
    if (experts < 1 || experts > SYM_ROUTER_MAX_EXPERTS || top_k < 1 || top_k > experts)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "router: top_k %zu of %zu experts; expected 1 <= top_k <= "
                             "experts <= %d", top_k, experts, SYM_ROUTER_MAX_EXPERTS);
    const sym_kernels *kernels;
    const sym_router_kernels *router_kernels;
    sym_status status = sym_kernels_select(&kernels, err);
    if (status == SYM_OK)
        status = sym_router_kernels_get(kernels->variant, &router_kernels, err);
    if (status != SYM_OK)
        return status;

    float p[SYM_ROUTER_MAX_EXPERTS];
    router_kernels->logits(p, w, x, 1, experts, hidden);
    kernels->softmax(p, p, experts);
    float total = 0.0f;
    for (size_t s = 0; s < top_k; s++) {
        size_t best = experts;
        for (size_t e = 0; e < experts; e++) {
            if (p[e] >= 0.0f && (best == experts || p[e] > p[best]))
                best = e;
        }
        if (best == experts)
            return sym_error_set(err, SYM_ERR_NONFINITE, "router: probabilities are NaN");
        experts_out[s] = (uint32_t)best;
        weights_out[s] = p[best];
        total += p[best];
        p[best] = -1.0f;
    }
    for (size_t s = 0; s < top_k; s++)
        weights_out[s] /= total;
    return SYM_OK;
}
