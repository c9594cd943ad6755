/* Forward pass: the memory plan, layer loading and one decoder layer. */
#include "forward_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward_ops.h"

#define HEAD_ROWS_MAX 4096u
#define HEAD_TOKENS_MAX 256u

void sym_forward_options_init(sym_forward_options *options)
{
    memset(options, 0, sizeof *options);
    options->threads = 1;
    options->seq_len = 128;
    options->prefetch = SYM_PREFETCH_READ;
    options->force_expert = -1;
}

/* f32 elements of one layer's weights. */
static uint64_t layer_weight_floats(const sym_model_config *c, size_t experts)
{
    uint64_t d = (uint64_t)c->hidden_size, f = (uint64_t)c->intermediate_size;
    uint64_t qd = (uint64_t)(c->num_attention_heads * c->head_dim);
    uint64_t kvd = (uint64_t)(c->num_key_value_heads * c->head_dim);
    uint64_t router = c->num_local_experts > 0 ? experts * d : 0;
    return 2 * d + 2 * qd * d + 2 * kvd * d + router + experts * 3 * f * d;
}

/* f32 elements of activations per token, including the caller's hidden-state buffer. */
static uint64_t token_floats(const sym_model_config *c, size_t experts, bool moe)
{
    uint64_t d = (uint64_t)c->hidden_size, f = (uint64_t)c->intermediate_size;
    uint64_t qd = (uint64_t)(c->num_attention_heads * c->head_dim);
    uint64_t kvd = (uint64_t)(c->num_key_value_heads * c->head_dim);
    uint64_t n = 3 * d + 2 * qd + 2 * kvd + 2 * f;
    if (moe)
        n += 2 * d + 2 * experts + 1;
    return n + 3 * 2 + 2; /* log-sum-exp state in f64, ids and targets */
}

typedef struct plan {
    uint64_t fixed_bytes;
    uint64_t seq_bytes;
} plan;

static plan make_plan(const sym_forward *fw)
{
    const sym_model_config *c = &fw->cfg;
    uint64_t d = (uint64_t)c->hidden_size, v = (uint64_t)c->vocab_size;
    uint64_t seq = (uint64_t)fw->opt.seq_len;
    uint64_t positions = fw->rope_positions;
    uint64_t kvd = (uint64_t)(c->num_key_value_heads * c->head_dim);
    uint64_t head_rows = v < HEAD_ROWS_MAX ? v : HEAD_ROWS_MAX;
    uint64_t threads = fw->opt.threads > 0 ? (uint64_t)fw->opt.threads : 1;
    uint64_t fixed = layer_weight_floats(c, fw->experts) + d;
    fixed += head_rows * d + HEAD_TOKENS_MAX * head_rows;
    fixed += positions * (uint64_t)c->head_dim;
    fixed += threads * positions;
    fixed += 2 * (uint64_t)c->num_hidden_layers * (uint64_t)fw->opt.kv_positions * kvd;
    plan p;
    p.fixed_bytes = fixed * 4 + sym_stream_memory_bytes(fw->stream);
    p.seq_bytes = seq * token_floats(c, fw->experts, fw->moe) * 4;
    return p;
}

static sym_status choose_batch(sym_forward *fw, sym_error *err)
{
    plan p = make_plan(fw);
    size_t want = fw->opt.max_sequences > 0 ? (size_t)fw->opt.max_sequences : 1;
    uint64_t limit = fw->opt.memory_limit;
    if (limit > 0) {
        if (limit < p.fixed_bytes + p.seq_bytes)
            return sym_error_set(err, SYM_ERR_LIMIT,
                                 "%s: the forward pass needs %.1f MiB (%.1f MiB for one layer, "
                                 "buffers and cache, %.1f MiB per sequence of %d tokens) but "
                                 "the memory limit is %.1f MiB; raise --memory-limit or lower "
                                 "--seq-len",
                                 sym_model_dir(fw->model),
                                 (double)(p.fixed_bytes + p.seq_bytes) / 1048576.0,
                                 (double)p.fixed_bytes / 1048576.0,
                                 (double)p.seq_bytes / 1048576.0, fw->opt.seq_len,
                                 (double)limit / 1048576.0);
        uint64_t fit = (limit - p.fixed_bytes) / p.seq_bytes;
        if (fit < want)
            want = (size_t)fit;
    }
    fw->batch_seqs = want;
    fw->batch_tokens = want * (size_t)fw->opt.seq_len;
    fw->plan_bytes = p.fixed_bytes + (uint64_t)want * p.seq_bytes;
    return SYM_OK;
}

