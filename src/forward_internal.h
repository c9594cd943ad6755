/* State shared by the forward-pass source files. */
#ifndef SYMPHONY_FORWARD_INTERNAL_H
#define SYMPHONY_FORWARD_INTERNAL_H

#include <stdbool.h>
#include <time.h>

#include "symphony/forward.h"

/* Largest num_local_experts the router accepts. */
#define SYM_FORWARD_MAX_EXPERTS 256

/* Views into the f32 weight arena of the loaded layer. Dense models use expert slot 0. */
typedef struct layer_weights {
    float *in_norm, *post_norm;
    float *q, *k, *v, *o;
    float *router; /* [experts, hidden], MoE only */
    float **gate, **up, **down;
} layer_weights;

struct sym_forward {
    const sym_model *model;
    sym_model_config cfg;
    sym_forward_options opt;
    sym_stream *stream;
    size_t experts;      /* num_local_experts, or 1 for a dense FFN */
    bool moe;
    int loaded;          /* layer in the arena, or -1 */
    bool last_pass;      /* no pass follows, so the last layer does not prefetch layer 0 */
    float *arena;
    bool arena_lent;     /* the arena belongs to the caller (sym_forward_lend_weights) */
    layer_weights w;
    float *final_norm;
    size_t batch_seqs, batch_tokens;

    /* Activations for batch_tokens tokens. */
    float *xn, *out, *q, *k, *v, *attn, *gate, *up;
    float *moe_x, *moe_y, *router_p, *route_w;
    int32_t *moe_rows;
    float *scores; /* one row of attention scores per thread */
    size_t score_len;

    /* RoPE tables [positions, head_dim / 2]. */
    float *rope_cos, *rope_sin;
    size_t rope_positions;

    /* KV cache [layers, kv_positions, kv_heads x head_dim], generation only. */
    float *kv_k, *kv_v;

    /* Output head in panels of head_rows vocabulary rows, over token blocks. */
    size_t head_rows, head_tokens;
    float *head_w, *head_logits;
    double *lse_max, *lse_sum, *target_logit;

    uint64_t plan_bytes;
    sym_forward_timing timing;
};

/* Seconds on the monotonic clock, for sym_forward_timing. */
static inline double fwd_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Converts layer l's weights to f32 in the arena unless they are there already, and
 * prefetches the next layer. */
sym_status fwd_load_layer(sym_forward *fw, int l, sym_error *err);

/* Runs one layer at positions pos0.. of each sequence, with the KV cache when use_cache
 * (then n_seq must be 1). */
sym_status fwd_run_layer(sym_forward *fw, int layer, float *hidden, size_t n_seq,
                         size_t seq_len, size_t pos0, bool use_cache, float *ffn_act,
                         sym_error *err);

/* Causal grouped-query attention of q, k, v (or the cache) into fw->attn. */
void fwd_attention(sym_forward *fw, int layer, size_t n_seq, size_t seq_len, size_t pos0,
                   bool use_cache);

/* Mixture-of-experts FFN of fw->xn into fw->out. */
sym_status fwd_moe(sym_forward *fw, size_t n_tokens);

/* Allocates the f32 arena of one layer's weights again after sym_forward_release_weights
 * freed it; l names the layer in the message. */
sym_status fwd_ensure_arena(sym_forward *fw, int l, sym_error *err);

#endif
