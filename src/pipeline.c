/* The calibrated merge pass, one layer at a time (see pipeline_internal.h).
 *
 * State between layers: h[s] [T, hidden], the hidden states of every source s on the
 * calibration tokens (each source on its own states), and hm, the merged model's. After
 * layer l they are rounded to the cache dtype, written to the work directory as
 * h-<source>-<l + 1>.hc and merged-<l + 1>.hc, and the run continues from those rounded
 * values, so a resumed run that reads the files computes the same bytes. The router inputs
 * of layer l (post_attention_layernorm of the merged model) are kept as x-<l>.hc and the
 * token labels as labels.hc, so routers can be retrained without recomputing anything.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pipeline_internal.h"
#include "symphony/actstore.h"
#include "symphony/align.h"
#include "symphony/forward.h"
#include "symphony/fusion.h"
#include "symphony/kernels.h"
#include "symphony/writer.h"

enum { STAGE_FORWARD, STAGE_ALIGN, STAGE_MERGED, STAGE_ROUTER, STAGE_CACHE, STAGE_COUNT };
static const char *const stage_names[STAGE_COUNT] = {"source_forward", "alignment",
                                                     "merged_forward", "router_training",
                                                     "cache_io"};

struct sym_pipeline {
    sym_pipeline_setup setup;
    const sym_merge_config *cfg;
    const sym_model *models[SYM_MAX_SOURCES + 1]; /* experts, then base when separate */
    sym_forward *fw[SYM_MAX_SOURCES + 1];
    size_t n_models, n_experts, anchor;
    sym_calib calib;
    size_t tokens, hidden, d_ff;
    float *h[SYM_MAX_SOURCES + 1], *hm, *x;
    float *act_anchor, *act;
    int32_t *perm[SYM_MAX_SOURCES];
    float *router;
    /* One buffer for the large f32 matrices of a layer, used in turn by each source's
     * weights, the correlation matrix, the merged attention and the merged experts.
     * Reusing it spares the page faults of allocating each of them anew. It exists only
     * while a layer is computed, so it never shares memory with writing the output. */
    float *weights;
    size_t weight_floats;
    sym_layer_state state;
    sym_merged_layer layer;
    sym_merged_attn attn;
    int state_layer;  /* the layer whose input states are in memory, -1: none */
    json_t *layers;   /* per-layer reports */
    double seconds[STAGE_COUNT];
    char work_dir[4096];
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Work file names: "<prefix>-<a>.<ext>", or "<prefix>-<a>-<b>.<ext>" when b >= 0. */
static void work_path(const sym_pipeline *p, char *out, size_t size, const char *prefix,
                      int a, int b, const char *ext)
{
    if (b >= 0)
        snprintf(out, size, "%s/%s-%d-%d.%s", p->setup.work_dir, prefix, a, b, ext);
    else
        snprintf(out, size, "%s/%s-%d.%s", p->setup.work_dir, prefix, a, ext);
}

void sym_pipeline_router_config(const sym_merge_config *cfg, int layer, size_t hidden,
                                int threads, sym_router_config *rc)
{
    sym_router_config_init(rc, cfg->n_experts, hidden);
    rc->top_k = (size_t)cfg->experts_per_token;
    rc->objective = cfg->router.objective;
    rc->steps = (size_t)cfg->router.steps;
    rc->lr = cfg->router.learning_rate;
    rc->batch_size = (size_t)cfg->router.batch_size;
    rc->balance = cfg->router.balance_weight;
    rc->seed = cfg->seed * 1000003u + (uint64_t)layer;
    rc->holdout_fraction = 0.1;
    rc->threads = threads > 0 ? (unsigned)threads : 1;
    rc->use_process_variant = 1;
    rc->gate_mode = SYM_ROUTER_GATE_ZERO;
    if (cfg->router.init == SYM_ROUTER_INIT_GATE_MODE &&
        (cfg->gate_mode == SYM_GATE_RANDOM || cfg->gate_mode == SYM_GATE_UNIFORM_RANDOM))
        rc->gate_mode = SYM_ROUTER_GATE_RANDOM;
}

/* ---- setup ---- */

static float *alloc_floats(size_t n, bool *failed)
{
    float *p = calloc(n + 1, sizeof *p);
    *failed = *failed || p == NULL;
    return p;
}

size_t sym_pipeline_forward_sequences(size_t seq_len, size_t n_seq)
{
    size_t sequences = SYM_CALIB_FORWARD_TOKENS / seq_len;
    if (sequences > n_seq)
        sequences = n_seq;
    return sequences > 0 ? sequences : 1;
}

