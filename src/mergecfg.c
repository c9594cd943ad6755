/* Merge config loading: libyaml's document API, then a walk over known keys. */
#include "symphony/mergecfg.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "model_internal.h"

/* Parsing context: the document, the config path for messages and its directory. */
typedef struct cfg_reader {
    yaml_document_t doc;
    const char *path;
    char dir[PATH_MAX];
    sym_error *err;
    bool loaded; /* doc contains a document to delete */
} cfg_reader;

static const char *const top_keys[] = {"base_model", "dtype", "experts_per_token", "gate_mode",
                                       "experts", "symphony", "architecture", NULL};
static const char *const top_unsupported[] = {"shared_experts", "tokenizer_source", "tokenizer",
                                              "chat_template", "out_dtype", NULL};
static const char *const expert_keys[] = {"source_model", "positive_prompts", "negative_prompts",
                                          "calibration", NULL};
static const char *const expert_unsupported[] = {"noise_scale", "residual_scale", NULL};
static const char *const symphony_keys[] = {"anchor", "calibration_tokens", "sequence_length",
                                            "attention", "embeddings", "norms", "task_scale",
                                            "weights", "rope", "router", "seed", "cache_dtype",
                                            NULL};
/* Spellings of sym_fusion_mode, in enum order. */
static const char *const fusion_names[] = {"linear", "task-arithmetic", NULL};
/* Spellings of sym_domain_weights, in enum order. */
static const char *const domain_weights_names[] = {"lens", "uniform", NULL};

static const char *const router_keys[] = {"init", "objective", "steps", "learning_rate",
                                          "balance_weight", "batch_size", "domain_weights",
                                          NULL};

static bool in_list(const char *const *list, const char *key)
{
    for (size_t i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], key) == 0)
            return true;
    return false;
}

static const char *nearest_key(const char *const *list, const char *key)
{
    const char *best = list[0];
    size_t best_distance = SIZE_MAX;
    for (size_t i = 0; list[i] != NULL; i++) {
        size_t d = sym_edit_distance(key, list[i], 64);
        if (d < best_distance) {
            best_distance = d;
            best = list[i];
        }
    }
    return best;
}

/* Rejects a key outside `known`: "not supported" for a mergekit key we lack, otherwise an
 * unknown-key error naming the nearest known key. */
static sym_status check_key(cfg_reader *r, const char *section, const char *key,
                            const char *const *known, const char *const *unsupported)
{
    if (in_list(known, key))
        return SYM_OK;
    if (unsupported != NULL && in_list(unsupported, key))
        return sym_error_set(r->err, SYM_ERR_UNSUPPORTED,
                             "%s: %s'%s' is a mergekit setting that symphony-stream does not "
                             "support; remove it", r->path, section, key);
    return sym_error_set(r->err, SYM_ERR_INVALID,
                         "%s: unknown key %s'%s'; did you mean '%s'?", r->path, section, key,
                         nearest_key(known, key));
}

static yaml_node_t *node_at(cfg_reader *r, int index)
{
    return yaml_document_get_node(&r->doc, index);
}

static const char *scalar_text(yaml_node_t *node)
{
    if (node == NULL || node->type != YAML_SCALAR_NODE)
        return NULL;
    return (const char *)node->data.scalar.value;
}

static sym_status expect_scalar(cfg_reader *r, yaml_node_t *node, const char *key,
                                const char **text)
{
    *text = scalar_text(node);
    if (*text == NULL)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: '%s' must be a single value (line %zu)",
                             r->path, key, node ? node->start_mark.line + 1 : 0);
    /* A quoted "\0" would otherwise cut the value short silently. */
    if (strlen(*text) != node->data.scalar.length)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: '%s' contains a NUL character "
                             "(line %zu)", r->path, key, node->start_mark.line + 1);
    return SYM_OK;
}

