/* Whole-model passes: perplexity, logits of one sequence, and generation. */
#include "forward_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Runs every layer over a batch already embedded in hidden. */
static sym_status run_layers(sym_forward *fw, float *hidden, size_t n_seq, size_t seq_len,
                             size_t pos0, bool use_cache, sym_error *err)
{
    int layers = (int)fw->cfg.num_hidden_layers;
    for (int l = 0; l < layers; l++) {
        sym_status st = fwd_run_layer(fw, l, hidden, n_seq, seq_len, pos0, use_cache, NULL, err);
        if (st != SYM_OK)
            return st;
        if (fw->opt.progress != NULL)
            fw->opt.progress(fw->opt.progress_ctx, l, layers, (uint64_t)(n_seq * seq_len));
    }
    return SYM_OK;
}

/* Builds inputs [BOS] + c[:-1] and targets c for chunks first..first+n_seq-1. */
static void build_batch(const int32_t *ids, size_t first, size_t n_seq, size_t len, int32_t bos,
                        int32_t *inputs, int32_t *targets)
{
    for (size_t s = 0; s < n_seq; s++) {
        const int32_t *chunk = ids + (first + s) * len;
        inputs[s * len] = bos;
        memcpy(inputs + s * len + 1, chunk, (len - 1) * sizeof *chunk);
        memcpy(targets + s * len, chunk, len * sizeof *chunk);
    }
}

static sym_status eval_batches(sym_forward *fw, const int32_t *ids, size_t chunks,
                               sym_eval_result *res, sym_error *err)
{
    size_t len = (size_t)fw->opt.seq_len, d = (size_t)fw->cfg.hidden_size;
    size_t cap = fw->batch_tokens;
    float *hidden = malloc(cap * d * sizeof *hidden);
    int32_t *inputs = malloc(cap * 2 * sizeof *inputs);
    sym_status st = SYM_OK;
    if (hidden == NULL || inputs == NULL)
        st = sym_error_set(err, SYM_ERR_NOMEM, "out of memory for a batch of %zu tokens", cap);
    int32_t *targets = inputs + cap;
    for (size_t first = 0; first < chunks && st == SYM_OK; first += fw->batch_seqs) {
        size_t n_seq = chunks - first < fw->batch_seqs ? chunks - first : fw->batch_seqs;
        build_batch(ids, first, n_seq, len, (int32_t)fw->cfg.bos_token_id, inputs, targets);
        fw->last_pass = first + n_seq == chunks;
        st = sym_forward_embed(fw, inputs, n_seq * len, hidden, err);
        if (st == SYM_OK)
            st = run_layers(fw, hidden, n_seq, len, 0, false, err);
        double t0 = fwd_seconds();
        if (st == SYM_OK)
            st = sym_forward_nll(fw, hidden, targets, n_seq * len, &res->nll_sum, err);
        fw->timing.head += fwd_seconds() - t0;
        res->batches++;
    }
    free(hidden);
    free(inputs);
    return st;
}

sym_status sym_eval_perplexity(const sym_model *model, const int32_t *ids, size_t n_ids,
                               const sym_forward_options *options, sym_eval_result *result,
                               sym_error *err)
{
    const sym_model_config *c = sym_model_get_config(model);
    memset(result, 0, sizeof *result);
    if (c->bos_token_id < 0)
        return sym_error_set(err, SYM_ERR_NOT_FOUND,
                             "%s/config.json: 'bos_token_id' is missing; perplexity chunks "
                             "start with BOS", sym_model_dir(model));
    size_t len = options->seq_len > 0 ? (size_t)options->seq_len : 0;
    size_t chunks = len > 0 ? n_ids / len : 0;
    if (chunks == 0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%zu ids are fewer than one chunk of %zu; use a longer text or "
                             "a smaller --seq-len", n_ids, len);
    sym_forward_options opt = *options;
    if (opt.max_sequences <= 0 || (size_t)opt.max_sequences > chunks)
        opt.max_sequences = (int)(chunks < 65536 ? chunks : 65536);
    sym_forward *fw;
    sym_status st = sym_forward_create(&fw, model, &opt, err);
    if (st != SYM_OK)
        return st;
    st = eval_batches(fw, ids, chunks, result, err);
    result->timing = fw->timing;
    sym_forward_free(fw);
    if (st != SYM_OK)
        return st;
    result->chunks = chunks;
    result->tokens = (uint64_t)(chunks * len);
    result->ppl = exp(result->nll_sum / (double)result->tokens);
    return SYM_OK;
}