static sym_status open_forwards(sym_pipeline *p, sym_error *err)
{
    const sym_merge_sources *src = p->setup.sources;
    for (size_t e = 0; e < src->n_experts; e++)
        p->models[p->n_models++] = src->experts[e];
    p->anchor = p->n_models;
    for (size_t e = 0; e < src->n_experts; e++)
        if (src->experts[e] == src->anchor)
            p->anchor = e;
    if (p->anchor == p->n_models)
        p->models[p->n_models++] = src->anchor;
    sym_forward_options fo;
    sym_forward_options_init(&fo);
    fo.threads = p->setup.opts->threads;
    fo.seq_len = (int)p->calib.seq_len;
    fo.max_sequences = (int)sym_pipeline_forward_sequences(p->calib.seq_len, p->calib.n_seq);
    sym_status s = SYM_OK;
    for (size_t m = 0; m < p->n_models && s == SYM_OK; m++)
        s = sym_forward_create(&p->fw[m], p->models[m], &fo, err);
    return s;
}

static sym_status build_rope(sym_pipeline *p, sym_error *err)
{
    const sym_model_config *c = sym_model_get_config(p->setup.sources->anchor);
    size_t half = (size_t)c->head_dim / 2, L = p->calib.seq_len;
    p->attn = (sym_merged_attn){.hidden = p->hidden, .heads = (size_t)c->num_attention_heads,
                                .kv_heads = (size_t)c->num_key_value_heads,
                                .head_dim = (size_t)c->head_dim, .eps = (float)c->rms_norm_eps};
    float *inv = malloc(half * sizeof *inv + 1);
    bool failed = inv == NULL;
    p->attn.cos_t = alloc_floats(L * half, &failed);
    p->attn.sin_t = alloc_floats(L * half, &failed);
    if (failed) {
        free(inv);
        return sym_error_set(err, SYM_ERR_NOMEM, "calibration: out of memory");
    }
    sym_status s = sym_rope_inv_freq(c, inv, err);
    for (size_t pos = 0; pos < L && s == SYM_OK; pos++)
        for (size_t i = 0; i < half; i++) {
            float angle = (float)pos * inv[i];
            p->attn.cos_t[pos * half + i] = cosf(angle);
            p->attn.sin_t[pos * half + i] = sinf(angle);
        }
    free(inv);
    return s;
}

/* Sizes p->weights for the largest of its uses. */
static void size_weights(sym_pipeline *p)
{
    size_t d = p->hidden, f = p->d_ff;
    size_t qd = p->attn.heads * p->attn.head_dim, kvd = p->attn.kv_heads * p->attn.head_dim;
    size_t uses[] = {2 * qd * d + 2 * kvd * d, p->n_experts * 3 * f * d, f * f};
    size_t n = 0;
    for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++)
        n = uses[i] > n ? uses[i] : n;
    for (size_t m = 0; m < p->n_models; m++)
        if (sym_forward_weight_floats(p->fw[m]) > n)
            n = (size_t)sym_forward_weight_floats(p->fw[m]);
    p->weight_floats = n;
}

/* Allocates p->weights and lends it to every source's pass. */
static sym_status acquire_weights(sym_pipeline *p, int l, sym_error *err)
{
    p->weights = malloc(p->weight_floats * sizeof *p->weights + 1);
    if (p->weights == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "layer %d: out of memory for the %zu MiB "
                             "f32 layer buffer", l, (p->weight_floats * sizeof(float)) >> 20);
    for (size_t m = 0; m < p->n_models; m++)
        sym_forward_lend_weights(p->fw[m], p->weights);
    return SYM_OK;
}

static void release_weights(sym_pipeline *p)
{
    for (size_t m = 0; m < p->n_models; m++)
        if (p->fw[m] != NULL)
            sym_forward_lend_weights(p->fw[m], NULL);
    free(p->weights);
    p->weights = NULL;
}

static sym_status allocate(sym_pipeline *p, sym_error *err)
{
    bool failed = false;
    size_t T = p->tokens, d = p->hidden, f = p->d_ff, n = p->n_experts;
    for (size_t m = 0; m < p->n_models; m++)
        p->h[m] = alloc_floats(T * d, &failed);
    p->hm = alloc_floats(T * d, &failed);
    p->x = alloc_floats(T * d, &failed);
    p->act_anchor = alloc_floats(T * f, &failed);
    p->act = alloc_floats(T * f, &failed);
    p->router = alloc_floats(n * d, &failed);
    for (size_t e = 0; e < n; e++) {
        p->perm[e] = calloc(f, sizeof *p->perm[e]);
        failed = failed || p->perm[e] == NULL;
    }
    p->layer.in_norm = alloc_floats(d, &failed);
    p->layer.post_norm = alloc_floats(d, &failed);
    p->layer.experts = n;
    p->layer.hidden = d;
    p->layer.d_ff = f;
    p->layers = json_array();
    if (failed || p->layers == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM,
                             "calibration needs about %llu MiB for %zu tokens; out of memory",
                             (unsigned long long)((T * (d * (p->n_models + 2) + 2 * f) * 4) >> 20),
                             T);
    return SYM_OK;
}