static sym_status read_int(cfg_reader *r, yaml_node_t *node, const char *key, int64_t min,
                           int64_t max, int64_t *value)
{
    const char *text;
    sym_status s = expect_scalar(r, node, key, &text);
    if (s != SYM_OK)
        return s;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
        return sym_error_set(r->err, SYM_ERR_INVALID,
                             "%s: '%s' is '%s'; expected an integer in [%lld, %lld]", r->path, key,
                             text, (long long)min, (long long)max);
    *value = v;
    return SYM_OK;
}

/* Parses text that is one finite number and nothing else. */
static bool parse_finite(const char *text, double *value)
{
    char *end;
    *value = strtod(text, &end);
    return end != text && *end == '\0' && isfinite(*value);
}

static sym_status read_double(cfg_reader *r, yaml_node_t *node, const char *key, double min,
                              double *value)
{
    const char *text;
    sym_status s = expect_scalar(r, node, key, &text);
    if (s != SYM_OK)
        return s;
    double v;
    if (!parse_finite(text, &v) || v < min)
        return sym_error_set(r->err, SYM_ERR_INVALID,
                             "%s: '%s' is '%s'; expected a number of at least %g", r->path, key,
                             text, min);
    *value = v;
    return SYM_OK;
}

/* Matches a scalar against a list of names; the index found is stored in *choice. */
static sym_status read_choice(cfg_reader *r, yaml_node_t *node, const char *key,
                              const char *const *names, int *choice)
{
    const char *text;
    sym_status s = expect_scalar(r, node, key, &text);
    if (s != SYM_OK)
        return s;
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(names[i], text) == 0) {
            *choice = i;
            return SYM_OK;
        }
    }
    char expected[256] = "";
    for (int i = 0; names[i] != NULL; i++) {
        strncat(expected, i ? ", " : "", sizeof expected - strlen(expected) - 1);
        strncat(expected, names[i], sizeof expected - strlen(expected) - 1);
    }
    return sym_error_set(r->err, SYM_ERR_INVALID, "%s: '%s' is '%s'; expected one of: %s",
                         r->path, key, text, expected);
}

/* Returns a path relative to the config file's directory, or the path itself if absolute. */
static sym_status resolve_path(cfg_reader *r, const char *text, char **out)
{
    size_t size = strlen(r->dir) + strlen(text) + 2;
    *out = malloc(size);
    if (*out == NULL)
        return sym_error_set(r->err, SYM_ERR_NOMEM, "%s: out of memory", r->path);
    if (text[0] == '/')
        snprintf(*out, size, "%s", text);
    else
        snprintf(*out, size, "%s/%s", r->dir, text);
    return SYM_OK;
}

static sym_status read_path(cfg_reader *r, yaml_node_t *node, const char *key, char **out)
{
    const char *text;
    sym_status s = expect_scalar(r, node, key, &text);
    if (s != SYM_OK)
        return s;
    if (text == NULL || text[0] == '\0')
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: '%s' is empty", r->path, key);
    return resolve_path(r, text, out);
}

/* Reads a string or a list of strings; resolve turns each into a path. */
static sym_status read_strings(cfg_reader *r, yaml_node_t *node, const char *key, bool resolve,
                               char ***items, size_t *count)
{
    size_t n = 1;
    if (node->type == YAML_SEQUENCE_NODE)
        n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    *items = calloc(n ? n : 1, sizeof **items);
    if (*items == NULL)
        return sym_error_set(r->err, SYM_ERR_NOMEM, "%s: out of memory", r->path);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node;
        if (node->type == YAML_SEQUENCE_NODE)
            item = node_at(r, node->data.sequence.items.start[i]);
        const char *text;
        sym_status s = expect_scalar(r, item, key, &text);
        if (s != SYM_OK)
            return s;
        if (resolve)
            s = resolve_path(r, text, &(*items)[i]);
        else if (((*items)[i] = strdup(text)) == NULL)
            s = sym_error_set(r->err, SYM_ERR_NOMEM, "%s: out of memory", r->path);
        if (s != SYM_OK)
            return s;
        *count = i + 1;
    }
    return SYM_OK;
}

#define FOR_EACH_PAIR(node, pair)                                                        \
    for (yaml_node_pair_t *pair = (node)->data.mapping.pairs.start;                     \
         pair < (node)->data.mapping.pairs.top; pair++)