static sym_status check_options(const sym_forward *fw, sym_error *err)
{
    const sym_model_config *c = &fw->cfg;
    const char *dir = sym_model_dir(fw->model);
    if (fw->opt.seq_len < 1 || fw->opt.seq_len > c->max_position_embeddings)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: sequence length %d is outside 1..%lld "
                             "(max_position_embeddings)", dir, fw->opt.seq_len,
                             (long long)c->max_position_embeddings);
    if (fw->opt.kv_positions < 0 || fw->opt.kv_positions > c->max_position_embeddings)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: %d positions requested, max_position_embeddings is %lld",
                             dir, fw->opt.kv_positions, (long long)c->max_position_embeddings);
    if (fw->moe && c->num_local_experts > SYM_FORWARD_MAX_EXPERTS)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: num_local_experts is %lld; at most %d are supported", dir,
                             (long long)c->num_local_experts, SYM_FORWARD_MAX_EXPERTS);
    if (fw->moe && (c->num_experts_per_tok < 1 || c->num_experts_per_tok > c->num_local_experts))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: num_experts_per_tok is %lld; expected 1..%lld", dir,
                             (long long)c->num_experts_per_tok,
                             (long long)c->num_local_experts);
    if (fw->opt.force_expert >= 0 && (!fw->moe || fw->opt.force_expert >= c->num_local_experts))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: cannot force expert %d: the model has %lld experts", dir,
                             fw->opt.force_expert, (long long)(fw->moe ? c->num_local_experts
                                                                       : 0));
    return SYM_OK;
}

static sym_status build_rope(sym_forward *fw, sym_error *err)
{
    size_t half = (size_t)fw->cfg.head_dim / 2;
    float *inv = malloc(half * sizeof *inv);
    fw->rope_cos = malloc(fw->rope_positions * half * sizeof(float));
    fw->rope_sin = malloc(fw->rope_positions * half * sizeof(float));
    if (inv == NULL || fw->rope_cos == NULL || fw->rope_sin == NULL) {
        free(inv);
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for the RoPE tables");
    }
    sym_status st = sym_rope_inv_freq(&fw->cfg, inv, err);
    if (st != SYM_OK) {
        free(inv);
        return sym_error_prefix(err, "%s", sym_model_dir(fw->model));
    }
    for (size_t p = 0; p < fw->rope_positions; p++) {
        for (size_t i = 0; i < half; i++) {
            /* The angle is an f32 product, as in transformers' rotary embedding. */
            float angle = (float)p * inv[i];
            fw->rope_cos[p * half + i] = (float)cos((double)angle);
            fw->rope_sin[p * half + i] = (float)sin((double)angle);
        }
    }
    free(inv);
    return SYM_OK;
}

/* Points the layer views into one arena. */
static void carve_weights(sym_forward *fw)
{
    const sym_model_config *c = &fw->cfg;
    size_t d = (size_t)c->hidden_size, f = (size_t)c->intermediate_size;
    size_t qd = (size_t)(c->num_attention_heads * c->head_dim);
    size_t kvd = (size_t)(c->num_key_value_heads * c->head_dim);
    float *p = fw->arena;
    fw->w.in_norm = p, p += d;
    fw->w.post_norm = p, p += d;
    fw->w.q = p, p += qd * d;
    fw->w.k = p, p += kvd * d;
    fw->w.v = p, p += kvd * d;
    fw->w.o = p, p += d * qd;
    if (fw->moe)
        fw->w.router = p, p += fw->experts * d;
    for (size_t e = 0; e < fw->experts; e++) {
        fw->w.gate[e] = p, p += f * d;
        fw->w.up[e] = p, p += f * d;
        fw->w.down[e] = p, p += d * f;
    }
}

static float *alloc_floats(uint64_t n, bool *failed)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (p == NULL)
        *failed = true;
    return p;
}