sym_status sym_pipeline_create(sym_pipeline **out, const sym_pipeline_setup *setup,
                               sym_error *err)
{
    sym_pipeline *p = calloc(1, sizeof *p);
    *out = p;
    if (p == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "calibration: out of memory");
    p->setup = *setup;
    snprintf(p->work_dir, sizeof p->work_dir, "%s", setup->work_dir);
    p->setup.work_dir = p->work_dir;
    p->cfg = setup->cfg;
    p->n_experts = setup->cfg->n_experts;
    p->state_layer = -1;
    const sym_model_config *c = sym_model_get_config(setup->sources->anchor);
    p->hidden = (size_t)c->hidden_size;
    p->d_ff = (size_t)c->intermediate_size;
    sym_status s = sym_calib_build(setup->cfg, sym_model_dir(setup->vocab_donor), &p->calib,
                                   err);
    p->tokens = p->calib.n_seq * p->calib.seq_len;
    if (s == SYM_OK)
        s = open_forwards(p, err);
    if (s == SYM_OK)
        s = allocate(p, err);
    if (s == SYM_OK)
        s = build_rope(p, err);
    if (s == SYM_OK)
        size_weights(p);
    if (s == SYM_OK)
        s = sym_pipeline_write_router_setup(p->cfg, setup->opts->threads, &p->calib, p->hidden,
                                            p->work_dir, err);
    if (s == SYM_OK)
        setup->sources->layer_state = &p->state;
    p->state.layer = -1;
    return s;
}

/* The merged layer's attention and expert weights lie in p->weights only while the merged
 * pass uses them, so they never share memory with a source model's layer. The expert
 * weights are released before router training when their outputs are cached. */
static void free_merged_attention(sym_merged_layer *w)
{
    w->q = w->k = w->v = w->o = NULL;
}

static void free_merged_experts(sym_merged_layer *w)
{
    for (size_t e = 0; e < w->experts; e++)
        w->gate[e] = w->up[e] = w->down[e] = NULL;
}

void sym_pipeline_free(sym_pipeline *p)
{
    if (p == NULL)
        return;
    if (p->setup.sources != NULL)
        p->setup.sources->layer_state = NULL;
    release_weights(p);
    for (size_t m = 0; m < p->n_models; m++) {
        sym_forward_free(p->fw[m]);
        free(p->h[m]);
    }
    for (size_t e = 0; e < p->n_experts; e++)
        free(p->perm[e]);
    free_merged_experts(&p->layer);
    free_merged_attention(&p->layer);
    float *bufs[] = {p->hm, p->x, p->act_anchor, p->act, p->router, p->layer.in_norm,
                     p->layer.post_norm, p->attn.cos_t, p->attn.sin_t};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    json_decref(p->layers);
    sym_calib_free(&p->calib);
    free(p);
}

/* ---- the merged model's weights ---- */

/* Rounds values to what the output dtype stores, so the pass computes with the model as written. */
static sym_status round_to_dtype(float *v, size_t n, sym_dtype dtype, sym_error *err)
{
    if (dtype == SYM_DTYPE_F32)
        return SYM_OK;
    const sym_kernels *k;
    sym_status s = sym_kernels_select(&k, err);
    uint8_t *bytes = malloc(n * 2 + 1);
    if (s == SYM_OK && bytes == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "calibration: out of memory");
    uint64_t overflow = 0;
    if (s == SYM_OK)
        s = sym_convert_f32(v, n, dtype, bytes, &overflow, err);
    if (s == SYM_OK && dtype == SYM_DTYPE_BF16)
        k->bf16_to_f32(v, bytes, n);
    else if (s == SYM_OK)
        k->f16_to_f32(v, bytes, n);
    free(bytes);
    return s;
}

typedef struct capture {
    float *dst;
    size_t pos, cap;
    /* Embedding rows: slot[id] is the row of dst that receives vocabulary row id, or -1. */
    const int32_t *slot;
    size_t row_len;
} capture;

static sym_status capture_write(void *context, const float *values, size_t count,
                                sym_error *err)
{
    capture *c = context;
    if (c->slot == NULL) {
        if (c->pos + count > c->cap)
            return sym_error_set(err, SYM_ERR_INVALID, "calibration: tensor larger than planned");
        memcpy(c->dst + c->pos, values, count * sizeof *values);
    } else {
        for (size_t i = 0; i < count; i += c->row_len) {
            int32_t row = c->slot[(c->pos + i) / c->row_len];
            if (row >= 0)
                memcpy(c->dst + (size_t)row * c->row_len, values + i, c->row_len * 4);
        }
    }
    c->pos += count;
    return SYM_OK;
}

sym_status sym_pipeline_produce(const sym_merge_sources *sources, sym_job_kind kind,
                                sym_role role, int layer, float *dst, size_t count,
                                sym_error *err)
{
    sym_tensor_job job = {kind, role, layer, -1};
    capture c = {.dst = dst, .cap = count};
    sym_tensor_sink sink = {capture_write, &c};
    return sym_produce_tensor(sources, &job, &sink, err);
}