static sym_status expect_mapping(cfg_reader *r, yaml_node_t *node, const char *what)
{
    if (node == NULL || node->type != YAML_MAPPING_NODE)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: %s must be a mapping of keys to values",
                             r->path, what);
    return SYM_OK;
}

/* Reads a mapping key, which must be a plain scalar. */
static sym_status pair_key(cfg_reader *r, yaml_node_pair_t *pair, const char **key)
{
    yaml_node_t *node = node_at(r, pair->key);
    *key = scalar_text(node);
    if (*key == NULL)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: a mapping key is not a plain value",
                             r->path);
    if (strlen(*key) != node->data.scalar.length)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: the key '%s...' contains a NUL "
                             "character (line %zu)", r->path, *key, node->start_mark.line + 1);
    return SYM_OK;
}

static sym_status read_expert(cfg_reader *r, yaml_node_t *node, size_t index, sym_expert_cfg *e)
{
    char what[48];
    snprintf(what, sizeof what, "experts[%zu]", index);
    sym_status s = expect_mapping(r, node, what);
    FOR_EACH_PAIR(node, pair) {
        const char *key;
        if (s == SYM_OK)
            s = pair_key(r, pair, &key);
        if (s == SYM_OK)
            s = check_key(r, "in experts: ", key, expert_keys, expert_unsupported);
        if (s != SYM_OK)
            return s;
        yaml_node_t *value = node_at(r, pair->value);
        if (strcmp(key, "source_model") == 0)
            s = read_path(r, value, "source_model", &e->source_model);
        else if (strcmp(key, "positive_prompts") == 0)
            s = read_strings(r, value, key, false, &e->positive_prompts, &e->n_positive);
        else if (strcmp(key, "negative_prompts") == 0)
            s = read_strings(r, value, key, false, &e->negative_prompts, &e->n_negative);
        else
            s = read_strings(r, value, key, true, &e->calibration, &e->n_calibration);
    }
    if (s == SYM_OK && e->source_model == NULL)
        s = sym_error_set(r->err, SYM_ERR_INVALID, "%s: %s has no 'source_model'", r->path, what);
    return s;
}

static sym_status read_experts(cfg_reader *r, yaml_node_t *node, sym_merge_config *cfg)
{
    if (node->type != YAML_SEQUENCE_NODE)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: 'experts' must be a list", r->path);
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n < 2 || n > SYM_MAX_SOURCES)
        return sym_error_set(r->err, SYM_ERR_INVALID,
                             "%s: 'experts' lists %zu source(s); a merge needs 2 to %d",
                             r->path, n, SYM_MAX_SOURCES);
    cfg->experts = calloc(n, sizeof *cfg->experts);
    if (cfg->experts == NULL)
        return sym_error_set(r->err, SYM_ERR_NOMEM, "%s: out of memory", r->path);
    cfg->n_experts = n;
    for (size_t i = 0; i < n; i++) {
        sym_status s = read_expert(r, node_at(r, node->data.sequence.items.start[i]), i,
                                   &cfg->experts[i]);
        if (s != SYM_OK)
            return s;
    }
    return SYM_OK;
}

/* symphony.weights: one entry per expert, a number or a list (a schedule over depth). */
static sym_status read_weights(cfg_reader *r, yaml_node_t *node, sym_merge_config *cfg)
{
    size_t n = 0;
    if (node->type == YAML_SEQUENCE_NODE)
        n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (node->type != YAML_SEQUENCE_NODE || n != cfg->n_experts)
        return sym_error_set(r->err, SYM_ERR_INVALID,
                             "%s: 'symphony.weights' must be a list with one entry per expert "
                             "(%zu), each a number or a list of numbers", r->path,
                             cfg->n_experts);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = node_at(r, node->data.sequence.items.start[i]);
        sym_expert_cfg *e = &cfg->experts[i];
        size_t m = 1;
        if (item->type == YAML_SEQUENCE_NODE)
            m = (size_t)(item->data.sequence.items.top - item->data.sequence.items.start);
        if (m == 0)
            return sym_error_set(r->err, SYM_ERR_INVALID, "%s: 'symphony.weights[%zu]' is empty",
                                 r->path, i);
        e->weights = calloc(m, sizeof *e->weights);
        if (e->weights == NULL)
            return sym_error_set(r->err, SYM_ERR_NOMEM, "%s: out of memory", r->path);
        e->n_weights = m;
        for (size_t j = 0; j < m; j++) {
            yaml_node_t *v = item;
            if (item->type == YAML_SEQUENCE_NODE)
                v = node_at(r, item->data.sequence.items.start[j]);
            sym_status s = read_double(r, v, "symphony.weights", 0.0, &e->weights[j]);
            if (s != SYM_OK)
                return s;
        }
    }
    return SYM_OK;
}

