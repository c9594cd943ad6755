/* The calibrated merge pass: alignment, hidden-state caches and router training, one layer
 * at a time, driven by the merge writer (merge.c). Not part of the public API. */
#ifndef SYMPHONY_PIPELINE_INTERNAL_H
#define SYMPHONY_PIPELINE_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "merge_internal.h"
#include "symphony/hcache.h"
#include "symphony/merge.h"
#include "symphony/router.h"

/* Name of the work directory inside the output: statistics, caches, per-layer reports. */
#define SYM_WORK_DIR_NAME "symphony-work"
#define SYM_REPORT_NAME "merge-report.json"

/* Calibration tokens: n_seq sequences of seq_len ids, BOS first, each labelled with the
 * expert whose domain text it came from. */
typedef struct sym_calib {
    int32_t *ids;      /* [n_seq * seq_len] */
    uint32_t *seq_label; /* [n_seq] */
    uint32_t *labels;  /* [n_seq * seq_len]: every token's domain */
    size_t n_seq, seq_len;
    size_t per_domain[SYM_MAX_SOURCES]; /* tokens taken from each domain */
    bool short_domain[SYM_MAX_SOURCES]; /* the domain had less text than its share */
} sym_calib;

/* Builds the calibration tokens of a merge with the vocabulary donor's tokenizer. */
sym_status sym_calib_build(const sym_merge_config *cfg, const char *tokenizer_dir,
                           sym_calib *calib, sym_error *err);
void sym_calib_free(sym_calib *calib);

/* The merged layer in f32 (rounded to the output dtype), as the written model holds it. */
typedef struct sym_merged_layer {
    float *in_norm, *post_norm, *q, *k, *v, *o;
    float *gate[SYM_MAX_SOURCES], *up[SYM_MAX_SOURCES], *down[SYM_MAX_SOURCES];
    size_t experts, hidden, d_ff;
} sym_merged_layer;

/* Shape and RoPE of the merged model's attention. */
typedef struct sym_merged_attn {
    size_t hidden, heads, kv_heads, head_dim;
    float eps;
    float *cos_t, *sin_t; /* [seq_len, head_dim / 2] */
} sym_merged_attn;

/* h [n_seq * seq_len, hidden] += attention(h) of the merged layer; x receives the FFN input
 * post_attention_layernorm(h) afterwards. */
sym_status sym_merged_attention(const sym_merged_attn *a, const sym_merged_layer *w, float *h,
                                size_t n_seq, size_t seq_len, float *x, sym_error *err);

/* out [count, experts, hidden] = every expert's output on x rows [count, hidden]. */
sym_status sym_merged_experts(const sym_merged_layer *w, const float *x, size_t count,
                              float *out, sym_error *err);

/* h += Mixtral routing of x [tokens, hidden] over the experts with router [experts, hidden]
 * and top_k, processing tokens in blocks. */
sym_status sym_merged_moe(const sym_merged_layer *w, const float *router, size_t top_k,
                          const float *x, size_t tokens, float *h, sym_error *err);

/* Largest expert-output array, T x experts x hidden f32, that one layer keeps in memory
 * so that router training and the MoE mix compute every expert's FFN once per token.
 * Larger calibration sets recompute the outputs per training batch instead. 512 MiB is
 * 2048 tokens of 8 experts at hidden 8192 (a 70B-width layer has hidden 8192). */
#define SYM_EXPERT_CACHE_BYTES ((size_t)512 << 20)

/* Calibration tokens per matrix multiplication of a source's forward pass: whole
 * sequences, at least one. At the 13B width, one thread, OpenBLAS sgemm ran at 127 GFLOP/s
 * on 128 tokens and at 166 GFLOP/s on 512 (bench/bench_sgemm, docs/BENCHMARKS.md). Each
 * source keeps its activations for these tokens, about 250 KB per token at that width. */
#define SYM_CALIB_FORWARD_TOKENS 512u

/* Returns the sequences of seq_len tokens that a source's forward pass multiplies at once,
 * at most n_seq. */
size_t sym_pipeline_forward_sequences(size_t seq_len, size_t n_seq);

/* Computes y [tokens, experts, hidden] = every expert's output on every row of x, in the
 * same token blocks as sym_merged_moe, so the outputs equal what it computes. */
sym_status sym_merged_experts_all(const sym_merged_layer *w, const float *x, size_t tokens,
                                  float *y, sym_error *err);

/* h += Mixtral routing of x [tokens, hidden] over expert outputs y [tokens, experts,
 * hidden] from sym_merged_experts_all. */
void sym_merged_mix(const sym_merged_layer *w, const float *router, size_t top_k,
                    const float *x, const float *y, size_t tokens, float *h);