static sym_status produce_into(sym_pipeline *p, sym_job_kind kind, sym_role role, int l,
                               float *dst, size_t count, sym_error *err)
{
    sym_status s = sym_pipeline_produce(p->setup.sources, kind, role, l, dst, count, err);
    if (s == SYM_OK)
        s = round_to_dtype(dst, count, p->cfg->dtype, err);
    return s;
}

static sym_status read_expert(sym_pipeline *p, size_t e, sym_role role, int l, float *dst,
                              sym_error *err)
{
    const sym_tensor_ref *ref = sym_model_tensor(p->setup.sources->experts[e], role, l, -1);
    sym_status s = sym_tensor_read_f32(ref, 0, ref->info->numel, dst, err);
    const int32_t *perm = p->state.perm[e];
    if (s == SYM_OK && perm != NULL && role == SYM_ROLE_FFN_DOWN)
        s = sym_align_permute_cols(dst, p->hidden, p->d_ff, perm, err);
    else if (s == SYM_OK && perm != NULL)
        s = sym_align_permute_rows(dst, p->d_ff, p->hidden, perm, err);
    /* Values read from a tensor of the output dtype are already what the output stores. */
    if (s == SYM_OK && ref->info->dtype != p->cfg->dtype)
        s = round_to_dtype(dst, ref->info->numel, p->cfg->dtype, err);
    return s;
}

static sym_status load_merged_attention(sym_pipeline *p, int l, sym_error *err)
{
    sym_merged_layer *w = &p->layer;
    size_t d = p->hidden, qd = p->attn.heads * p->attn.head_dim;
    size_t kvd = p->attn.kv_heads * p->attn.head_dim;
    w->q = p->weights;
    w->k = w->q + qd * d;
    w->v = w->k + kvd * d;
    w->o = w->v + kvd * d;
    sym_status s = produce_into(p, SYM_JOB_NORM, SYM_ROLE_INPUT_NORM, l, w->in_norm, d, err);
    if (s == SYM_OK)
        s = produce_into(p, SYM_JOB_NORM, SYM_ROLE_POST_NORM, l, w->post_norm, d, err);
    if (s == SYM_OK)
        s = produce_into(p, SYM_JOB_ATTENTION, SYM_ROLE_Q, l, w->q, qd * d, err);
    if (s == SYM_OK)
        s = produce_into(p, SYM_JOB_ATTENTION, SYM_ROLE_K, l, w->k, kvd * d, err);
    if (s == SYM_OK)
        s = produce_into(p, SYM_JOB_ATTENTION, SYM_ROLE_V, l, w->v, kvd * d, err);
    if (s == SYM_OK)
        s = produce_into(p, SYM_JOB_ATTENTION, SYM_ROLE_O, l, w->o, d * qd, err);
    return s;
}

static sym_status load_merged_experts(sym_pipeline *p, int l, sym_error *err)
{
    sym_merged_layer *w = &p->layer;
    size_t d = p->hidden, f = p->d_ff;
    for (size_t e = 0; e < p->n_experts; e++) {
        w->gate[e] = p->weights + 3 * e * f * d;
        w->up[e] = w->gate[e] + f * d;
        w->down[e] = w->up[e] + f * d;
    }
    sym_status s = SYM_OK;
    for (size_t e = 0; e < p->n_experts && s == SYM_OK; e++) {
        s = read_expert(p, e, SYM_ROLE_FFN_GATE, l, w->gate[e], err);
        if (s == SYM_OK)
            s = read_expert(p, e, SYM_ROLE_FFN_UP, l, w->up[e], err);
        if (s == SYM_OK)
            s = read_expert(p, e, SYM_ROLE_FFN_DOWN, l, w->down[e], err);
    }
    return s;
}

/* The merged model's embedding of the calibration tokens: only the rows in use are kept. */
static sym_status merged_embedding(sym_pipeline *p, sym_error *err)
{
    size_t vocab = p->setup.sources->vocab_out, d = p->hidden;
    int32_t *slot = malloc(vocab * sizeof *slot);
    float *rows = malloc(vocab * d * sizeof *rows);
    sym_status s = SYM_OK;
    if (slot == NULL || rows == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "calibration: out of memory");
    for (size_t i = 0; i < vocab && s == SYM_OK; i++)
        slot[i] = -1;
    for (size_t t = 0; t < p->tokens && s == SYM_OK; t++)
        slot[p->calib.ids[t]] = p->calib.ids[t];
    sym_tensor_job job = {SYM_JOB_EMBED, SYM_ROLE_EMBED, -1, -1};
    capture c = {.dst = rows, .slot = slot, .row_len = d};
    sym_tensor_sink sink = {capture_write, &c};
    if (s == SYM_OK)
        s = sym_produce_tensor(p->setup.sources, &job, &sink, err);
    if (s == SYM_OK)
        s = round_to_dtype(rows, vocab * d, p->cfg->dtype, err);
    for (size_t t = 0; t < p->tokens && s == SYM_OK; t++)
        memcpy(p->hm + t * d, rows + (size_t)p->calib.ids[t] * d, d * sizeof *rows);
    free(slot);
    free(rows);
    return s;
}