static sym_status read_router(cfg_reader *r, yaml_node_t *node, sym_router_cfg *router)
{
    static const char *const inits[] = {"gate_mode", "zero", NULL};
    static const char *const objectives[] = {"classify", "distill", "distill-topk", NULL};
    sym_status s = expect_mapping(r, node, "'symphony.router'");
    FOR_EACH_PAIR(node, pair) {
        const char *key;
        int choice = 0;
        if (s == SYM_OK)
            s = pair_key(r, pair, &key);
        if (s == SYM_OK)
            s = check_key(r, "in symphony.router: ", key, router_keys, NULL);
        if (s != SYM_OK)
            return s;
        yaml_node_t *v = node_at(r, pair->value);
        if (strcmp(key, "init") == 0) {
            s = read_choice(r, v, "symphony.router.init", inits, &choice);
            router->init = (sym_router_init)choice;
        } else if (strcmp(key, "objective") == 0) {
            s = read_choice(r, v, "symphony.router.objective", objectives, &choice);
            router->objective = (sym_router_objective)choice;
        } else if (strcmp(key, "steps") == 0) {
            s = read_int(r, v, "symphony.router.steps", 0, 100000000, &router->steps);
        } else if (strcmp(key, "learning_rate") == 0) {
            s = read_double(r, v, "symphony.router.learning_rate", 0.0, &router->learning_rate);
        } else if (strcmp(key, "domain_weights") == 0) {
            s = read_choice(r, v, "symphony.router.domain_weights", domain_weights_names,
                            &choice);
            router->domain_weights = (sym_domain_weights)choice;
        } else if (strcmp(key, "batch_size") == 0) {
            s = read_int(r, v, "symphony.router.batch_size", 1, 1 << 24, &router->batch_size);
        } else {
            s = read_double(r, v, "symphony.router.balance_weight", 0.0,
                            &router->balance_weight);
        }
    }
    return s;
}

