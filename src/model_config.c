/* config.json of a Llama, Mistral or Mixtral checkpoint: defaults as Hugging Face
 * transformers applies them, and the checks that keep the merge away from models it would
 * get silently wrong (biases, other activations, quantized weights). */
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Bounds that keep every product of two dimensions far from int64 overflow. */
#define MAX_DIM (1LL << 24)
#define MAX_LAYERS 4096
#define MAX_EXPERTS 1024

static sym_status get_int(json_t *root, const char *key, int64_t fallback, bool required,
                          int64_t min, int64_t max, int64_t *out, const char *path,
                          sym_error *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) {
        if (required)
            return sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: missing key '%s'", path, key);
        *out = fallback;
        return SYM_OK;
    }
    if (!json_is_integer(v))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: '%s' must be an integer", path, key);
    json_int_t value = json_integer_value(v);
    if (value < min || value > max)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: '%s' is %lld, expected %lld to %lld",
                             path, key, (long long)value, (long long)min, (long long)max);
    *out = value;
    return SYM_OK;
}

static sym_status get_double(json_t *root, const char *key, double fallback, double *out,
                             const char *path, sym_error *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) {
        *out = fallback;
        return SYM_OK;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) <= 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: '%s' must be a positive number", path,
                             key);
    *out = json_number_value(v);
    return SYM_OK;
}

static sym_status get_bool(json_t *root, const char *key, bool fallback, bool *out,
                           const char *path, sym_error *err)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v)) {
        *out = fallback;
        return SYM_OK;
    }
    if (!json_is_boolean(v))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return SYM_OK;
}

/* Reads a token id stored as an integer or as a list of them (the first is kept, all are
 * checked); -1 when absent. Every id must lie inside the vocabulary. */
static sym_status get_token_id(json_t *root, const char *key, int64_t vocab_size, int64_t *out,
                               const char *path, sym_error *err)
{
    json_t *v = json_object_get(root, key);
    *out = -1;
    if (v == NULL || json_is_null(v))
        return SYM_OK;
    size_t count = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < count; i++) {
        json_t *id = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= vocab_size)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "%s: '%s' must be a token id in 0..%lld (or a list of them)",
                                 path, key, (long long)vocab_size - 1);
        if (i == 0)
            *out = json_integer_value(id);
    }
    return SYM_OK;
}

static sym_status parse_rope_scaling(json_t *root, sym_rope_scaling *rs, const char *path,
                                     sym_error *err)
{
    memset(rs, 0, sizeof *rs);
    json_t *obj = json_object_get(root, "rope_scaling");
    if (obj == NULL || json_is_null(obj))
        return SYM_OK;
    if (!json_is_object(obj))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: 'rope_scaling' must be an object or null",
                             path);
    json_t *type = json_object_get(obj, "rope_type");
    if (type == NULL)
        type = json_object_get(obj, "type");
    if (!json_is_string(type))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: 'rope_scaling' has no string 'rope_type' or 'type'", path);
    if (strcmp(json_string_value(type), "default") != 0)
        snprintf(rs->type, sizeof rs->type, "%s", json_string_value(type));
    json_t *f = json_object_get(obj, "factor");
    rs->factor = json_is_number(f) ? json_number_value(f) : (double)NAN;
    f = json_object_get(obj, "low_freq_factor");
    rs->low_freq_factor = json_is_number(f) ? json_number_value(f) : 1.0;
    f = json_object_get(obj, "high_freq_factor");
    rs->high_freq_factor = json_is_number(f) ? json_number_value(f) : 4.0;
    f = json_object_get(obj, "original_max_position_embeddings");
    rs->original_max_position_embeddings = json_is_number(f) ? json_number_value(f) : 0.0;
    sym_status s = sym_rope_scaling_check(rs, err);
    return s == SYM_OK ? SYM_OK : sym_error_prefix(err, "%s", path);
}

sym_status sym_rope_scaling_check(const sym_rope_scaling *rs, sym_error *err)
{
    if (rs->type[0] == '\0')
        return SYM_OK;
    if (strcmp(rs->type, "linear") != 0 && strcmp(rs->type, "llama3") != 0)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "rope_scaling type '%s' is not supported; expected none, "
                             "'linear' or 'llama3'", rs->type);
    if (!(rs->factor > 0) || !isfinite(rs->factor))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "rope_scaling factor is %g; expected a positive number",
                             rs->factor);
    if (strcmp(rs->type, "llama3") == 0 &&
        (!(rs->original_max_position_embeddings > 0) ||
         !(rs->high_freq_factor > rs->low_freq_factor) || !(rs->low_freq_factor > 0)))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "rope_scaling llama3 needs original_max_position_embeddings > 0 "
                             "and high_freq_factor > low_freq_factor > 0 (got %g, %g, %g)",
                             rs->original_max_position_embeddings, rs->low_freq_factor,
                             rs->high_freq_factor);
    return SYM_OK;
}