/* ---- states between layers ---- */

static sym_status embed_all(sym_pipeline *p, sym_error *err)
{
    sym_status s = SYM_OK;
    for (size_t m = 0; m < p->n_models && s == SYM_OK; m++)
        s = sym_forward_embed(p->fw[m], p->calib.ids, p->tokens, p->h[m], err);
    if (s == SYM_OK)
        s = merged_embedding(p, err);
    for (size_t m = 0; m < p->n_models && s == SYM_OK; m++)
        sym_hcache_round(p->h[m], p->tokens * p->hidden, p->cfg->cache_dtype);
    if (s == SYM_OK)
        sym_hcache_round(p->hm, p->tokens * p->hidden, p->cfg->cache_dtype);
    return s;
}

static sym_status cache_io(sym_pipeline *p, int l, bool write, sym_error *err)
{
    char path[4096];
    sym_status s = SYM_OK;
    for (size_t m = 0; m <= p->n_models && s == SYM_OK; m++) {
        float *h = m < p->n_models ? p->h[m] : p->hm;
        if (m < p->n_models)
            work_path(p, path, sizeof path, "h", (int)m, l, "hc");
        else
            work_path(p, path, sizeof path, "merged", l, -1, "hc");
        if (write)
            s = sym_hcache_write(path, h, p->tokens, p->hidden, p->cfg->cache_dtype, err);
        /* A run reads what it wrote, so a resumed run reads the same values. */
        if (s == SYM_OK)
            s = sym_hcache_read(path, h, p->tokens, p->hidden, err);
    }
    return s;
}

static bool file_exists(const char *path)
{
    return access(path, R_OK) == 0;
}

/* ---- one layer ---- */

static sym_status source_forward(sym_pipeline *p, size_t m, int l, float *act, sym_error *err)
{
    size_t batch = sym_forward_batch_sequences(p->fw[m]), L = p->calib.seq_len;
    sym_status s = SYM_OK;
    for (size_t first = 0; first < p->calib.n_seq && s == SYM_OK; first += batch) {
        size_t n = p->calib.n_seq - first < batch ? p->calib.n_seq - first : batch;
        s = sym_forward_layer(p->fw[m], l, p->h[m] + first * L * p->hidden, n, L,
                              act != NULL ? act + first * L * p->d_ff : NULL, err);
    }
    sym_forward_release_weights(p->fw[m]);
    return s;
}

/* Appends source e's alignment diagnostics and the seconds of its steps: statistics and
 * correlation, the assignment solve, and writing the correlation file. */
static void append_diag(json_t *diags, size_t e, const sym_align_diag *dg,
                        const double seconds[3])
{
    json_t *j = json_pack("{s:i, s:f, s:f, s:i, s:i}", "source", (json_int_t)e,
                          "mean_matched_corr", dg->mean_matched_corr, "identity_fraction",
                          dg->identity_fraction, "dead_anchor", (json_int_t)dg->dead_anchor,
                          "dead_source", (json_int_t)dg->dead_source);
    json_object_set_new(j, "seconds", json_pack("{s:f, s:f, s:f}", "correlation", seconds[0],
                                                "assignment", seconds[1], "store",
                                                seconds[2]));
    json_array_append_new(diags, j);
}

static sym_status align_source(sym_pipeline *p, size_t e, int l, json_t *diags, sym_error *err)
{
    size_t f = p->d_ff;
    sym_act_stats sa = {0}, sb = {0};
    double t0 = now_s(), seconds[3] = {0, 0, 0};
    float *corr = p->weights; /* no source's weights are loaded during the alignment */
    sym_status s = sym_act_stats_init(&sa, f, err);
    if (s == SYM_OK)
        s = sym_act_stats_init(&sb, f, err);
    if (s == SYM_OK)
        s = sym_act_stats_add(&sa, p->act_anchor, p->tokens, err);
    if (s == SYM_OK)
        s = sym_act_stats_add(&sb, p->act, p->tokens, err);
    if (s == SYM_OK)
        s = sym_act_stats_finish(&sa, err);
    if (s == SYM_OK)
        s = sym_act_stats_finish(&sb, err);
    if (s == SYM_OK)
        s = sym_align_correlation(p->act_anchor, &sa, p->act, &sb, 0, corr, err);
    double t1 = now_s();
    if (s == SYM_OK)
        s = sym_align_solve(corr, f, p->setup.opts->threads, p->perm[e], NULL, err);
    double t2 = now_s();
    sym_align_diag dg;
    if (s == SYM_OK) {
        sym_align_diagnose(corr, f, p->perm[e], &sa, &sb, &dg);
        char path[4096];
        work_path(p, path, sizeof path, "stats", l, (int)e, "sta");
        sym_actstore_record rec = {SYM_ACTSTORE_CORRELATION, (uint32_t)l, (uint32_t)e, f,
                                   p->tokens, f, 0, sb.mean, sb.std, corr};
        s = sym_actstore_write(path, &rec, 0, err);
    }
    seconds[0] = t1 - t0;
    seconds[1] = t2 - t1;
    seconds[2] = now_s() - t2;
    if (s == SYM_OK)
        append_diag(diags, e, &dg, seconds);
    sym_act_stats_free(&sa);
    sym_act_stats_free(&sb);
    return s;
}