static sym_status allocate(sym_forward *fw, sym_error *err)
{
    const sym_model_config *c = &fw->cfg;
    uint64_t t = fw->batch_tokens, d = (uint64_t)c->hidden_size;
    uint64_t f = (uint64_t)c->intermediate_size;
    uint64_t qd = (uint64_t)(c->num_attention_heads * c->head_dim);
    uint64_t kvd = (uint64_t)(c->num_key_value_heads * c->head_dim);
    uint64_t kv = (uint64_t)c->num_hidden_layers * (uint64_t)fw->opt.kv_positions * kvd;
    size_t threads = fw->opt.threads > 0 ? (size_t)fw->opt.threads : 1;
    bool failed = false;
    fw->w.gate = calloc(fw->experts, sizeof(float *));
    fw->w.up = calloc(fw->experts, sizeof(float *));
    fw->w.down = calloc(fw->experts, sizeof(float *));
    failed = fw->w.gate == NULL || fw->w.up == NULL || fw->w.down == NULL;
    fw->arena = alloc_floats(layer_weight_floats(c, fw->experts), &failed);
    fw->final_norm = alloc_floats(d, &failed);
    fw->xn = alloc_floats(t * d, &failed);
    fw->out = alloc_floats(t * d, &failed);
    fw->q = alloc_floats(t * qd, &failed);
    fw->attn = alloc_floats(t * qd, &failed);
    fw->k = alloc_floats(t * kvd, &failed);
    fw->v = alloc_floats(t * kvd, &failed);
    fw->gate = alloc_floats(t * f, &failed);
    fw->up = alloc_floats(t * f, &failed);
    fw->score_len = fw->rope_positions;
    fw->scores = alloc_floats(threads * fw->score_len, &failed);
    fw->head_rows = (size_t)c->vocab_size < HEAD_ROWS_MAX ? (size_t)c->vocab_size
                                                          : HEAD_ROWS_MAX;
    fw->head_tokens = HEAD_TOKENS_MAX;
    fw->head_w = alloc_floats(fw->head_rows * d, &failed);
    fw->head_logits = alloc_floats(fw->head_tokens * fw->head_rows, &failed);
    fw->lse_max = malloc(t * 3 * sizeof(double));
    failed = failed || fw->lse_max == NULL;
    fw->lse_sum = fw->lse_max + t;
    fw->target_logit = fw->lse_max + 2 * t;
    if (fw->moe) {
        fw->moe_x = alloc_floats(t * d, &failed);
        fw->moe_y = alloc_floats(t * d, &failed);
        fw->router_p = alloc_floats(t * fw->experts, &failed);
        fw->route_w = alloc_floats(t * fw->experts, &failed);
        fw->moe_rows = malloc(t * sizeof(int32_t));
        failed = failed || fw->moe_rows == NULL;
    }
    if (kv > 0) {
        fw->kv_k = alloc_floats(kv, &failed);
        fw->kv_v = alloc_floats(kv, &failed);
    }
    if (failed)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory allocating the %.1f MiB plan",
                             (double)fw->plan_bytes / 1048576.0);
    carve_weights(fw);
    return SYM_OK;
}

