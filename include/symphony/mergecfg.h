/* Merge configuration: a mergekit-moe YAML file plus symphony-stream's own settings.
 *
 * A mergekit-moe config (base_model, dtype, experts_per_token, gate_mode, experts with
 * source_model and prompts) loads unchanged. The optional `symphony:` section adds the
 * method's settings. Relative paths are resolved against the config file's directory.
 */
#ifndef SYMPHONY_MERGECFG_H
#define SYMPHONY_MERGECFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/hcache.h"
#include "symphony/router.h"
#include "symphony/safetensors.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Most experts a merge accepts. */
#define SYM_MAX_SOURCES 64

/* Largest merge config file accepted, in bytes; larger files fail with SYM_ERR_LIMIT
 * before libyaml, whose document grows with the file, reads them. */
#define SYM_MERGE_CONFIG_MAX_BYTES ((long)16 << 20)

typedef enum sym_gate_mode {
    SYM_GATE_HIDDEN,         /* mergekit's default: mean hidden state of the prompts */
    SYM_GATE_HIDDEN_AVG,     /* hidden, averaged over all positions */
    SYM_GATE_CHEAP_EMBED,    /* mean token embedding of the prompts */
    SYM_GATE_RANDOM,         /* standard normal rows */
    SYM_GATE_UNIFORM_RANDOM, /* rows uniform in [-1, 1) */
} sym_gate_mode;

typedef enum sym_router_init {
    SYM_ROUTER_INIT_GATE_MODE, /* rows as gate_mode selects */
    SYM_ROUTER_INIT_ZERO,      /* all-zero rows: with k = N every token gets 1/N of each */
} sym_router_init;

/* How each domain's tokens are weighted in the router loss. */
typedef enum sym_domain_weights {
    SYM_DOMAIN_WEIGHTS_LENS,    /* by the logit-lens cost of diluting the domain's expert */
    SYM_DOMAIN_WEIGHTS_UNIFORM, /* every token 1 */
} sym_domain_weights;

typedef enum sym_attention_mode {
    SYM_ATTENTION_SLERP,           /* SLERP for two sources, multi-SLERP for more */
    SYM_ATTENTION_LINEAR,          /* weighted mean */
    SYM_ATTENTION_BASE,            /* copy from the anchor */
    SYM_ATTENTION_TASK_ARITHMETIC, /* base plus the scaled sum of the experts' differences */
} sym_attention_mode;

/* How the embeddings (and an untied lm_head) or the norms are fused. */
typedef enum sym_fusion_mode {
    SYM_FUSION_LINEAR,          /* weighted mean; embeddings over the union vocabulary */
    SYM_FUSION_TASK_ARITHMETIC, /* base + task_scale x sum of (expert - base) */
} sym_fusion_mode;


/* One expert: a source model and its prompts and calibration text. */
typedef struct sym_expert_cfg {
    char *source_model; /* resolved path */
    char **positive_prompts;
    size_t n_positive;
    char **negative_prompts;
    size_t n_negative;
    char **calibration; /* resolved paths of text files */
    size_t n_calibration;
    /* Weight schedule over depth: one value for every layer, or several interpolated
     * linearly from the first layer to the last. Empty means the default 1/N. */
    double *weights;
    size_t n_weights;
} sym_expert_cfg;

/* Router training settings (symphony.router); objective "classify" is SYM_ROUTER_DOMAIN. */
typedef struct sym_router_cfg {
    sym_router_init init;
    sym_router_objective objective;
    int64_t steps;
    double learning_rate;
    double balance_weight;
    int64_t batch_size; /* tokens per optimiser step */
    sym_domain_weights domain_weights;
} sym_router_cfg;

typedef struct sym_merge_config {
    char *path;       /* the config file */
    char *base_model; /* resolved path, or NULL */
    sym_dtype dtype;
    int64_t experts_per_token;
    sym_gate_mode gate_mode;
    sym_expert_cfg *experts;
    size_t n_experts;

    /* symphony: section */
    char *anchor; /* resolved path of the anchor source, or NULL for the default */
    int64_t calibration_tokens;
    int64_t sequence_length;
    sym_attention_mode attention;
    sym_fusion_mode embeddings;
    sym_fusion_mode norms;
    /* Factor of the sum of the experts' differences from base_model in task arithmetic,
     * 0 when unset. Per-source weights over their mean scale each difference. */
    double task_scale;
    bool rope_anchor;
    sym_router_cfg router;
    sym_hcache_dtype cache_dtype; /* hidden-state cache files: f32 (default) or bf16 */
    uint64_t seed;
} sym_merge_config;

/* Loads and validates a config file. Unknown keys are errors naming the nearest known
 * key; mergekit keys without an implementation are SYM_ERR_UNSUPPORTED naming the key.
 * Free the result with sym_merge_config_free, also after a failure. */
sym_status sym_merge_config_load(sym_merge_config *cfg, const char *path, sym_error *err);

void sym_merge_config_free(sym_merge_config *cfg);

/* Returns the config spelling of a gate mode, attention mode or fusion mode. */
const char *sym_gate_mode_name(sym_gate_mode mode);
const char *sym_attention_mode_name(sym_attention_mode mode);
const char *sym_fusion_mode_name(sym_fusion_mode mode);

/* Returns true when any backbone component is fused by task arithmetic. */
bool sym_merge_config_uses_base(const sym_merge_config *cfg);

/* Returns the config spelling of a domain weighting ("lens" or "uniform"), and parses it;
 * the parser returns false for any other name. */
const char *sym_domain_weights_name(sym_domain_weights weights);
bool sym_domain_weights_from_name(const char *name, sym_domain_weights *weights);

/* Parses "bfloat16", "float16" or "float32" (and "bf16", "fp16", "fp32"). */
bool sym_output_dtype_from_name(const char *name, sym_dtype *dtype);

/* Returns the weight of an expert at a layer, before normalisation: the schedule
 * interpolated at depth layer / (n_layers - 1), or 1 when the expert has none. */
double sym_expert_weight_at(const sym_expert_cfg *expert, int layer, int n_layers);

/* Checks that the experts' weights sum to a finite positive value at every layer of a
 * model with n_layers layers; the fusion divides by that sum. */
sym_status sym_merge_config_check_weights(const sym_merge_config *cfg, int n_layers,
                                          sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