static sym_status align_layer(sym_pipeline *p, int l, json_t *diags, sym_error *err)
{
    double t0 = now_s();
    sym_status s = source_forward(p, p->anchor, l, p->act_anchor, err);
    double t_fwd = now_s() - t0, t_align = 0;
    for (size_t m = 0; m < p->n_models && s == SYM_OK; m++) {
        if (m == p->anchor)
            continue;
        double t1 = now_s();
        s = source_forward(p, m, l, m < p->n_experts ? p->act : NULL, err);
        double t2 = now_s();
        t_fwd += t2 - t1;
        if (s == SYM_OK && m < p->n_experts)
            s = align_source(p, m, l, diags, err);
        t_align += now_s() - t2;
        p->state.perm[m] = m < p->n_experts ? p->perm[m] : NULL;
    }
    if (p->anchor < p->n_experts)
        p->state.perm[p->anchor] = NULL;
    p->seconds[STAGE_FORWARD] += t_fwd;
    p->seconds[STAGE_ALIGN] += t_align;
    return s;
}

typedef struct expert_context {
    const sym_merged_layer *layer;
    const float *x;
    float *rows;
} expert_context;

/* Expert outputs for the distillation objective: the merged layer's experts on the batch. */
static sym_status expert_outputs(void *context, const uint32_t *tokens, size_t count,
                                 float *out, sym_error *err)
{
    expert_context *c = context;
    size_t d = c->layer->hidden;
    for (size_t i = 0; i < count; i++)
        memcpy(c->rows + i * d, c->x + (size_t)tokens[i] * d, d * sizeof *c->rows);
    return sym_merged_experts(c->layer, c->rows, count, out, err);
}

/* Initial rows for gate_mode hidden: the L2-normalised mean router input of each domain's
 * calibration tokens.
 * TODO: mergekit computes these rows from positive_prompts on the base model instead. */
static void hidden_gate_rows(const float *x, const uint32_t *labels, size_t tokens,
                             size_t experts, size_t d, float *rows)
{
    double *sum = calloc(experts * d, sizeof *sum);
    if (sum == NULL)
        return;
    for (size_t t = 0; t < tokens; t++)
        for (size_t i = 0; i < d; i++)
            sum[labels[t] * d + i] += (double)x[t * d + i];
    for (size_t e = 0; e < experts; e++) {
        double norm = 0;
        for (size_t i = 0; i < d; i++)
            norm += sum[e * d + i] * sum[e * d + i];
        norm = norm > 0 ? sqrt(norm) : 1.0;
        for (size_t i = 0; i < d; i++)
            rows[e * d + i] = (float)(sum[e * d + i] / norm);
    }
    free(sum);
}

sym_status sym_pipeline_expert_cache(const sym_merge_config *cfg, const sym_merged_layer *w,
                                     const float *x, size_t tokens, float **y,
                                     sym_error *err)
{
    *y = NULL;
    size_t row = w->experts * w->hidden * sizeof(float);
    if (!sym_router_objective_uses_experts(cfg->router.objective) ||
        tokens > SYM_EXPERT_CACHE_BYTES / row)
        return SYM_OK;
    float *out = malloc(tokens * row + 1);
    if (out == NULL)
        return SYM_OK; /* the trainer then computes the outputs per batch */
    sym_status s = sym_merged_experts_all(w, x, tokens, out, err);
    if (s == SYM_OK)
        *y = out;
    else
        free(out);
    return s;
}

sym_status sym_pipeline_train_router(const sym_merge_config *cfg, int layer,
                                     const sym_merged_layer *w, const float *x,
                                     const float *y, const uint32_t *labels, size_t tokens,
                                     const double *label_weights, int threads, float *router,
                                     sym_router_report *report, sym_error *err)
{
    sym_router_config rc;
    sym_pipeline_router_config(cfg, layer, w->hidden, threads, &rc);
    rc.label_weights = label_weights;
    size_t batch = rc.batch_size < tokens ? rc.batch_size : tokens;
    expert_context ec = {w, x, y == NULL ? malloc(batch * w->hidden * sizeof(float) + 1) : NULL};
    float *init = malloc(w->experts * w->hidden * sizeof *init);
    if ((y == NULL && ec.rows == NULL) || init == NULL) {
        free(ec.rows);
        free(init);
        return sym_error_set(err, SYM_ERR_NOMEM, "router %d: out of memory", layer);
    }
    if (cfg->router.init == SYM_ROUTER_INIT_GATE_MODE && rc.gate_mode == SYM_ROUTER_GATE_ZERO) {
        hidden_gate_rows(x, labels, tokens, w->experts, w->hidden, init);
        rc.gate_mode = SYM_ROUTER_GATE_ROWS;
        rc.init_rows = init;
    }
    sym_router_dense dense = {y, w->experts, w->hidden};
    sym_router_data data = {x, tokens, labels, expert_outputs, &ec};
    if (y != NULL) {
        data.expert_outputs = sym_router_dense_experts;
        data.expert_context = &dense;
    }
    sym_status s = sym_router_train(&rc, &data, router, report, err);
    free(ec.rows);
    free(init);
    return s;
}