sym_status sym_forward_create(sym_forward **forward, const sym_model *model,
                              const sym_forward_options *options, sym_error *err)
{
    *forward = NULL;
    sym_forward *fw = calloc(1, sizeof *fw);
    if (fw == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory creating the forward pass");
    fw->model = model;
    fw->cfg = *sym_model_get_config(model);
    fw->opt = *options;
    fw->moe = fw->cfg.num_local_experts > 0;
    fw->experts = fw->moe ? (size_t)fw->cfg.num_local_experts : 1;
    fw->loaded = -1;
    size_t positions = (size_t)fw->opt.seq_len;
    if ((size_t)fw->opt.kv_positions > positions)
        positions = (size_t)fw->opt.kv_positions;
    fw->rope_positions = positions;
    if (fw->opt.threads > 0)
        openblas_set_num_threads(fw->opt.threads);

    sym_status st = check_options(fw, err);
    if (st == SYM_OK)
        st = fwd_ops_init(err);
    if (st == SYM_OK)
        st = sym_stream_open(&fw->stream, model, fw->opt.prefetch, err);
    if (st == SYM_OK)
        st = choose_batch(fw, err);
    if (st == SYM_OK)
        st = allocate(fw, err);
    if (st == SYM_OK)
        st = build_rope(fw, err);
    if (st == SYM_OK)
        st = sym_tensor_read_f32(sym_model_tensor(model, SYM_ROLE_FINAL_NORM, -1, -1), 0,
                                 (uint64_t)fw->cfg.hidden_size, fw->final_norm, err);
    if (st != SYM_OK) {
        sym_forward_free(fw);
        return st;
    }
    *forward = fw;
    return SYM_OK;
}

sym_status fwd_ensure_arena(sym_forward *fw, int l, sym_error *err)
{
    if (fw->arena != NULL)
        return SYM_OK;
    bool failed = false;
    fw->arena = alloc_floats(layer_weight_floats(&fw->cfg, fw->experts), &failed);
    if (failed)
        return sym_error_set(err, SYM_ERR_NOMEM, "layer %d: out of memory for its weights in f32",
                             l);
    carve_weights(fw);
    return SYM_OK;
}

void sym_forward_release_weights(sym_forward *fw)
{
    if (!fw->arena_lent) {
        free(fw->arena);
        fw->arena = NULL;
    }
    fw->loaded = -1;
}

uint64_t sym_forward_weight_floats(const sym_forward *fw)
{
    return layer_weight_floats(&fw->cfg, fw->experts);
}

void sym_forward_lend_weights(sym_forward *fw, float *buffer)
{
    if (!fw->arena_lent)
        free(fw->arena);
    fw->arena = buffer;
    fw->arena_lent = buffer != NULL;
    fw->loaded = -1;
    if (buffer != NULL)
        carve_weights(fw);
}

void sym_forward_free(sym_forward *fw)
{
    if (fw == NULL)
        return;
    sym_stream_close(fw->stream);
    if (fw->arena_lent)
        fw->arena = NULL;
    float *buffers[] = {fw->arena, fw->final_norm, fw->xn, fw->out, fw->q, fw->attn, fw->k,
                        fw->v, fw->gate, fw->up, fw->scores, fw->head_w, fw->head_logits,
                        fw->moe_x, fw->moe_y, fw->router_p, fw->route_w, fw->kv_k, fw->kv_v,
                        fw->rope_cos, fw->rope_sin};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        free(buffers[i]);
    free(fw->lse_max);
    free(fw->moe_rows);
    free(fw->w.gate);
    free(fw->w.up);
    free(fw->w.down);
    free(fw);
}

size_t sym_forward_batch_sequences(const sym_forward *forward)
{
    return forward->batch_seqs;
}

uint64_t sym_forward_plan_bytes(const sym_forward *forward)
{
    return forward->plan_bytes;
}

sym_status sym_forward_embed(sym_forward *fw, const int32_t *ids, size_t n_tokens,
                             float *hidden, sym_error *err)
{
    const sym_tensor_ref *embed = sym_model_tensor(fw->model, SYM_ROLE_EMBED, -1, -1);
    uint64_t d = (uint64_t)fw->cfg.hidden_size;
    for (size_t t = 0; t < n_tokens; t++) {
        if (ids[t] < 0 || ids[t] >= fw->cfg.vocab_size)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "token id %d at position %zu is outside the vocabulary "
                                 "0..%lld of %s", ids[t], t, (long long)fw->cfg.vocab_size - 1,
                                 sym_model_dir(fw->model));
        sym_status st = sym_tensor_read_f32(embed, (uint64_t)ids[t] * d, d, hidden + t * d, err);
        if (st != SYM_OK)
            return st;
    }
    sym_stream_release_tensor(embed);
    return SYM_OK;
}

/* out[rows, n] = x[rows, k] W^T with W [n, k]. */
static void linear(float *out, const float *x, const float *w, size_t rows, size_t n, size_t k)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)k, 1.0f, x,
                (int)k, w, (int)k, 0.0f, out, (int)n);
}

static void apply_rope(sym_forward *fw, float *x, size_t heads, size_t n_seq, size_t seq_len,
                       size_t pos0)
{
    size_t hd = (size_t)fw->cfg.head_dim, half = hd / 2;
    for (size_t s = 0; s < n_seq; s++) {
        for (size_t i = 0; i < seq_len; i++) {
            size_t pos = pos0 + i;
            float *row = x + ((s * seq_len + i) * heads) * hd;
            for (size_t h = 0; h < heads; h++)
                fwd_rope(row + h * hd, fw->rope_cos + pos * half, fw->rope_sin + pos * half, hd);
        }
    }
}