static sym_status read_symphony_key(cfg_reader *r, const char *key, yaml_node_t *v,
                                    sym_merge_config *cfg)
{
    static const char *const attention[] = {"slerp", "linear", "base", "task-arithmetic", NULL};
    static const char *const rope[] = {"strict", "anchor", NULL};
    int choice = 0;
    sym_status s;
    if (strcmp(key, "anchor") == 0)
        return read_path(r, v, "symphony.anchor", &cfg->anchor);
    if (strcmp(key, "calibration_tokens") == 0)
        return read_int(r, v, "symphony.calibration_tokens", 0, INT64_MAX / 2,
                        &cfg->calibration_tokens);
    if (strcmp(key, "sequence_length") == 0)
        return read_int(r, v, "symphony.sequence_length", 2, 1 << 20, &cfg->sequence_length);
    if (strcmp(key, "attention") == 0) {
        s = read_choice(r, v, "symphony.attention", attention, &choice);
        cfg->attention = (sym_attention_mode)choice;
        return s;
    }
    if (strcmp(key, "embeddings") == 0) {
        s = read_choice(r, v, "symphony.embeddings", fusion_names, &choice);
        cfg->embeddings = (sym_fusion_mode)choice;
        return s;
    }
    if (strcmp(key, "norms") == 0) {
        s = read_choice(r, v, "symphony.norms", fusion_names, &choice);
        cfg->norms = (sym_fusion_mode)choice;
        return s;
    }
    if (strcmp(key, "task_scale") == 0) {
        /* Every invalid value gets the range, because read_double's "at least 0" would
         * suggest 0. */
        const char *text;
        s = expect_scalar(r, v, "symphony.task_scale", &text);
        if (s != SYM_OK)
            return s;
        double scale;
        if (!parse_finite(text, &scale) || scale <= 0.0 || scale > 100.0)
            return sym_error_set(r->err, SYM_ERR_INVALID,
                                 "%s: 'symphony.task_scale' is '%s'; expected a number above "
                                 "0 and at most 100, e.g. 0.35 (1/N gives the plain mean of "
                                 "N experts)", r->path, text);
        cfg->task_scale = scale;
        return SYM_OK;
    }
    if (strcmp(key, "weights") == 0)
        return read_weights(r, v, cfg);
    if (strcmp(key, "rope") == 0) {
        s = read_choice(r, v, "symphony.rope", rope, &choice);
        cfg->rope_anchor = choice == 1;
        return s;
    }
    if (strcmp(key, "router") == 0)
        return read_router(r, v, &cfg->router);
    if (strcmp(key, "cache_dtype") == 0) {
        static const char *const cache_dtypes[] = {"f32", "bf16", NULL};
        s = read_choice(r, v, "symphony.cache_dtype", cache_dtypes, &choice);
        cfg->cache_dtype = choice == 1 ? SYM_HCACHE_BF16 : SYM_HCACHE_F32;
        return s;
    }
    int64_t seed = 0;
    s = read_int(r, v, "symphony.seed", 0, INT64_MAX, &seed);
    cfg->seed = (uint64_t)seed;
    return s;
}

/* The symphony: section is read after experts, because weights refer to them. */
static sym_status read_symphony(cfg_reader *r, yaml_node_t *node, sym_merge_config *cfg)
{
    sym_status s = expect_mapping(r, node, "'symphony'");
    FOR_EACH_PAIR(node, pair) {
        const char *key;
        if (s == SYM_OK)
            s = pair_key(r, pair, &key);
        if (s == SYM_OK)
            s = check_key(r, "in symphony: ", key, symphony_keys, NULL);
        if (s == SYM_OK)
            s = read_symphony_key(r, key, node_at(r, pair->value), cfg);
        if (s != SYM_OK)
            return s;
    }
    return s;
}

static sym_status read_top_key(cfg_reader *r, const char *key, yaml_node_t *v,
                               sym_merge_config *cfg)
{
    static const char *const gates[] = {"hidden", "hidden_avg", "cheap_embed", "random",
                                        "uniform_random", NULL};
    const char *text;
    int choice = 0;
    sym_status s;
    if (strcmp(key, "base_model") == 0)
        return read_path(r, v, "base_model", &cfg->base_model);
    if (strcmp(key, "experts_per_token") == 0)
        return read_int(r, v, "experts_per_token", 1, 1 << 20, &cfg->experts_per_token);
    if (strcmp(key, "gate_mode") == 0) {
        s = read_choice(r, v, "gate_mode", gates, &choice);
        cfg->gate_mode = (sym_gate_mode)choice;
        return s;
    }
    if ((s = expect_scalar(r, v, key, &text)) != SYM_OK)
        return s;
    if (strcmp(key, "architecture") == 0) {
        if (strcmp(text, "mixtral") != 0)
            return sym_error_set(r->err, SYM_ERR_UNSUPPORTED,
                                 "%s: 'architecture: %s' is not supported; symphony-stream "
                                 "writes mixtral only", r->path, text);
        return SYM_OK;
    }
    if (!sym_output_dtype_from_name(text, &cfg->dtype))
        return sym_error_set(r->err, SYM_ERR_INVALID,
                             "%s: 'dtype' is '%s'; expected bfloat16, float16 or float32",
                             r->path, text);
    return SYM_OK;
}

static sym_status read_root(cfg_reader *r, yaml_node_t *root, sym_merge_config *cfg)
{
    sym_status s = expect_mapping(r, root, "the config");
    yaml_node_t *experts = NULL, *symphony = NULL;
    FOR_EACH_PAIR(root, pair) {
        const char *key;
        if (s == SYM_OK)
            s = pair_key(r, pair, &key);
        if (s == SYM_OK)
            s = check_key(r, "", key, top_keys, top_unsupported);
        if (s != SYM_OK)
            return s;
        yaml_node_t *v = node_at(r, pair->value);
        if (strcmp(key, "experts") == 0)
            experts = v;
        else if (strcmp(key, "symphony") == 0)
            symphony = v;
        else
            s = read_top_key(r, key, v, cfg);
    }
    if (s == SYM_OK && experts == NULL)
        return sym_error_set(r->err, SYM_ERR_INVALID, "%s: no 'experts' list", r->path);
    if (s == SYM_OK)
        s = read_experts(r, experts, cfg);
    if (s == SYM_OK && symphony != NULL)
        s = read_symphony(r, symphony, cfg);
    return s;
}

static void set_defaults(sym_merge_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->dtype = SYM_DTYPE_BF16;
    cfg->experts_per_token = 2;
    cfg->gate_mode = SYM_GATE_HIDDEN;
    cfg->sequence_length = 128;
    cfg->attention = SYM_ATTENTION_SLERP;
    cfg->router.init = SYM_ROUTER_INIT_GATE_MODE;
    cfg->router.objective = SYM_ROUTER_DISTILL;
    cfg->router.batch_size = 512;
    cfg->router.steps = 200;
    cfg->router.learning_rate = 1e-3;
    cfg->router.balance_weight = 0.01;
}

static sym_status yaml_problem(cfg_reader *r, const yaml_parser_t *parser)
{
    return sym_error_set(r->err, SYM_ERR_FORMAT, "%s: invalid YAML at line %zu: %s", r->path,
                         parser->problem_mark.line + 1,
                         parser->problem ? parser->problem : "parse error");
}

/* A config is one YAML document: anything after a second `---` would be ignored silently,
 * so a second document is an error. */
static sym_status reject_second_document(cfg_reader *r, yaml_parser_t *parser)
{
    yaml_document_t next;
    if (!yaml_parser_load(parser, &next))
        return yaml_problem(r, parser);
    yaml_node_t *root = yaml_document_get_root_node(&next);
    size_t line = root != NULL ? root->start_mark.line + 1 : 0;
    yaml_document_delete(&next);
    if (root != NULL)
        return sym_error_set(r->err, SYM_ERR_INVALID,
                             "%s: a second YAML document starts near line %zu; a config is "
                             "one document, so remove the second '---' and what follows it",
                             r->path, line);
    return SYM_OK;
}

/* libyaml keeps every pair of a mapping, and a reader taking the last one would let a
 * repeated key override the first silently, so any repeated key is an error. */
static sym_status reject_duplicate_keys(cfg_reader *r)
{
    for (yaml_node_t *node = r->doc.nodes.start; node < r->doc.nodes.top; node++) {
        if (node->type != YAML_MAPPING_NODE)
            continue;
        FOR_EACH_PAIR(node, pair) {
            yaml_node_t *key = node_at(r, pair->key);
            const char *text = scalar_text(key);
            for (yaml_node_pair_t *earlier = node->data.mapping.pairs.start;
                 text != NULL && earlier < pair; earlier++) {
                yaml_node_t *first = node_at(r, earlier->key);
                const char *first_text = scalar_text(first);
                if (first_text != NULL && strcmp(first_text, text) == 0)
                    return sym_error_set(r->err, SYM_ERR_INVALID,
                                         "%s: key '%s' appears twice in one mapping (lines "
                                         "%zu and %zu); keep one of them", r->path, text,
                                         first->start_mark.line + 1,
                                         key->start_mark.line + 1);
            }
        }
    }
    return SYM_OK;
}

