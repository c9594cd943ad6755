/* Hugging Face model directories of the Llama/Mistral family (and Mixtral MoE output).
 *
 * A model directory holds config.json and either model.safetensors or shards listed by
 * model.safetensors.index.json. Opening one validates the config, maps every shard, checks
 * the index against the shards, and resolves every tensor the forward pass and the merge
 * need through an explicit name map, checking its shape against the config.
 */
#ifndef SYMPHONY_MODEL_H
#define SYMPHONY_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/safetensors.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* RoPE scaling as read from config.json "rope_scaling" (under "type" or "rope_type"). */
typedef struct sym_rope_scaling {
    char type[32]; /* "" when rope_scaling is absent or null */
    double factor;
    double low_freq_factor;
    double high_freq_factor;
    double original_max_position_embeddings;
} sym_rope_scaling;

/* Checks that rope_scaling is one this program computes (none, linear, llama3) with valid
 * parameters. */
sym_status sym_rope_scaling_check(const sym_rope_scaling *rs, sym_error *err);

/* The architecture values of config.json, with Hugging Face's defaults filled in. */
typedef struct sym_model_config {
    char model_type[32]; /* "llama", "mistral" or "mixtral" */
    int64_t hidden_size;
    int64_t intermediate_size;
    int64_t num_hidden_layers;
    int64_t num_attention_heads;
    int64_t num_key_value_heads;
    int64_t head_dim;
    int64_t vocab_size;
    int64_t max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    sym_rope_scaling rope_scaling;
    bool tie_word_embeddings;
    int64_t num_local_experts;   /* 0 for a dense model */
    int64_t num_experts_per_tok; /* 0 for a dense model */
    int64_t bos_token_id;        /* -1 when absent */
    int64_t eos_token_id;        /* -1 when absent */
} sym_model_config;

/* Tensor roles. Per-layer roles carry a layer index; expert roles also an expert index. */
typedef enum sym_role {
    SYM_ROLE_EMBED,
    SYM_ROLE_FINAL_NORM,
    SYM_ROLE_LM_HEAD,
    SYM_ROLE_INPUT_NORM,
    SYM_ROLE_Q,
    SYM_ROLE_K,
    SYM_ROLE_V,
    SYM_ROLE_O,
    SYM_ROLE_POST_NORM,
    SYM_ROLE_FFN_GATE, /* gate_proj, or expert w1 */
    SYM_ROLE_FFN_UP,   /* up_proj, or expert w3 */
    SYM_ROLE_FFN_DOWN, /* down_proj, or expert w2 */
    SYM_ROLE_ROUTER,   /* block_sparse_moe.gate */
    SYM_ROLE_COUNT
} sym_role;

/* A tensor of an open model: its header entry and the file that maps it. */
typedef struct sym_tensor_ref {
    const sym_st_file *file;
    const sym_st_tensor *info;
} sym_tensor_ref;

typedef struct sym_model sym_model;

/* Opens a model directory. On failure *model is NULL and err names the file and key. */
sym_status sym_model_open(sym_model **model, const char *dir, sym_error *err);

void sym_model_close(sym_model *model);

const char *sym_model_dir(const sym_model *model);
const sym_model_config *sym_model_get_config(const sym_model *model);

/* The config.json object as read (a jansson json_t *), for passing unknown keys through. */
const void *sym_model_config_json(const sym_model *model);

/* Returns the tensor of a role; layer and expert are ignored where they do not apply.
 * For SYM_ROLE_LM_HEAD of a tied model this is the embedding. Every role that the model's
 * kind needs was resolved at open time, so NULL means the role does not exist in this
 * kind of model (an FFN role in a MoE with expert < 0, a router in a dense model). */
const sym_tensor_ref *sym_model_tensor(const sym_model *model, sym_role role, int layer,
                                       int expert);

/* True when the model stores no lm_head and uses the embedding as the output layer. */
bool sym_model_lm_head_tied(const sym_model *model);

/* Files of the model: one per shard. */
size_t sym_model_shard_count(const sym_model *model);
const sym_st_file *sym_model_shard(const sym_model *model, size_t index);

/* The tensor-name prefix found in the checkpoint ("model." for Hugging Face Llama). */
const char *sym_model_prefix(const sym_model *model);

/* Tensors present in the files that no role uses (for example rotary_emb.inv_freq). */
size_t sym_model_ignored_count(const sym_model *model);
const char *sym_model_ignored_name(const sym_model *model, size_t index);

/* Reads count elements starting at element first of a tensor as f32. F32, F16 and BF16
 * are converted; any other dtype is an error naming the tensor. */
sym_status sym_tensor_read_f32(const sym_tensor_ref *tensor, uint64_t first, uint64_t count,
                               float *dst, sym_error *err);

/* Returns the canonical (Hugging Face) name of a role, e.g. "model.layers.3.mlp.up_proj.weight",
 * written into buf. For a MoE (expert >= 0) the FFN roles name block_sparse_moe experts. */
const char *sym_role_name(sym_role role, int layer, int expert, char *buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif
