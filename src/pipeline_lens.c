/* Domain weights of the router loss, from the logit lens of the merged model.
 *
 * The squared error of the distillation objective is in the units of the FFN output, so
 * it does not measure how much a token's next-token prediction suffers when its own
 * expert is diluted. That cost differs a lot between domains: text that only one expert
 * models well (code, for instance) loses far more than text that every expert models
 * about as well. For each domain d this file estimates that cost at layer l as the mean
 * over sampled tokens of
 *
 *     sqrt( KL( lens(h + y_d) || lens(h + mean_e y_e) ) ),
 *     lens(v) = softmax(lm_head(final_norm(v))),
 *
 * where h is the residual stream after the layer's attention and y_e expert e's output.
 * The KL divergence is second order in the change of the logits, while a token's
 * log-likelihood changes to first order, so its square root is the scale of that change.
 * The weights are these means scaled so that their mean over all calibration tokens is
 * 1. Only the final norm and lm_head are read, in row blocks, and nothing is
 * backpropagated through the model. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_internal.h"

/* Tokens sampled per domain, and lm_head rows multiplied per block. The KL of single
 * tokens is heavy-tailed, so a domain's mean needs hundreds of them to settle. */
#define LENS_SAMPLES 1024
#define LENS_BLOCK_ROWS 512

/* Running softmax statistics of one pair of logit rows a (own expert) and b (mixture),
 * relative to their running maxima: sum_a = sum_k exp(a_k - max_a),
 * cross = sum_k exp(a_k - max_a) (a_k - b_k), sum_b likewise. */
typedef struct lens_pair {
    double max_a, sum_a, cross, max_b, sum_b;
} lens_pair;

/* The lm_head consumer: rows arrive in order, in pieces of any length. */
typedef struct lens_state {
    const float *z;  /* [2 * samples, hidden]: normalised states, own then mixture */
    size_t samples, hidden;
    float *block;    /* [LENS_BLOCK_ROWS, hidden] lm_head rows */
    size_t filled;   /* floats in block */
    float *logits;   /* [2 * samples, LENS_BLOCK_ROWS] */
    lens_pair *pairs; /* [samples] */
} lens_state;

static void pair_update(lens_pair *s, const float *a, const float *b, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        double ak = a[k], bk = b[k];
        if (ak > s->max_a) {
            double scale = exp(s->max_a - ak);
            s->sum_a *= scale;
            s->cross *= scale;
            s->max_a = ak;
        }
        if (bk > s->max_b) {
            s->sum_b *= exp(s->max_b - bk);
            s->max_b = bk;
        }
        double pa = exp(ak - s->max_a);
        s->sum_a += pa;
        s->cross += pa * (ak - bk);
        s->sum_b += exp(bk - s->max_b);
    }
}

/* KL(softmax(a) || softmax(b)) = sum_k p_k (a_k - b_k) - lse(a) + lse(b). */
static double pair_kl(const lens_pair *s)
{
    double lse_a = s->max_a + log(s->sum_a), lse_b = s->max_b + log(s->sum_b);
    double kl = s->cross / s->sum_a - lse_a + lse_b;
    return kl > 0.0 ? kl : 0.0; /* rounding can make a KL of 0 slightly negative */
}

static void flush_block(lens_state *st)
{
    size_t rows = st->filled / st->hidden, m = 2 * st->samples;
    if (rows == 0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)st->hidden,
                1.0f, st->z, (int)st->hidden, st->block, (int)st->hidden, 0.0f, st->logits,
                (int)rows);
    for (size_t i = 0; i < st->samples; i++)
        pair_update(&st->pairs[i], st->logits + 2 * i * rows, st->logits + (2 * i + 1) * rows,
                    rows);
    st->filled = 0;
}

static sym_status lens_write(void *context, const float *values, size_t count, sym_error *err)
{
    (void)err;
    lens_state *st = context;
    size_t capacity = (size_t)LENS_BLOCK_ROWS * st->hidden;
    while (count > 0) {
        size_t take = capacity - st->filled < count ? capacity - st->filled : count;
        memcpy(st->block + st->filled, values, take * sizeof *values);
        st->filled += take;
        values += take;
        count -= take;
        if (st->filled == capacity)
            flush_block(st);
    }
    return SYM_OK;
}

/* Picks up to LENS_SAMPLES tokens of every domain, evenly spaced over its tokens, leaving
 * out the first position of each sequence (BOS, the same state in every domain). Returns
 * the count written to picks. */
static size_t pick_samples(const sym_lens_input *in, uint32_t *picks)
{
    size_t total = 0;
    for (size_t d = 0; d < in->experts; d++) {
        size_t count = 0;
        for (size_t t = 0; t < in->tokens; t++)
            count += in->labels[t] == d && t % in->seq_len != 0;
        size_t want = count < LENS_SAMPLES ? count : LENS_SAMPLES;
        size_t seen = 0, next = 0;
        for (size_t t = 0; t < in->tokens && next < want; t++) {
            if (in->labels[t] != d || t % in->seq_len == 0)
                continue;
            /* Sample i is the token at index floor((i + 1/2) count / want) of the domain. */
            if (seen == (2 * next + 1) * count / (2 * want)) {
                picks[total++] = (uint32_t)t;
                next++;
            }
            seen++;
        }
    }
    return total;
}

/* Builds z: for sample i, row 2i = final_norm(h + y_label), row 2i + 1 =
 * final_norm(h + mean_e y_e). The expert outputs come from in->y when it is set, else
 * from y [samples, experts, hidden]. */
static void lens_states(const sym_lens_input *in, const uint32_t *picks, size_t samples,
                        const float *y, const float *norm, float *z)
{
    size_t d = in->hidden, n = in->experts;
    for (size_t i = 0; i < samples; i++) {
        const float *h = in->h + (size_t)picks[i] * d;
        const float *yi = in->y != NULL ? in->y + (size_t)picks[i] * n * d : y + i * n * d;
        const float *own = yi + (size_t)in->labels[picks[i]] * d;
        float *za = z + 2 * i * d, *zb = za + d;
        for (size_t c = 0; c < d; c++) {
            double mean = 0.0;
            for (size_t e = 0; e < n; e++)
                mean += (double)yi[e * d + c];
            za[c] = h[c] + own[c];
            zb[c] = (float)((double)h[c] + mean / (double)n);
        }
        for (float *row = za; row <= zb; row += d) {
            double squares = 0.0;
            for (size_t c = 0; c < d; c++)
                squares += (double)row[c] * (double)row[c];
            float scale = (float)(1.0 / sqrt(squares / (double)d + (double)in->eps));
            for (size_t c = 0; c < d; c++)
                row[c] = norm[c] * (row[c] * scale);
        }
    }
}

/* Computes the experts' outputs on the sampled tokens into y [samples, experts, hidden].
 * NOTE: only merges whose expert outputs exceed SYM_EXPERT_CACHE_BYTES take this path,
 * and no test reaches that size. */
static sym_status sample_outputs(const sym_lens_input *in, const uint32_t *picks,
                                 size_t samples, float *y, sym_error *err)
{
    size_t d = in->hidden;
    float *x = malloc(samples * d * sizeof *x + 1);
    if (x == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "logit lens: out of memory");
    for (size_t i = 0; i < samples; i++)
        memcpy(x + i * d, in->x + (size_t)picks[i] * d, d * sizeof *x);
    sym_status s = sym_merged_experts(in->layer, x, samples, y, err);
    free(x);
    return s;
}

/* Scales the domains' mean costs to weights whose mean over all calibration tokens is 1.
 * Every weight is 1 when no domain's predictions change (identical experts). */
static void normalise(const sym_lens_input *in, const double *cost_sum, const size_t *picked,
                      double *weights)
{
    double mean[SYM_MAX_SOURCES], total = 0.0;
    size_t tokens = 0;
    for (size_t d = 0; d < in->experts; d++) {
        mean[d] = picked[d] > 0 ? cost_sum[d] / (double)picked[d] : 0.0;
        /* A domain without samples keeps weight 1 and is left out of the scaling. */
        if (picked[d] > 0) {
            total += mean[d] * (double)in->per_domain[d];
            tokens += in->per_domain[d];
        }
    }
    double scale = total > 0.0 && isfinite(total) ? (double)tokens / total : 0.0;
    for (size_t d = 0; d < in->experts; d++)
        weights[d] = scale > 0.0 && picked[d] > 0 ? mean[d] * scale : 1.0;
}

sym_status sym_lens_domain_weights(const sym_lens_input *in, double *weights, sym_error *err)
{
    size_t d = in->hidden, n = in->experts;
    size_t cap = n * LENS_SAMPLES;
    uint32_t *picks = malloc(cap * sizeof *picks);
    float *y = in->y == NULL ? malloc(cap * n * d * sizeof *y) : NULL;
    float *z = malloc(2 * cap * d * sizeof *z);
    float *norm = malloc(d * sizeof *norm);
    lens_state st = {.z = z, .hidden = d};
    st.block = malloc((size_t)LENS_BLOCK_ROWS * d * sizeof *st.block);
    st.logits = malloc(2 * cap * LENS_BLOCK_ROWS * sizeof *st.logits);
    st.pairs = malloc(cap * sizeof *st.pairs);
    sym_status s = SYM_OK;
    if (picks == NULL || (in->y == NULL && y == NULL) || z == NULL || norm == NULL ||
        st.block == NULL || st.logits == NULL || st.pairs == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "logit lens: out of memory");

    if (s == SYM_OK) {
        st.samples = pick_samples(in, picks);
        if (in->y == NULL)
            s = sample_outputs(in, picks, st.samples, y, err);
    }
    if (s == SYM_OK)
        s = sym_pipeline_produce(in->sources, SYM_JOB_NORM, SYM_ROLE_FINAL_NORM, -1, norm, d,
                                 err);
    if (s == SYM_OK) {
        lens_states(in, picks, st.samples, y, norm, z);
        for (size_t i = 0; i < st.samples; i++)
            st.pairs[i] = (lens_pair){-INFINITY, 0.0, 0.0, -INFINITY, 0.0};
        /* lm_head is fused again at every layer: keeping it in f32 (655 MB at 13B width)
         * would not fit the memory budget of the calibrated merge. */
        sym_tensor_job job = {SYM_JOB_LM_HEAD, SYM_ROLE_LM_HEAD, -1, -1};
        sym_tensor_sink sink = {lens_write, &st};
        s = sym_produce_tensor(in->sources, &job, &sink, err);
        if (s == SYM_OK)
            flush_block(&st);
    }
    if (s == SYM_OK) {
        double cost_sum[SYM_MAX_SOURCES] = {0};
        size_t picked[SYM_MAX_SOURCES] = {0};
        for (size_t i = 0; i < st.samples; i++) {
            uint32_t label = in->labels[picks[i]];
            cost_sum[label] += sqrt(pair_kl(&st.pairs[i]));
            picked[label]++;
        }
        normalise(in, cost_sum, picked, weights);
    }
    free(picks);
    free(y);
    free(z);
    free(norm);
    free(st.block);
    free(st.logits);
    free(st.pairs);
    return s;
}