static sym_status load_document(cfg_reader *r, FILE *f)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return sym_error_set(r->err, SYM_ERR_NOMEM, "%s: out of memory", r->path);
    yaml_parser_set_input_file(&parser, f);
    sym_status s = SYM_OK;
    if (!yaml_parser_load(&parser, &r->doc))
        s = yaml_problem(r, &parser);
    else
        r->loaded = true;
    if (s == SYM_OK)
        s = reject_second_document(r, &parser);
    if (s == SYM_OK)
        s = reject_duplicate_keys(r);
    yaml_parser_delete(&parser);
    return s;
}

/* Opens the config for reading. It must be a regular file (a directory opens fine with
 * fopen but reads as an I/O error, and a FIFO would block) within the size limit. */
static sym_status open_config(const char *path, FILE **f, sym_error *err)
{
    *f = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open the config: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s is a directory; expected a YAML merge config file", path);
    if (!S_ISREG(st.st_mode))
        return sym_error_set(err, SYM_ERR_INVALID, "%s: not a regular file", path);
    if (st.st_size > SYM_MERGE_CONFIG_MAX_BYTES)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: the config is %lld bytes, more than the limit of %ld "
                             "(SYM_MERGE_CONFIG_MAX_BYTES)", path, (long long)st.st_size,
                             SYM_MERGE_CONFIG_MAX_BYTES);
    *f = fopen(path, "rb");
    if (*f == NULL)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open the config: %s", path, strerror(errno));
    return SYM_OK;
}

bool sym_merge_config_uses_base(const sym_merge_config *cfg)
{
    return cfg->attention == SYM_ATTENTION_TASK_ARITHMETIC ||
           cfg->embeddings == SYM_FUSION_TASK_ARITHMETIC ||
           cfg->norms == SYM_FUSION_TASK_ARITHMETIC;
}

/* Checks that task arithmetic has the model the experts were fine-tuned from and a scale.
 * The best scale depends on the number of experts and how far they moved, so it has no
 * default. */
static sym_status check_task_arithmetic(const sym_merge_config *cfg, sym_error *err)
{
    bool uses = sym_merge_config_uses_base(cfg);
    if (uses && cfg->base_model == NULL)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: task-arithmetic fusion needs 'base_model', the model the "
                             "experts were fine-tuned from", cfg->path);
    if (uses && cfg->task_scale == 0.0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: task-arithmetic fusion needs 'symphony.task_scale', the "
                             "factor on the sum of the experts' differences from the base, "
                             "e.g. 0.35 for four experts (1/N gives their plain mean)",
                             cfg->path);
    if (!uses && cfg->task_scale != 0.0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: 'symphony.task_scale' is set but no component uses "
                             "task arithmetic; set 'symphony.embeddings', 'norms' or "
                             "'attention' to task-arithmetic, or remove task_scale",
                             cfg->path);
    return SYM_OK;
}

