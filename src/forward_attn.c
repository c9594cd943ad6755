/* Causal grouped-query attention and the Mixtral mixture-of-experts FFN.
 *
 * Attention work is split by (sequence, query head) pairs over our own threads; each pair
 * is computed by one thread in a fixed order, so results do not depend on the thread count.
 */
#include "forward_internal.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "forward_ops.h"

typedef struct attn_job {
    sym_forward *fw;
    size_t n_seq, seq_len, pos0;
    const float *keys, *values; /* the cache of this layer, or NULL for fw->k / fw->v */
    size_t thread, threads;
} attn_job;

/* One query row against keys 0..n_keys-1: softmax(q k^T / sqrt(hd)) v into out. */
static void attend_row(const float *q, const float *k, const float *v, size_t stride,
                       size_t n_keys, size_t hd, float *scores, float *out)
{
    float scale = 1.0f / sqrtf((float)hd);
    for (size_t j = 0; j < n_keys; j++) {
        scores[j] = fwd_dot(q, k + j * stride, hd) * scale;
    }
    fwd_softmax(scores, n_keys);
    memset(out, 0, hd * sizeof *out);
    for (size_t j = 0; j < n_keys; j++)
        fwd_axpy(out, scores[j], v + j * stride, hd);
}

static void attend_pair(const attn_job *job, size_t s, size_t h, float *scores)
{
    const sym_model_config *c = &job->fw->cfg;
    size_t hd = (size_t)c->head_dim, heads = (size_t)c->num_attention_heads;
    size_t kv_heads = (size_t)c->num_key_value_heads;
    size_t g = h / (heads / kv_heads), stride = kv_heads * hd;
    const float *k = job->keys, *v = job->values;
    if (k == NULL) {
        k = job->fw->k + s * job->seq_len * stride;
        v = job->fw->v + s * job->seq_len * stride;
    }
    for (size_t i = 0; i < job->seq_len; i++) {
        size_t row = (s * job->seq_len + i) * heads + h;
        attend_row(job->fw->q + row * hd, k + g * hd, v + g * hd, stride, job->pos0 + i + 1,
                   hd, scores, job->fw->attn + row * hd);
    }
}

static void *attn_worker(void *arg)
{
    const attn_job *job = arg;
    size_t heads = (size_t)job->fw->cfg.num_attention_heads;
    float *scores = job->fw->scores + job->thread * job->fw->score_len;
    for (size_t p = job->thread; p < job->n_seq * heads; p += job->threads)
        attend_pair(job, p / heads, p % heads, scores);
    return NULL;
}

/* Appends this step's keys and values to the cache of one layer. */
static void cache_append(sym_forward *fw, int layer, size_t seq_len, size_t pos0,
                         const float **keys, const float **values)
{
    size_t kvd = (size_t)(fw->cfg.num_key_value_heads * fw->cfg.head_dim);
    size_t base = (size_t)layer * (size_t)fw->opt.kv_positions * kvd;
    memcpy(fw->kv_k + base + pos0 * kvd, fw->k, seq_len * kvd * sizeof(float));
    memcpy(fw->kv_v + base + pos0 * kvd, fw->v, seq_len * kvd * sizeof(float));
    *keys = fw->kv_k + base;
    *values = fw->kv_v + base;
}

void fwd_attention(sym_forward *fw, int layer, size_t n_seq, size_t seq_len, size_t pos0,
                   bool use_cache)
{
    size_t threads = fw->opt.threads > 1 ? (size_t)fw->opt.threads : 1;
    attn_job jobs[64];
    pthread_t ids[64];
    if (threads > 64)
        threads = 64;
    const float *keys = NULL, *values = NULL;
    if (use_cache)
        cache_append(fw, layer, seq_len, pos0, &keys, &values);
    for (size_t t = 0; t < threads; t++)
        jobs[t] = (attn_job){fw, n_seq, seq_len, pos0, keys, values, t, threads};
    size_t started = 1;
    for (; started < threads; started++) {
        if (pthread_create(&ids[started], NULL, attn_worker, &jobs[started]) != 0)
            break;
    }
    /* Pairs of threads that failed to start are run here, after the first share. */
    attn_worker(&jobs[0]);
    for (size_t t = started; t < threads; t++)
        attn_worker(&jobs[t]);
    for (size_t t = 1; t < started; t++)
        pthread_join(ids[t], NULL);
}

/* Picks the top-k experts of one token: largest probability first, ties to the lower
 * index; weights[e] gets the renormalised weight of a chosen expert, 0 otherwise. */
static void route_token(const float *probs, size_t experts, size_t k, float *weights)
{
    bool chosen[SYM_FORWARD_MAX_EXPERTS] = {false};
    size_t picks[SYM_FORWARD_MAX_EXPERTS];
    float sum = 0;
    for (size_t n = 0; n < k; n++) {
        size_t best = experts;
        for (size_t e = 0; e < experts; e++) {
            if (!chosen[e] && (best == experts || probs[e] > probs[best]))
                best = e;
        }
        chosen[best] = true;
        picks[n] = best;
        sum += probs[best];
    }
    memset(weights, 0, experts * sizeof *weights);
    for (size_t n = 0; n < k; n++)
        weights[picks[n]] = probs[picks[n]] / sum;
}

static void run_expert(sym_forward *fw, size_t e, size_t n_tokens)
{
    size_t d = (size_t)fw->cfg.hidden_size, f = (size_t)fw->cfg.intermediate_size;
    size_t n = 0;
    for (size_t t = 0; t < n_tokens; t++) {
        if (fw->route_w[t * fw->experts + e] > 0) {
            memcpy(fw->moe_x + n * d, fw->xn + t * d, d * sizeof(float));
            fw->moe_rows[n++] = (int32_t)t;
        }
    }
    if (n == 0)
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)f, (int)d, 1.0f,
                fw->moe_x, (int)d, fw->w.gate[e], (int)d, 0.0f, fw->gate, (int)f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)f, (int)d, 1.0f,
                fw->moe_x, (int)d, fw->w.up[e], (int)d, 0.0f, fw->up, (int)f);
    fwd_swiglu(fw->gate, fw->up, n * f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)d, (int)f, 1.0f,
                fw->gate, (int)f, fw->w.down[e], (int)f, 0.0f, fw->moe_y, (int)d);
    for (size_t i = 0; i < n; i++) {
        size_t t = (size_t)fw->moe_rows[i];
        fwd_axpy(fw->out + t * d, fw->route_w[t * fw->experts + e], fw->moe_y + i * d, d);
    }
}

sym_status fwd_moe(sym_forward *fw, size_t n_tokens)
{
    size_t d = (size_t)fw->cfg.hidden_size, experts = fw->experts;
    size_t k = (size_t)fw->cfg.num_experts_per_tok;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_tokens, (int)experts, (int)d,
                1.0f, fw->xn, (int)d, fw->w.router, (int)d, 0.0f, fw->router_p, (int)experts);
    for (size_t t = 0; t < n_tokens; t++) {
        fwd_softmax(fw->router_p + t * experts, experts);
        route_token(fw->router_p + t * experts, experts, k, fw->route_w + t * experts);
        if (fw->opt.force_expert >= 0) {
            memset(fw->route_w + t * experts, 0, experts * sizeof(float));
            fw->route_w[t * experts + (size_t)fw->opt.force_expert] = 1.0f;
        }
    }
    memset(fw->out, 0, n_tokens * d * sizeof(float));
    for (size_t e = 0; e < experts; e++)
        run_expert(fw, e, n_tokens);
    return SYM_OK;
}