json_t *sym_pipeline_router_json(const sym_router_report *r, size_t experts,
                                 const double *label_weights)
{
    json_t *load = json_array();
    for (size_t e = 0; e < experts; e++)
        json_array_append_new(load, json_real(r->expert_load[e]));
    json_t *j = json_pack("{s:f, s:f, s:f, s:f, s:i}", "initial_train_loss",
                          r->initial_train_loss, "train_loss", r->train_loss,
                          "train_accuracy", r->train_accuracy, "holdout_accuracy",
                          isnan(r->holdout_accuracy) ? -1.0 : r->holdout_accuracy, "steps",
                          (json_int_t)r->steps);
    json_object_set_new(j, "holdout_loss",
                        isnan(r->holdout_loss) ? json_null() : json_real(r->holdout_loss));
    json_object_set_new(j, "expert_load", load);
    if (label_weights != NULL) {
        json_t *weights = json_array();
        for (size_t e = 0; e < experts; e++)
            json_array_append_new(weights, json_real(label_weights[e]));
        json_object_set_new(j, "domain_weights", weights);
    }
    return j;
}

/* Computes the domain weights of the current layer's router loss. p->hm is then the
 * residual stream after the layer's attention. */
static sym_status lens_weights(sym_pipeline *p, const float *y, double *weights,
                               sym_error *err)
{
    sym_lens_input in = {
        .sources = p->setup.sources,
        .layer = &p->layer,
        .h = p->hm,
        .x = p->x,
        .y = y,
        .labels = p->calib.labels,
        .per_domain = p->calib.per_domain,
        .tokens = p->tokens,
        .seq_len = p->calib.seq_len,
        .experts = p->n_experts,
        .hidden = p->hidden,
        .eps = p->attn.eps,
    };
    return sym_lens_domain_weights(&in, weights, err);
}

static sym_status merged_layer_pass(sym_pipeline *p, int l, json_t *report, sym_error *err)
{
    double t0 = now_s();
    sym_status s = load_merged_attention(p, l, err);
    if (s == SYM_OK)
        s = sym_merged_attention(&p->attn, &p->layer, p->hm, p->calib.n_seq, p->calib.seq_len,
                                 p->x, err);
    free_merged_attention(&p->layer);
    if (s == SYM_OK)
        s = load_merged_experts(p, l, err);
    /* Routers train on the rounded inputs, which is what retrain-router reads back. */
    sym_hcache_round(p->x, p->tokens * p->hidden, p->cfg->cache_dtype);
    char path[4096];
    work_path(p, path, sizeof path, "x", l, -1, "hc");
    if (s == SYM_OK)
        s = sym_hcache_write(path, p->x, p->tokens, p->hidden, p->cfg->cache_dtype, err);
    double t1 = now_s();
    sym_router_report rr;
    float *y = NULL;
    double weights[SYM_MAX_SOURCES];
    bool lens = p->cfg->router.domain_weights == SYM_DOMAIN_WEIGHTS_LENS;
    if (s == SYM_OK)
        s = sym_pipeline_expert_cache(p->cfg, &p->layer, p->x, p->tokens, &y, err);
    double t_cache = now_s();
    if (s == SYM_OK && lens)
        s = lens_weights(p, y, weights, err);
    double t_lens = now_s();
    if (y != NULL)
        free_merged_experts(&p->layer);
    if (s == SYM_OK)
        s = sym_pipeline_train_router(p->cfg, l, &p->layer, p->x, y, p->calib.labels,
                                      p->tokens, lens ? weights : NULL,
                                      p->setup.opts->threads, p->router, &rr, err);
    if (s == SYM_OK)
        s = round_to_dtype(p->router, p->n_experts * p->hidden, p->cfg->dtype, err);
    double t2 = now_s();
    size_t top_k = (size_t)p->cfg->experts_per_token;
    if (s == SYM_OK && y != NULL)
        sym_merged_mix(&p->layer, p->router, top_k, p->x, y, p->tokens, p->hm);
    else if (s == SYM_OK)
        s = sym_merged_moe(&p->layer, p->router, top_k, p->x, p->tokens, p->hm, err);
    free(y);
    free_merged_experts(&p->layer);
    if (s == SYM_OK) {
        json_t *router = sym_pipeline_router_json(&rr, p->n_experts, lens ? weights : NULL);
        json_object_set_new(router, "seconds",
                            json_pack("{s:f, s:f, s:f}", "expert_outputs", t_cache - t1,
                                      "lens_weights", t_lens - t_cache, "training",
                                      t2 - t_lens));
        json_object_set_new(report, "router", router);
    }
    p->state.router = p->router;
    p->seconds[STAGE_MERGED] += (t1 - t0) + (now_s() - t2);
    p->seconds[STAGE_ROUTER] += t2 - t1;
    return s;
}