sym_status sym_merge_config_load(sym_merge_config *cfg, const char *path, sym_error *err)
{
    set_defaults(cfg);
    cfg->path = strdup(path);
    if (cfg->path == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    cfg_reader r = {.path = path, .err = err};
    snprintf(r.dir, sizeof r.dir, "%s", path);
    char *slash = strrchr(r.dir, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        snprintf(r.dir, sizeof r.dir, ".");

    FILE *f;
    sym_status s = open_config(path, &f, err);
    if (s != SYM_OK)
        return s;
    s = load_document(&r, f);
    fclose(f);
    if (s != SYM_OK) {
        if (r.loaded)
            yaml_document_delete(&r.doc);
        return s;
    }
    yaml_node_t *root = yaml_document_get_root_node(&r.doc);
    if (root == NULL)
        s = sym_error_set(err, SYM_ERR_INVALID, "%s: the config is empty", path);
    else
        s = read_root(&r, root, cfg);
    if (s == SYM_OK && cfg->experts_per_token > (int64_t)cfg->n_experts)
        s = sym_error_set(err, SYM_ERR_INVALID,
                          "%s: 'experts_per_token' is %lld but there are only %zu experts",
                          path, (long long)cfg->experts_per_token, cfg->n_experts);
    if (s == SYM_OK && cfg->router.objective == SYM_ROUTER_DISTILL_TOPK &&
        cfg->experts_per_token < 2)
        s = sym_error_set(err, SYM_ERR_INVALID,
                          "%s: the distill-topk objective needs experts_per_token of 2 or "
                          "more: with one expert per token its weight is always 1, so the "
                          "router gets no gradient", path);
    if (s == SYM_OK)
        s = check_task_arithmetic(cfg, err);
    yaml_document_delete(&r.doc);
    return s;
}

static void free_strings(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

void sym_merge_config_free(sym_merge_config *cfg)
{
    for (size_t i = 0; i < cfg->n_experts; i++) {
        sym_expert_cfg *e = &cfg->experts[i];
        free(e->source_model);
        free_strings(e->positive_prompts, e->n_positive);
        free_strings(e->negative_prompts, e->n_negative);
        free_strings(e->calibration, e->n_calibration);
        free(e->weights);
    }
    free(cfg->experts);
    free(cfg->path);
    free(cfg->base_model);
    free(cfg->anchor);
    memset(cfg, 0, sizeof *cfg);
}

const char *sym_gate_mode_name(sym_gate_mode mode)
{
    static const char *const names[] = {"hidden", "hidden_avg", "cheap_embed", "random",
                                        "uniform_random"};
    return names[mode];
}

const char *sym_attention_mode_name(sym_attention_mode mode)
{
    static const char *const names[] = {"slerp", "linear", "base", "task-arithmetic"};
    return names[mode];
}

const char *sym_fusion_mode_name(sym_fusion_mode mode)
{
    return fusion_names[mode];
}

const char *sym_domain_weights_name(sym_domain_weights weights)
{
    return domain_weights_names[weights];
}

bool sym_domain_weights_from_name(const char *name, sym_domain_weights *weights)
{
    for (int i = 0; domain_weights_names[i] != NULL; i++) {
        if (strcmp(name, domain_weights_names[i]) == 0) {
            *weights = (sym_domain_weights)i;
            return true;
        }
    }
    return false;
}

bool sym_output_dtype_from_name(const char *name, sym_dtype *dtype)
{
    if (strcmp(name, "bfloat16") == 0 || strcmp(name, "bf16") == 0)
        *dtype = SYM_DTYPE_BF16;
    else if (strcmp(name, "float16") == 0 || strcmp(name, "fp16") == 0)
        *dtype = SYM_DTYPE_F16;
    else if (strcmp(name, "float32") == 0 || strcmp(name, "fp32") == 0)
        *dtype = SYM_DTYPE_F32;
    else
        return false;
    return true;
}

double sym_expert_weight_at(const sym_expert_cfg *expert, int layer, int n_layers)
{
    if (expert->n_weights == 0)
        return 1.0;
    if (expert->n_weights == 1 || n_layers < 2)
        return expert->weights[0];
    double position = (double)layer / (n_layers - 1) * (double)(expert->n_weights - 1);
    size_t lo = (size_t)position;
    if (lo >= expert->n_weights - 1)
        return expert->weights[expert->n_weights - 1];
    double frac = position - (double)lo;
    return expert->weights[lo] * (1.0 - frac) + expert->weights[lo + 1] * frac;
}

sym_status sym_merge_config_check_weights(const sym_merge_config *cfg, int n_layers,
                                          sym_error *err)
{
    for (int layer = 0; layer < (n_layers > 0 ? n_layers : 1); layer++) {
        double sum = 0;
        char values[256] = "";
        for (size_t i = 0; i < cfg->n_experts; i++) {
            double w = sym_expert_weight_at(&cfg->experts[i], layer, n_layers);
            sum += w;
            size_t used = strlen(values);
            snprintf(values + used, sizeof values - used, "%s%g", i ? ", " : "", w);
        }
        if (!isfinite(sum) || !(sum > 0))
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "%s: 'symphony.weights' at layer %d are [%s], which sum to "
                                 "%g; expected a finite sum above 0, so scale the weights "
                                 "down or give one expert a positive weight", cfg->path,
                                 layer, values, sum);
    }
    return SYM_OK;
}
