/* Out-of-core forward pass of Llama-family and Mixtral models, in f32.
 *
 * Semantics are Hugging Face's LlamaForCausalLM / MixtralForCausalLM: RMSNorm, RoPE with
 * rotate_half pairing (dimension i with i + head_dim / 2), causal attention with grouped KV
 * heads (query head h reads KV head h / (H / KV)), SwiGLU FFN down(silu(gate x) * up x),
 * Mixtral routing (softmax in f32, top-k with ties to the lower expert index, the k
 * weights renormalised to sum to 1), final norm, lm_head or the tied embedding.
 *
 * The pass runs layer by layer over a batch of sequences: every token of the batch goes
 * through layer l before layer l + 1 is touched. Only the current layer's weights are held
 * in f32 (the next layer is prefetched, see stream.h), so memory does not grow with the
 * number of layers. GEMMs go through OpenBLAS.
 *
 * Shapes: hidden states are [n_tokens, hidden_size] row-major f32, where a batch of n_seq
 * sequences of seq_len tokens is stored sequence after sequence (n_tokens = n_seq x
 * seq_len) and token t of a sequence has position t.
 */
#ifndef SYMPHONY_FORWARD_H
#define SYMPHONY_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/model.h"
#include "symphony/status.h"
#include "symphony/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called after each layer of a pass: layer index (n_layers for the output head), the
 * number of layers, and the tokens of the current batch. */
typedef void (*sym_progress_fn)(void *ctx, int layer, int n_layers, uint64_t batch_tokens);

typedef struct sym_forward_options {
    int threads;              /* our threads and OpenBLAS's; 0 keeps OpenBLAS's default */
    uint64_t memory_limit;    /* bytes the plan must fit in; 0 for no limit */
    int seq_len;              /* tokens per sequence the plan is sized for */
    int max_sequences;        /* sequences per batch; 0 for as many as the limit allows */
    int kv_positions;         /* KV cache positions for generation; 0 for none */
    sym_prefetch_mode prefetch;
    sym_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    /* Oracle-router diagnostic for MoE models: every token of every layer uses expert
     * force_expert alone with weight 1, whatever the router outputs. -1 routes normally. */
    int force_expert;
} sym_forward_options;

/* Fills options with the defaults: 1 thread, no limit, seq_len 128, read-mode prefetch. */
void sym_forward_options_init(sym_forward_options *options);

/* Computes RoPE's inverse frequencies [head_dim / 2] for a config, applying its
 * rope_scaling: none, "linear" (divided by factor) or "llama3" (Llama 3.1's
 * wavelength-dependent scaling). Other scaling types are SYM_ERR_UNSUPPORTED. */
sym_status sym_rope_inv_freq(const sym_model_config *config, float *inv_freq, sym_error *err);

typedef struct sym_forward sym_forward;

/* Plans a forward pass: the layer weight buffer, activations for a batch of sequences and
 * the prefetch stream. Fails with SYM_ERR_LIMIT, naming the bytes needed, when not even
 * one sequence fits in options->memory_limit. The model must outlive the pass. */
sym_status sym_forward_create(sym_forward **forward, const sym_model *model,
                              const sym_forward_options *options, sym_error *err);

void sym_forward_free(sym_forward *forward);

/* Frees the f32 copy of the loaded layer's weights. The next sym_forward_layer
 * allocates it again, so callers that hold several passes can keep one layer at a time.
 * With a lent buffer it only marks the weights as not loaded. */
void sym_forward_release_weights(sym_forward *forward);

/* Returns the floats of one layer's f32 weights, the size a buffer lent with
 * sym_forward_lend_weights needs. */
uint64_t sym_forward_weight_floats(const sym_forward *forward);

/* Makes the pass keep its layer weights in buffer (sym_forward_weight_floats floats or
 * more) instead of its own allocation, which it frees. Several passes may share one buffer
 * if each calls sym_forward_release_weights before another writes the buffer. Release
 * then keeps the buffer. NULL ends the loan, and the next layer allocates its own again.
 * The buffer must stay valid until the loan ends or the pass is freed. */
void sym_forward_lend_weights(sym_forward *forward, float *buffer);