/* Rejects settings whose weights this program would read or compute wrongly. */
static sym_status check_unsupported(json_t *root, const char *path, sym_error *err)
{
    if (json_object_get(root, "quantization_config") != NULL)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: 'quantization_config' is present; quantized checkpoints are "
                             "not supported, use the unquantized (F32, F16 or BF16) model", path);
    const char *act_keys[] = {"hidden_act", "hidden_activation"};
    for (size_t i = 0; i < 2; i++) {
        json_t *act = json_object_get(root, act_keys[i]);
        if (act != NULL && !json_is_null(act) &&
            (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0))
            return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                                 "%s: '%s' is %s, expected \"silu\" (the SwiGLU FFN of the "
                                 "Llama family)", path, act_keys[i],
                                 json_is_string(act) ? json_string_value(act) : "not a string");
    }
    const char *bias_keys[] = {"attention_bias", "mlp_bias"};
    for (size_t i = 0; i < 2; i++) {
        bool bias = false;
        sym_status s = get_bool(root, bias_keys[i], false, &bias, path, err);
        if (s != SYM_OK)
            return s;
        if (bias)
            return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                                 "%s: '%s' is true; models with biases are not supported",
                                 path, bias_keys[i]);
    }
    return SYM_OK;
}

static sym_status parse_model_type(json_t *root, sym_model_config *c, const char *path,
                                   sym_error *err)
{
    json_t *type = json_object_get(root, "model_type");
    if (!json_is_string(type))
        return sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: missing string key 'model_type'",
                             path);
    const char *t = json_string_value(type);
    if (strcmp(t, "llama") != 0 && strcmp(t, "mistral") != 0 && strcmp(t, "mixtral") != 0)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: model_type '%s' is not supported; expected llama, mistral or "
                             "mixtral", path, t);
    snprintf(c->model_type, sizeof c->model_type, "%s", t);
    return SYM_OK;
}

static sym_status parse_dims(json_t *root, sym_model_config *c, const char *path,
                             sym_error *err)
{
    sym_status s;
    if ((s = get_int(root, "hidden_size", 0, true, 1, MAX_DIM, &c->hidden_size, path, err)) ||
        (s = get_int(root, "intermediate_size", 0, true, 1, MAX_DIM, &c->intermediate_size,
                     path, err)) ||
        (s = get_int(root, "num_hidden_layers", 0, true, 1, MAX_LAYERS, &c->num_hidden_layers,
                     path, err)) ||
        (s = get_int(root, "num_attention_heads", 0, true, 1, MAX_DIM, &c->num_attention_heads,
                     path, err)) ||
        (s = get_int(root, "num_key_value_heads", c->num_attention_heads, false, 1, MAX_DIM,
                     &c->num_key_value_heads, path, err)) ||
        (s = get_int(root, "vocab_size", 32000, false, 1, MAX_DIM, &c->vocab_size, path, err)) ||
        (s = get_int(root, "max_position_embeddings", 2048, false, 1, MAX_DIM,
                     &c->max_position_embeddings, path, err)))
        return s;

    bool has_head_dim = json_is_integer(json_object_get(root, "head_dim"));
    if (!has_head_dim && c->hidden_size % c->num_attention_heads != 0)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: hidden_size %lld is not a multiple of num_attention_heads %lld",
                             path, (long long)c->hidden_size, (long long)c->num_attention_heads);
    if ((s = get_int(root, "head_dim", c->hidden_size / c->num_attention_heads, false, 2,
                     MAX_DIM, &c->head_dim, path, err)))
        return s;
    if (c->head_dim % 2 != 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: head_dim %lld is odd; RoPE needs pairs",
                             path, (long long)c->head_dim);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: num_attention_heads %lld is not a multiple of "
                             "num_key_value_heads %lld", path,
                             (long long)c->num_attention_heads,
                             (long long)c->num_key_value_heads);
    if (c->num_attention_heads * c->head_dim > MAX_DIM)
        return sym_error_set(err, SYM_ERR_LIMIT, "%s: num_attention_heads x head_dim exceeds %lld",
                             path, (long long)MAX_DIM);
    return SYM_OK;
}

static sym_status parse_moe(json_t *root, sym_model_config *c, const char *path,
                            sym_error *err)
{
    if (strcmp(c->model_type, "mixtral") != 0)
        return SYM_OK;
    sym_status s;
    if ((s = get_int(root, "num_local_experts", 0, true, 1, MAX_EXPERTS, &c->num_local_experts,
                     path, err)) ||
        (s = get_int(root, "num_experts_per_tok", 0, true, 1, c->num_local_experts,
                     &c->num_experts_per_tok, path, err)))
        return s;
    return SYM_OK;
}

sym_status sym_config_parse(json_t *root, sym_model_config *c, const char *path, sym_error *err)
{
    memset(c, 0, sizeof *c);
    if (!json_is_object(root))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: not a JSON object", path);
    sym_status s;
    if ((s = parse_model_type(root, c, path, err)) || (s = check_unsupported(root, path, err)) ||
        (s = parse_dims(root, c, path, err)) || (s = parse_moe(root, c, path, err)) ||
        (s = parse_rope_scaling(root, &c->rope_scaling, path, err)))
        return s;

    /* transformers' defaults: LlamaConfig and MistralConfig use rms_norm_eps 1e-6 and
     * rope_theta 1e4; MixtralConfig uses rope_theta 1e6. */
    double theta_default = strcmp(c->model_type, "mixtral") == 0 ? 1e6 : 1e4;
    if ((s = get_double(root, "rms_norm_eps", 1e-6, &c->rms_norm_eps, path, err)) ||
        (s = get_double(root, "rope_theta", theta_default, &c->rope_theta, path, err)))
        return s;
    if ((s = get_bool(root, "tie_word_embeddings", false, &c->tie_word_embeddings, path, err)) ||
        (s = get_token_id(root, "bos_token_id", c->vocab_size, &c->bos_token_id, path, err)) ||
        (s = get_token_id(root, "eos_token_id", c->vocab_size, &c->eos_token_id, path, err)))
        return s;
    return SYM_OK;
}