static void progress(sym_pipeline *p, int l, const char *stage)
{
    if (p->setup.step != NULL)
        p->setup.step(p->setup.step_context, l, stage);
}

/* Brings the input states of layer l into memory: embeddings for layer 0, else the cache
 * files the previous layer wrote. */
static sym_status ensure_states(sym_pipeline *p, int l, sym_error *err)
{
    if (p->state_layer == l)
        return SYM_OK;
    double t0 = now_s();
    sym_status s = l == 0 ? embed_all(p, err) : cache_io(p, l, false, err);
    p->seconds[STAGE_CACHE] += now_s() - t0;
    if (s == SYM_OK)
        p->state_layer = l;
    return s;
}

static bool layer_stored(const sym_pipeline *p, int l, json_t **report)
{
    char path[4096];
    for (size_t m = 0; m < p->n_models; m++) {
        work_path(p, path, sizeof path, "h", (int)m, l + 1, "hc");
        if (!file_exists(path))
            return false;
    }
    work_path(p, path, sizeof path, "merged", l + 1, -1, "hc");
    if (!file_exists(path))
        return false;
    work_path(p, path, sizeof path, "layer", l, -1, "json");
    *report = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    return *report != NULL;
}

static sym_status compute_layer(sym_pipeline *p, int l, json_t *report, sym_error *err)
{
    json_t *diags = json_array();
    json_object_set_new(report, "alignment", diags);
    progress(p, l, "source forward and alignment");
    sym_status s = acquire_weights(p, l, err);
    if (s == SYM_OK)
        s = align_layer(p, l, diags, err);
    progress(p, l, "merged forward and router training");
    if (s == SYM_OK)
        s = merged_layer_pass(p, l, report, err);
    release_weights(p);
    double t0 = now_s();
    sym_kill_point();
    if (s == SYM_OK)
        s = cache_io(p, l + 1, true, err);
    p->seconds[STAGE_CACHE] += now_s() - t0;
    sym_kill_point();
    if (s == SYM_OK)
        p->state_layer = l + 1;
    char name[64];
    snprintf(name, sizeof name, "layer-%d.json", l);
    if (s == SYM_OK)
        s = sym_write_json_file(report, p->setup.work_dir, name, err);
    return s;
}

sym_status sym_pipeline_layer(sym_pipeline *p, int l, bool written, sym_error *err)
{
    json_t *report = NULL;
    p->state.layer = l;
    if (written && layer_stored(p, l, &report)) {
        json_array_append_new(p->layers, report);
        return SYM_OK;
    }
    sym_status s = ensure_states(p, l, err);
    report = json_pack("{s:i}", "layer", (json_int_t)l);
    if (s == SYM_OK)
        s = compute_layer(p, l, report, err);
    json_array_append_new(p->layers, report);
    return s;
}

/* Returns the bytes of the plain files in dir as they lie on disk (zstd-compressed caches,
 * statistics and reports), 0 when it cannot be read. */
static uint64_t work_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    uint64_t sum = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    return sum;
}

sym_status sym_pipeline_report(sym_pipeline *p, const char *dir, sym_error *err)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    json_t *stages = json_object();
    for (int i = 0; i < STAGE_COUNT; i++)
        json_object_set_new(stages, stage_names[i], json_real(p->seconds[i]));
    json_t *domains = json_array();
    for (size_t e = 0; e < p->n_experts; e++)
        json_array_append_new(domains, json_pack("{s:i, s:b}", "tokens",
                                                 (json_int_t)p->calib.per_domain[e], "short",
                                                 p->calib.short_domain[e]));
    json_t *j = json_pack("{s:i, s:i, s:O, s:o, s:o, s:I, s:I}", "calibration_tokens",
                          (json_int_t)p->tokens, "sequence_length",
                          (json_int_t)p->calib.seq_len, "layers", p->layers, "domains",
                          domains, "stage_seconds", stages, "cache_bytes",
                          (json_int_t)work_dir_bytes(p->work_dir), "peak_rss_kib", (json_int_t)ru.ru_maxrss);
    json_object_set_new(j, "anchor", json_integer((json_int_t)p->anchor));
    sym_status s = sym_write_json_file(j, dir, SYM_REPORT_NAME, err);
    json_decref(j);
    return s;
}