sym_status sym_forward_sequence_logits(const sym_model *model, const int32_t *ids, size_t n,
                                       const sym_forward_options *options, float *logits,
                                       sym_error *err)
{
    sym_forward_options opt = *options;
    opt.seq_len = (int)n;
    opt.max_sequences = 1;
    sym_forward *fw;
    sym_status st = sym_forward_create(&fw, model, &opt, err);
    if (st != SYM_OK)
        return st;
    float *hidden = malloc(n * (size_t)fw->cfg.hidden_size * sizeof *hidden);
    if (hidden == NULL)
        st = sym_error_set(err, SYM_ERR_NOMEM, "out of memory for %zu hidden states", n);
    fw->last_pass = true;
    if (st == SYM_OK)
        st = sym_forward_embed(fw, ids, n, hidden, err);
    if (st == SYM_OK)
        st = run_layers(fw, hidden, 1, n, 0, false, err);
    if (st == SYM_OK)
        st = sym_forward_logits(fw, hidden, n, logits, err);
    free(hidden);
    sym_forward_free(fw);
    return st;
}

/* splitmix64: a small, seedable generator; sampling needs nothing stronger. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int32_t pick_token(const float *logits, size_t vocab, double temperature,
                          uint64_t *rng)
{
    size_t best = 0;
    for (size_t i = 1; i < vocab; i++)
        best = logits[i] > logits[best] ? i : best;
    if (temperature <= 0)
        return (int32_t)best;
    double sum = 0;
    for (size_t i = 0; i < vocab; i++)
        sum += exp(((double)logits[i] - (double)logits[best]) / temperature);
    double u = (double)(next_random(rng) >> 11) * 0x1.0p-53 * sum;
    for (size_t i = 0; i < vocab; i++) {
        u -= exp(((double)logits[i] - (double)logits[best]) / temperature);
        if (u < 0)
            return (int32_t)i;
    }
    return (int32_t)best;
}

/* Runs n ids at positions pos0.. through every layer with the cache; returns the last
 * token's logits. */
static sym_status step(sym_forward *fw, const int32_t *ids, size_t n, size_t pos0,
                       float *hidden, float *logits, sym_error *err)
{
    size_t d = (size_t)fw->cfg.hidden_size;
    sym_status st = sym_forward_embed(fw, ids, n, hidden, err);
    if (st == SYM_OK)
        st = run_layers(fw, hidden, 1, n, pos0, true, err);
    if (st == SYM_OK)
        st = sym_forward_logits(fw, hidden + (n - 1) * d, 1, logits, err);
    return st;
}

static sym_status generate_tokens(sym_forward *fw, const int32_t *prompt, size_t n_prompt,
                                  const sym_generate_options *gen, float *hidden,
                                  float *logits, int32_t *out, size_t *n_out, sym_error *err)
{
    uint64_t rng = gen->seed;
    size_t vocab = (size_t)fw->cfg.vocab_size;
    sym_status st = step(fw, prompt, n_prompt, 0, hidden, logits, err);
    for (size_t i = 0; i < gen->max_new_tokens && st == SYM_OK; i++) {
        int32_t id = pick_token(logits, vocab, gen->temperature, &rng);
        out[(*n_out)++] = id;
        if (id == gen->eos_token_id || i + 1 == gen->max_new_tokens)
            break;
        st = step(fw, &id, 1, n_prompt + i, hidden, logits, err);
    }
    return st;
}

sym_status sym_generate(const sym_model *model, const int32_t *prompt, size_t n_prompt,
                        const sym_generate_options *gen, const sym_forward_options *options,
                        int32_t *out, size_t *n_out, sym_error *err)
{
    const sym_model_config *c = sym_model_get_config(model);
    *n_out = 0;
    if (n_prompt == 0)
        return sym_error_set(err, SYM_ERR_INVALID, "the prompt is empty; it needs one id at "
                             "least (BOS)");
    if (n_prompt + gen->max_new_tokens > (size_t)c->max_position_embeddings)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%zu prompt ids + %zu new tokens exceed max_position_embeddings "
                             "%lld of %s", n_prompt, gen->max_new_tokens,
                             (long long)c->max_position_embeddings, sym_model_dir(model));
    sym_forward_options opt = *options;
    opt.seq_len = (int)n_prompt;
    opt.max_sequences = 1;
    opt.kv_positions = (int)(n_prompt + gen->max_new_tokens);
    sym_forward *fw;
    sym_status st = sym_forward_create(&fw, model, &opt, err);
    if (st != SYM_OK)
        return st;
    float *hidden = malloc(n_prompt * (size_t)c->hidden_size * sizeof *hidden);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    if (hidden == NULL || logits == NULL)
        st = sym_error_set(err, SYM_ERR_NOMEM, "out of memory for generation");
    if (st == SYM_OK)
        st = generate_tokens(fw, prompt, n_prompt, gen, hidden, logits, out, n_out, err);
    free(hidden);
    free(logits);
    sym_forward_free(fw);
    return st;
}