/* Returns how many sequences of options->seq_len tokens one batch contains. */
size_t sym_forward_batch_sequences(const sym_forward *forward);

/* Bytes of memory the plan allocates (weights, staging, activations, KV cache). */
uint64_t sym_forward_plan_bytes(const sym_forward *forward);

/* Writes the embedding rows of n_tokens ids into hidden [n_tokens, hidden_size]. An id
 * outside the vocabulary is SYM_ERR_INVALID. */
sym_status sym_forward_embed(sym_forward *forward, const int32_t *ids, size_t n_tokens,
                             float *hidden, sym_error *err);

/* Runs decoder layer `layer` in place on hidden [n_seq x seq_len, hidden_size]. When
 * ffn_act is not NULL (dense models only) it receives the FFN's intermediate activations
 * silu(gate x) * up x, [n_seq x seq_len, intermediate_size]. n_seq x seq_len must not
 * exceed the plan's batch, nor seq_len max_position_embeddings. Loads the layer's weights
 * unless it is the one loaded last, and starts prefetching layer + 1. */
sym_status sym_forward_layer(sym_forward *forward, int layer, float *hidden, size_t n_seq,
                             size_t seq_len, float *ffn_act, sym_error *err);

/* Applies the final norm and the output layer: logits [n_tokens, vocab_size]. hidden is
 * normalised in place. */
sym_status sym_forward_logits(sym_forward *forward, float *hidden, size_t n_tokens,
                              float *logits, sym_error *err);

/* Applies the final norm and the output layer and adds, for each token, the negative
 * log-likelihood of targets[t] (log-sum-exp in f64 over the f32 logits) to *nll_sum.
 * The logits are produced in vocabulary panels and never held whole. */
sym_status sym_forward_nll(sym_forward *forward, float *hidden, const int32_t *targets,
                           size_t n_tokens, double *nll_sum, sym_error *err);

/* Wall time of the phases of a pass in seconds (CLOCK_MONOTONIC), summed over layers and
 * batches. Embedding lookups and planning are not counted. */
typedef struct sym_forward_timing {
    double io_wait;   /* blocked in sym_stream_acquire until a layer's bytes were in */
    double convert;   /* converting a layer's weights to f32 */
    double attention; /* input norm, Q/K/V/O projections, RoPE, attention, residual add */
    double ffn;       /* post-attention norm, FFN or MoE block, residual add */
    double head;      /* final norm, output layer and log-sum-exp */
} sym_forward_timing;

/* Perplexity of an id sequence: ids are cut into consecutive chunks of seq_len (a shorter
 * tail dropped); chunk c is scored as input [BOS] + c[:-1] with targets c. */
typedef struct sym_eval_result {
    double nll_sum;  /* nats, summed in f64 */
    uint64_t tokens; /* scored tokens */
    double ppl;      /* exp(nll_sum / tokens) */
    uint64_t chunks;
    uint64_t batches;
    sym_forward_timing timing;
} sym_eval_result;

/* Runs the perplexity evaluation. Needs a bos_token_id in the config and at least one
 * full chunk. */
sym_status sym_eval_perplexity(const sym_model *model, const int32_t *ids, size_t n_ids,
                               const sym_forward_options *options, sym_eval_result *result,
                               sym_error *err);

/* Runs one sequence of n ids through the whole model: logits [n, vocab_size]. */
sym_status sym_forward_sequence_logits(const sym_model *model, const int32_t *ids, size_t n,
                                       const sym_forward_options *options, float *logits,
                                       sym_error *err);

/* Generation settings: temperature 0 is greedy (ties to the lower id). */
typedef struct sym_generate_options {
    size_t max_new_tokens;
    double temperature;
    uint64_t seed;
    int64_t eos_token_id; /* stop after emitting it; -1 never stops early */
} sym_generate_options;

/* Generates up to max_new_tokens after the prompt with a KV cache, streaming every layer
 * once per step. out receives the new ids (room for max_new_tokens), *n_out their count. */
sym_status sym_generate(const sym_model *model, const int32_t *prompt, size_t n_prompt,
                        const sym_generate_options *gen, const sym_forward_options *options,
                        int32_t *out, size_t *n_out, sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
