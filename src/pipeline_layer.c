/* The merged model's layer in f32 during calibration: attention, experts and Mixtral
 * routing, with Hugging Face semantics (rotate_half RoPE, grouped KV heads, RMSNorm,
 * softmax router with top-k renormalised, ties to the lower expert index). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline_internal.h"

/* Tokens per block of expert evaluation. */
#define MOE_BLOCK 1024u

/* out[rows, n] = x[rows, k] W^T with W [n, k]. */
static void linear(float *out, const float *x, const float *w, size_t rows, size_t n, size_t k)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)k, 1.0f, x,
                (int)k, w, (int)k, 0.0f, out, (int)n);
}

static void rms_norm(float *y, const float *x, const float *w, size_t rows, size_t n,
                     float eps)
{
    for (size_t r = 0; r < rows; r++) {
        double ss = 0;
        for (size_t i = 0; i < n; i++)
            ss += (double)x[r * n + i] * (double)x[r * n + i];
        float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
        for (size_t i = 0; i < n; i++)
            y[r * n + i] = w[i] * (x[r * n + i] * scale);
    }
}

static void rope_rows(const sym_merged_attn *a, float *x, size_t heads, size_t n_seq,
                      size_t seq_len)
{
    size_t hd = a->head_dim, half = hd / 2;
    for (size_t t = 0; t < n_seq * seq_len; t++) {
        const float *c = a->cos_t + (t % seq_len) * half, *s = a->sin_t + (t % seq_len) * half;
        for (size_t h = 0; h < heads; h++) {
            float *v = x + (t * heads + h) * hd;
            for (size_t i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c[i] - x2 * s[i];
                v[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

/* Causal softmax of the scores [L, L] in place: row i keeps columns 0..i, normalised to
 * sum to 1, and the columns after i become 0. */
static void causal_softmax(float *scores, size_t L)
{
    for (size_t i = 0; i < L; i++) {
        float *row = scores + i * L, max = -INFINITY, sum = 0;
        for (size_t j = 0; j <= i; j++)
            max = row[j] > max ? row[j] : max;
        for (size_t j = 0; j <= i; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        for (size_t j = 0; j <= i; j++)
            row[j] /= sum;
        memset(row + i + 1, 0, (L - i - 1) * sizeof *row);
    }
}

/* Causal attention of every (sequence, query head) pair with two sgemm calls each: the
 * scores Q K^T / sqrt(head_dim) over the whole sequence, of which the causal softmax keeps
 * the lower triangle, then the weighted sum of the values. scores has room for L x L
 * floats. */
static void attention_core(const sym_merged_attn *a, const float *q, const float *k,
                           const float *v, size_t n_seq, size_t seq_len, float *scores,
                           float *out)
{
    size_t hd = a->head_dim, qd = a->heads * hd, kvd = a->kv_heads * hd;
    size_t group = a->heads / a->kv_heads, L = seq_len;
    float scale = 1.0f / sqrtf((float)hd);
    for (size_t s = 0; s < n_seq; s++) {
        for (size_t h = 0; h < a->heads; h++) {
            size_t base = s * L, kv = (h / group) * hd;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)L, (int)hd,
                        scale, q + base * qd + h * hd, (int)qd, k + base * kvd + kv,
                        (int)kvd, 0.0f, scores, (int)L);
            causal_softmax(scores, L);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)L, (int)hd, (int)L,
                        1.0f, scores, (int)L, v + base * kvd + kv, (int)kvd, 0.0f,
                        out + base * qd + h * hd, (int)qd);
        }
    }
}

sym_status sym_merged_attention(const sym_merged_attn *a, const sym_merged_layer *w, float *h,
                                size_t n_seq, size_t seq_len, float *x, sym_error *err)
{
    size_t t = n_seq * seq_len, d = a->hidden;
    size_t qd = a->heads * a->head_dim, kvd = a->kv_heads * a->head_dim;
    float *q = malloc(t * qd * sizeof *q), *k = malloc(t * kvd * sizeof *k);
    float *v = malloc(t * kvd * sizeof *v), *o = malloc(t * qd * sizeof *o);
    float *scores = malloc(seq_len * seq_len * sizeof *scores);
    sym_status s = SYM_OK;
    if (q == NULL || k == NULL || v == NULL || o == NULL || scores == NULL) {
        s = sym_error_set(err, SYM_ERR_NOMEM, "merged attention: out of memory");
    } else {
        rms_norm(x, h, w->in_norm, t, d, a->eps);
        linear(q, x, w->q, t, qd, d);
        linear(k, x, w->k, t, kvd, d);
        linear(v, x, w->v, t, kvd, d);
        rope_rows(a, q, a->heads, n_seq, seq_len);
        rope_rows(a, k, a->kv_heads, n_seq, seq_len);
        attention_core(a, q, k, v, n_seq, seq_len, scores, o);
        linear(x, o, w->o, t, d, qd);
        for (size_t i = 0; i < t * d; i++)
            h[i] += x[i];
        rms_norm(x, h, w->post_norm, t, d, a->eps);
    }
    free(q);
    free(k);
    free(v);
    free(o);
    free(scores);
    return s;
}

static void expert_block(const sym_merged_layer *w, size_t e, const float *x, size_t count,
                         float *g, float *u, float *y)
{
    size_t d = w->hidden, f = w->d_ff;
    linear(g, x, w->gate[e], count, f, d);
    linear(u, x, w->up[e], count, f, d);
    for (size_t i = 0; i < count * f; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    linear(y, g, w->down[e], count, d, f);
}

sym_status sym_merged_experts(const sym_merged_layer *w, const float *x, size_t count,
                              float *out, sym_error *err)
{
    size_t d = w->hidden, f = w->d_ff;
    float *g = malloc(count * f * sizeof *g + 1), *u = malloc(count * f * sizeof *u + 1);
    float *y = malloc(count * d * sizeof *y + 1);
    sym_status s = SYM_OK;
    if (g == NULL || u == NULL || y == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "expert outputs: out of memory");
    for (size_t e = 0; e < w->experts && s == SYM_OK; e++) {
        expert_block(w, e, x, count, g, u, y);
        for (size_t t = 0; t < count; t++)
            memcpy(out + (t * w->experts + e) * d, y + t * d, d * sizeof *y);
    }
    free(g);
    free(u);
    free(y);
    return s;
}

/* Mixtral routing of one token: weights[e] is the renormalised top-k weight, else 0. */
static void route(const float *router, size_t experts, size_t d, size_t k, const float *x,
                  float *weights)
{
    float p[SYM_MAX_SOURCES], max = -INFINITY, sum = 0;
    for (size_t e = 0; e < experts; e++) {
        float dot = 0;
        for (size_t i = 0; i < d; i++)
            dot += router[e * d + i] * x[i];
        p[e] = dot;
        max = dot > max ? dot : max;
    }
    for (size_t e = 0; e < experts; e++) {
        p[e] = expf(p[e] - max);
        sum += p[e];
    }
    bool chosen[SYM_MAX_SOURCES] = {false};
    float picked = 0;
    for (size_t n = 0; n < k; n++) {
        size_t best = experts;
        for (size_t e = 0; e < experts; e++)
            if (!chosen[e] && (best == experts || p[e] > p[best]))
                best = e;
        chosen[best] = true;
        picked += p[best] / sum;
    }
    for (size_t e = 0; e < experts; e++)
        weights[e] = chosen[e] ? p[e] / sum / picked : 0.0f;
}

sym_status sym_merged_experts_all(const sym_merged_layer *w, const float *x, size_t tokens,
                                  float *y, sym_error *err)
{
    size_t d = w->hidden, n = w->experts;
    sym_status s = SYM_OK;
    for (size_t first = 0; first < tokens && s == SYM_OK; first += MOE_BLOCK) {
        size_t count = tokens - first < MOE_BLOCK ? tokens - first : MOE_BLOCK;
        s = sym_merged_experts(w, x + first * d, count, y + first * n * d, err);
    }
    return s;
}

void sym_merged_mix(const sym_merged_layer *w, const float *router, size_t top_k,
                    const float *x, const float *y, size_t tokens, float *h)
{
    size_t d = w->hidden, n = w->experts;
    for (size_t t = 0; t < tokens; t++) {
        float weights[SYM_MAX_SOURCES];
        route(router, n, d, top_k, x + t * d, weights);
        for (size_t e = 0; e < n; e++)
            for (size_t i = 0; i < d && weights[e] > 0; i++)
                h[t * d + i] += weights[e] * y[((t * n) + e) * d + i];
    }
}

sym_status sym_merged_moe(const sym_merged_layer *w, const float *router, size_t top_k,
                          const float *x, size_t tokens, float *h, sym_error *err)
{
    size_t d = w->hidden, n = w->experts;
    float *y = malloc((size_t)MOE_BLOCK * n * d * sizeof *y);
    if (y == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "merged layer: out of memory");
    sym_status s = SYM_OK;
    for (size_t first = 0; first < tokens && s == SYM_OK; first += MOE_BLOCK) {
        size_t count = tokens - first < MOE_BLOCK ? tokens - first : MOE_BLOCK;
        s = sym_merged_experts(w, x + first * d, count, y, err);
        if (s == SYM_OK)
            sym_merged_mix(w, router, top_k, x + first * d, y, count, h + first * d);
    }
    free(y);
    return s;
}