static void attention_block(sym_forward *fw, int l, float *hidden, size_t n_seq, size_t seq_len,
                            size_t pos0, bool use_cache)
{
    const sym_model_config *c = &fw->cfg;
    size_t t = n_seq * seq_len, d = (size_t)c->hidden_size;
    size_t qd = (size_t)(c->num_attention_heads * c->head_dim);
    size_t kvd = (size_t)(c->num_key_value_heads * c->head_dim);

    fwd_rms_norm(fw->xn, hidden, fw->w.in_norm, t, d, (float)c->rms_norm_eps);
    linear(fw->q, fw->xn, fw->w.q, t, qd, d);
    linear(fw->k, fw->xn, fw->w.k, t, kvd, d);
    linear(fw->v, fw->xn, fw->w.v, t, kvd, d);
    apply_rope(fw, fw->q, (size_t)c->num_attention_heads, n_seq, seq_len, pos0);
    apply_rope(fw, fw->k, (size_t)c->num_key_value_heads, n_seq, seq_len, pos0);
    fwd_attention(fw, l, n_seq, seq_len, pos0, use_cache);
    linear(fw->out, fw->attn, fw->w.o, t, d, qd);
    fwd_add(hidden, fw->out, t * d);
}

static void dense_ffn(sym_forward *fw, size_t t, float *ffn_act)
{
    size_t d = (size_t)fw->cfg.hidden_size, f = (size_t)fw->cfg.intermediate_size;
    linear(fw->gate, fw->xn, fw->w.gate[0], t, f, d);
    linear(fw->up, fw->xn, fw->w.up[0], t, f, d);
    fwd_swiglu(fw->gate, fw->up, t * f);
    if (ffn_act != NULL)
        memcpy(ffn_act, fw->gate, t * f * sizeof(float));
    linear(fw->out, fw->gate, fw->w.down[0], t, d, f);
}

sym_status fwd_run_layer(sym_forward *fw, int layer, float *hidden, size_t n_seq,
                         size_t seq_len, size_t pos0, bool use_cache, float *ffn_act,
                         sym_error *err)
{
    const sym_model_config *c = &fw->cfg;
    size_t t = n_seq * seq_len, d = (size_t)c->hidden_size;
    sym_status st = fwd_load_layer(fw, layer, err);
    if (st != SYM_OK)
        return st;

    double t0 = fwd_seconds();
    attention_block(fw, layer, hidden, n_seq, seq_len, pos0, use_cache);
    double t1 = fwd_seconds();
    fw->timing.attention += t1 - t0;

    fwd_rms_norm(fw->xn, hidden, fw->w.post_norm, t, d, (float)c->rms_norm_eps);
    if (fw->moe)
        st = fwd_moe(fw, t);
    else
        dense_ffn(fw, t, ffn_act);
    if (st != SYM_OK)
        return st;
    fwd_add(hidden, fw->out, t * d);
    fw->timing.ffn += fwd_seconds() - t1;
    return SYM_OK;
}

sym_status sym_forward_layer(sym_forward *fw, int layer, float *hidden, size_t n_seq,
                             size_t seq_len, float *ffn_act, sym_error *err)
{
    if (layer < 0 || layer >= fw->cfg.num_hidden_layers)
        return sym_error_set(err, SYM_ERR_INVALID, "layer %d is outside 0..%lld", layer,
                             (long long)fw->cfg.num_hidden_layers - 1);
    if (seq_len > fw->rope_positions || n_seq * seq_len > fw->batch_tokens)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "batch of %zu x %zu tokens exceeds the plan (%zu sequences of "
                             "%zu tokens)", n_seq, seq_len, fw->batch_seqs, fw->rope_positions);
    if (ffn_act != NULL && fw->moe)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: FFN activations are captured for dense models only",
                             sym_model_dir(fw->model));
    return fwd_run_layer(fw, layer, hidden, n_seq, seq_len, 0, false, ffn_act, err);
}