/* Produces one tensor of the merged model (job kind, role, layer; expert -1) into dst, count
 * floats, in f32 before any rounding to the output dtype. */
sym_status sym_pipeline_produce(const sym_merge_sources *sources, sym_job_kind kind,
                                sym_role role, int layer, float *dst, size_t count,
                                sym_error *err);

/* What the logit-lens domain weights (pipeline_lens.c) read at one layer. */
typedef struct sym_lens_input {
    const sym_merge_sources *sources; /* produces the final norm and lm_head */
    const sym_merged_layer *layer;    /* the experts, used when y is NULL */
    const float *h;                   /* [tokens, hidden] residual after the attention */
    const float *x;                   /* [tokens, hidden] FFN inputs */
    const float *y;                   /* [tokens, experts, hidden] expert outputs, or NULL */
    const uint32_t *labels;           /* [tokens] domain of every token */
    const size_t *per_domain;         /* [experts] calibration tokens of every domain */
    size_t tokens, seq_len, experts, hidden;
    float eps; /* RMSNorm epsilon of the final norm */
} sym_lens_input;

/* Computes weights [experts] from each domain's mean square root of the KL divergence
 * between the logit-lens predictions with its own expert's output and with the mean of all
 * experts' outputs. The weights are scaled so that their mean over the calibration tokens
 * is 1. */
sym_status sym_lens_domain_weights(const sym_lens_input *in, double *weights, sym_error *err);

typedef struct sym_pipeline sym_pipeline;

/* What the pipeline needs from the merge driver. */
typedef struct sym_pipeline_setup {
    const sym_merge_config *cfg;
    const sym_merge_options *opts;
    sym_merge_sources *sources; /* the pipeline sets sources->layer_state */
    const sym_model *base;      /* base_model when it is not an expert, or NULL */
    const sym_model *vocab_donor;
    const char *work_dir;
    /* Called as each step of a layer starts ("source forward", ...); may be NULL. */
    void (*step)(void *context, int layer, const char *step);
    void *step_context;
} sym_pipeline_setup;

sym_status sym_pipeline_create(sym_pipeline **pipe, const sym_pipeline_setup *setup,
                               sym_error *err);

/* Prepares layer l before its tensors are written: alignment, the merged layer, router
 * training and the caches of the states leaving it. written: every tensor of the layer
 * is already in the output (resume); then the stored results are used when present. */
sym_status sym_pipeline_layer(sym_pipeline *pipe, int layer, bool written, sym_error *err);

/* Writes merge-report.json into dir (per-layer alignment and router statistics, time
 * per stage, bytes, peak memory). */
sym_status sym_pipeline_report(sym_pipeline *pipe, const char *dir, sym_error *err);

void sym_pipeline_free(sym_pipeline *pipe);

/* Trains router `layer` on router inputs x [tokens, hidden] with domain labels, the
 * distillation targets coming from the merged layer's experts; writes router
 * [experts, hidden]. label_weights: [experts] weight of each domain's tokens, or NULL. y: the experts' outputs on x from sym_merged_experts_all, or NULL
 * to compute them per training batch. Used by the merge and by retrain-router. */
sym_status sym_pipeline_train_router(const sym_merge_config *cfg, int layer,
                                     const sym_merged_layer *w, const float *x,
                                     const float *y, const uint32_t *labels, size_t tokens,
                                     const double *label_weights, int threads, float *router,
                                     sym_router_report *report, sym_error *err);

/* Allocates and fills *y with sym_merged_experts_all when the distillation objective
 * needs expert outputs and they fit in SYM_EXPERT_CACHE_BYTES; else sets *y to NULL.
 * The caller frees *y. */
sym_status sym_pipeline_expert_cache(const sym_merge_config *cfg, const sym_merged_layer *w,
                                     const float *x, size_t tokens, float **y,
                                     sym_error *err);

/* Returns the merge report's entry for a trained router (a new reference), with the
 * domain weights of its loss unless label_weights is NULL. */
json_t *sym_pipeline_router_json(const sym_router_report *report, size_t experts,
                                 const double *label_weights);

/* Writes what retrain-router needs besides the x-<l>.hc router inputs into work_dir:
 * labels.hc (every calibration token's domain, [tokens, 1] f32) and router-setup.json
 * (the router settings, the merge's thread count and the shapes). */
sym_status sym_pipeline_write_router_setup(const sym_merge_config *cfg, int threads,
                                           const sym_calib *calib, size_t hidden,
                                           const char *work_dir, sym_error *err);

/* Router settings of the merge config as the trainer takes them. */
void sym_pipeline_router_config(const sym_merge_config *cfg, int layer, size_t hidden,
                                int threads, sym_router_config *rc);

#endif
