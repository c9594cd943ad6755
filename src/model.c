/* Model directories: shards, the index, and the role map from tensor names. */
#include "model_internal.h"

#include <errno.h>
#include <unistd.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* One tensor of the model, across all shards. */
typedef struct model_entry {
    const char *name;
    sym_tensor_ref ref;
    bool used;
} model_entry;

struct sym_model {
    char *dir;
    json_t *config_json;
    sym_model_config config;
    size_t n_shards;
    sym_st_file **shards;
    size_t n_entries;
    model_entry *entries; /* sorted by name */
    char prefix[128];
    bool tied;
    sym_tensor_ref global[SYM_ROLE_COUNT];
    /* [layer][slot][role]: slot 0 is the dense FFN and attention, slot 1 + e is expert e. */
    sym_tensor_ref *layer_refs;
    size_t n_slots;
    size_t n_ignored;
    const char **ignored;
};

static const char *const layer_suffix[SYM_ROLE_COUNT] = {
    [SYM_ROLE_INPUT_NORM] = "input_layernorm.weight",
    [SYM_ROLE_Q] = "self_attn.q_proj.weight",
    [SYM_ROLE_K] = "self_attn.k_proj.weight",
    [SYM_ROLE_V] = "self_attn.v_proj.weight",
    [SYM_ROLE_O] = "self_attn.o_proj.weight",
    [SYM_ROLE_POST_NORM] = "post_attention_layernorm.weight",
    [SYM_ROLE_FFN_GATE] = "mlp.gate_proj.weight",
    [SYM_ROLE_FFN_UP] = "mlp.up_proj.weight",
    [SYM_ROLE_FFN_DOWN] = "mlp.down_proj.weight",
    [SYM_ROLE_ROUTER] = "block_sparse_moe.gate.weight",
};

static const char *const expert_suffix[SYM_ROLE_COUNT] = {
    [SYM_ROLE_FFN_GATE] = "w1.weight",
    [SYM_ROLE_FFN_UP] = "w3.weight",
    [SYM_ROLE_FFN_DOWN] = "w2.weight",
};

static bool is_ffn_role(sym_role role)
{
    return role == SYM_ROLE_FFN_GATE || role == SYM_ROLE_FFN_UP || role == SYM_ROLE_FFN_DOWN;
}

/* Writes a tensor name for a role with the given prefix into buf. */
static const char *format_name(const char *prefix, const char *outer, sym_role role, int layer,
                               int expert, char *buf, size_t size)
{
    switch (role) {
    case SYM_ROLE_EMBED:
        snprintf(buf, size, "%sembed_tokens.weight", prefix);
        break;
    case SYM_ROLE_FINAL_NORM:
        snprintf(buf, size, "%snorm.weight", prefix);
        break;
    case SYM_ROLE_LM_HEAD:
        snprintf(buf, size, "%slm_head.weight", outer);
        break;
    default:
        if (expert >= 0 && is_ffn_role(role))
            snprintf(buf, size, "%slayers.%d.block_sparse_moe.experts.%d.%s", prefix, layer,
                     expert, expert_suffix[role]);
        else
            snprintf(buf, size, "%slayers.%d.%s", prefix, layer, layer_suffix[role]);
        break;
    }
    return buf;
}

const char *sym_role_name(sym_role role, int layer, int expert, char *buf, size_t size)
{
    return format_name("model.", "", role, layer, expert, buf, size);
}

static int compare_entry_name(const void *a, const void *b)
{
    return strcmp(((const model_entry *)a)->name, ((const model_entry *)b)->name);
}

static int compare_entry_key(const void *key, const void *entry)
{
    return strcmp(key, ((const model_entry *)entry)->name);
}

static model_entry *find_entry(const sym_model *m, const char *name)
{
    return bsearch(name, m->entries, m->n_entries, sizeof *m->entries, compare_entry_key);
}

/* A shard name must be one plain file name inside the model directory. */
static bool is_plain_file_name(const char *name)
{
    size_t len = strlen(name);
    return len > 0 && len < NAME_MAX && strchr(name, '/') == NULL && strcmp(name, ".") != 0 &&
           strcmp(name, "..") != 0;
}

static sym_status add_shard(sym_model *m, const char *file_name, sym_error *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", m->dir, file_name) >= (int)sizeof path)
        return sym_error_set(err, SYM_ERR_LIMIT, "%s/%s: path too long", m->dir, file_name);
    sym_st_file **grown = realloc(m->shards, (m->n_shards + 1) * sizeof *grown);
    if (grown == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    m->shards = grown;
    sym_status s = sym_st_open(&m->shards[m->n_shards], path, err);
    if (s != SYM_OK)
        return s;
    m->n_shards++;
    return SYM_OK;
}

static sym_status build_entries(sym_model *m, sym_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < m->n_shards; i++)
        total += m->shards[i]->header.n_tensors;
    m->entries = calloc(total ? total : 1, sizeof *m->entries);
    if (m->entries == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", m->dir);
    for (size_t i = 0; i < m->n_shards; i++) {
        const sym_st_file *f = m->shards[i];
        for (size_t j = 0; j < f->header.n_tensors; j++) {
            model_entry *e = &m->entries[m->n_entries++];
            e->name = f->header.tensors[j].name;
            e->ref.file = f;
            e->ref.info = &f->header.tensors[j];
        }
    }
    qsort(m->entries, m->n_entries, sizeof *m->entries, compare_entry_name);
    for (size_t i = 1; i < m->n_entries; i++) {
        if (strcmp(m->entries[i].name, m->entries[i - 1].name) == 0)
            return sym_error_set(err, SYM_ERR_FORMAT, "%s: tensor '%s' is stored in both %s and %s",
                                 m->dir, m->entries[i].name, m->entries[i - 1].ref.file->path,
                                 m->entries[i].ref.file->path);
    }
    return SYM_OK;
}

/* Opens the shards of model.safetensors.index.json and checks that each shard holds
 * exactly the tensors the index maps to it. */
static sym_status load_index(sym_model *m, const char *index_path, sym_error *err)
{
    json_t *root;
    sym_status s = sym_json_load_file(index_path, SYM_MAX_INDEX_BYTES, &root, err);
    if (s != SYM_OK)
        return s;
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: missing object 'weight_map'", index_path);
    }

    const char *tensor;
    json_t *shard;
    json_object_foreach(map, tensor, shard) {
        if (!json_is_string(shard)) {
            s = sym_error_set(err, SYM_ERR_FORMAT, "%s: weight_map['%s'] is not a file name",
                              index_path, tensor);
            break;
        }
        const char *name = json_string_value(shard);
        if (!is_plain_file_name(name)) {
            s = sym_error_set(err, SYM_ERR_FORMAT,
                              "%s: shard '%s' of tensor '%s' is not a file name inside the model "
                              "directory", index_path, name, tensor);
            break;
        }
        bool seen = false;
        for (size_t i = 0; i < m->n_shards && !seen; i++) {
            const char *base = strrchr(m->shards[i]->path, '/') + 1;
            seen = strcmp(base, name) == 0;
        }
        if (!seen && (s = add_shard(m, name, err)) != SYM_OK)
            break;
    }
    if (s == SYM_OK && (s = build_entries(m, err)) == SYM_OK) {
        json_object_foreach(map, tensor, shard) {
            model_entry *e = find_entry(m, tensor);
            const char *base = e ? strrchr(e->ref.file->path, '/') + 1 : NULL;
            if (e == NULL || strcmp(base, json_string_value(shard)) != 0) {
                s = sym_error_set(err, SYM_ERR_FORMAT,
                                  "%s: tensor '%s' is mapped to %s, but that shard does not "
                                  "hold it", index_path, tensor, json_string_value(shard));
                break;
            }
        }
        if (s == SYM_OK && m->n_entries != json_object_size(map))
            s = sym_error_set(err, SYM_ERR_FORMAT,
                              "%s: the shards hold %zu tensors but the index lists %zu",
                              index_path, m->n_entries, json_object_size(map));
    }
    json_decref(root);
    return s;
}

static sym_status load_tensors(sym_model *m, sym_error *err)
{
    char path[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/model.safetensors", m->dir);
    if (stat(path, &st) == 0) {
        sym_status s = add_shard(m, "model.safetensors", err);
        return s != SYM_OK ? s : build_entries(m, err);
    }
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", m->dir);
    if (stat(path, &st) == 0)
        return load_index(m, path, err);
    return sym_error_set(err, SYM_ERR_NOT_FOUND,
                         "%s: no model.safetensors or model.safetensors.index.json; convert "
                         "PyTorch .bin checkpoints to safetensors first", m->dir);
}

/* Appends up to three existing names closest to want, for "did you mean" hints. */
static void nearest_names(const sym_model *m, const char *want, char *out, size_t size)
{
    const char *best[3] = {NULL, NULL, NULL};
    size_t dist[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    size_t limit = strlen(want) / 2 + 1;
    for (size_t i = 0; i < m->n_entries; i++) {
        size_t d = sym_edit_distance(want, m->entries[i].name, limit);
        for (int k = 0; k < 3 && d <= limit; k++) {
            if (d < dist[k]) {
                for (int j = 2; j > k; j--) {
                    best[j] = best[j - 1];
                    dist[j] = dist[j - 1];
                }
                best[k] = m->entries[i].name;
                dist[k] = d;
                break;
            }
        }
    }
    if (best[0] == NULL) {
        snprintf(out, size, "no similar name in the checkpoint");
        return;
    }
    snprintf(out, size, "nearest: %s%s%s%s%s", best[0], best[1] ? ", " : "",
             best[1] ? best[1] : "", best[2] ? ", " : "", best[2] ? best[2] : "");
}

/* Checks a tensor's rank and dimensions; cols < 0 means a vector of rows elements. */
static sym_status check_shape(const sym_model *m, const sym_tensor_ref *ref, int64_t rows,
                              int64_t cols, sym_error *err)
{
    const sym_st_tensor *t = ref->info;
    bool ok = cols < 0 ? (t->ndim == 1 && t->shape[0] == (uint64_t)rows)
                       : (t->ndim == 2 && t->shape[0] == (uint64_t)rows &&
                          t->shape[1] == (uint64_t)cols);
    if (ok)
        return SYM_OK;
    char got[96] = "";
    for (int i = 0; i < t->ndim; i++) {
        size_t used = strlen(got);
        snprintf(got + used, sizeof got - used, "%s%llu", i ? ", " : "",
                 (unsigned long long)t->shape[i]);
    }
    if (cols < 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: tensor '%s' has shape [%s], expected [%lld]",
                             m->dir, t->name, got, (long long)rows);
    return sym_error_set(err, SYM_ERR_FORMAT,
                         "%s: tensor '%s' has shape [%s], expected [%lld, %lld] from config.json",
                         m->dir, t->name, got, (long long)rows, (long long)cols);
}

static sym_status resolve(sym_model *m, sym_role role, int layer, int expert,
                          sym_tensor_ref *out, sym_error *err)
{
    char outer[sizeof m->prefix];
    snprintf(outer, sizeof outer, "%s", m->prefix);
    size_t len = strlen(outer);
    if (len >= 6 && strcmp(outer + len - 6, "model.") == 0)
        outer[len - 6] = '\0';

    char name[512];
    format_name(m->prefix, outer, role, layer, expert, name, sizeof name);
    model_entry *e = find_entry(m, name);
    if (e == NULL) {
        char hint[600];
        nearest_names(m, name, hint, sizeof hint);
        return sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: missing tensor '%s' (%s)", m->dir,
                             name, hint);
    }
    e->used = true;
    *out = e->ref;
    return SYM_OK;
}

/* Finds the prefix in front of "embed_tokens.weight" ("model." in Hugging Face Llama). */
static sym_status detect_prefix(sym_model *m, sym_error *err)
{
    static const char suffix[] = "embed_tokens.weight";
    for (size_t i = 0; i < m->n_entries; i++) {
        const char *name = m->entries[i].name;
        size_t len = strlen(name);
        if (len < sizeof suffix - 1 || strcmp(name + len - (sizeof suffix - 1), suffix) != 0)
            continue;
        size_t plen = len - (sizeof suffix - 1);
        if ((plen > 0 && name[plen - 1] != '.') || plen >= sizeof m->prefix)
            continue;
        memcpy(m->prefix, name, plen);
        m->prefix[plen] = '\0';
        return SYM_OK;
    }
    char hint[600];
    nearest_names(m, "model.embed_tokens.weight", hint, sizeof hint);
    return sym_error_set(err, SYM_ERR_NOT_FOUND,
                         "%s: missing tensor 'model.embed_tokens.weight' (%s)", m->dir, hint);
}

static sym_tensor_ref *layer_ref(const sym_model *m, int layer, size_t slot, sym_role role)
{
    return &m->layer_refs[((size_t)layer * m->n_slots + slot) * SYM_ROLE_COUNT + role];
}

static sym_status resolve_layer(sym_model *m, int l, sym_error *err)
{
    const sym_model_config *c = &m->config;
    int64_t h = c->hidden_size, ff = c->intermediate_size;
    int64_t q_rows = c->num_attention_heads * c->head_dim;
    int64_t kv_rows = c->num_key_value_heads * c->head_dim;
    const struct {
        sym_role role;
        int64_t rows, cols;
    } attn[] = {
        {SYM_ROLE_INPUT_NORM, h, -1}, {SYM_ROLE_Q, q_rows, h},  {SYM_ROLE_K, kv_rows, h},
        {SYM_ROLE_V, kv_rows, h},     {SYM_ROLE_O, h, q_rows},  {SYM_ROLE_POST_NORM, h, -1},
    };
    const struct {
        sym_role role;
        int64_t rows, cols;
    } ffn[] = {{SYM_ROLE_FFN_GATE, ff, h}, {SYM_ROLE_FFN_UP, ff, h}, {SYM_ROLE_FFN_DOWN, h, ff}};

    sym_status s;
    for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++) {
        sym_tensor_ref *r = layer_ref(m, l, 0, attn[i].role);
        if ((s = resolve(m, attn[i].role, l, -1, r, err)) ||
            (s = check_shape(m, r, attn[i].rows, attn[i].cols, err)))
            return s;
    }
    int experts = (int)c->num_local_experts;
    if (experts > 0) {
        sym_tensor_ref *r = layer_ref(m, l, 0, SYM_ROLE_ROUTER);
        if ((s = resolve(m, SYM_ROLE_ROUTER, l, -1, r, err)) ||
            (s = check_shape(m, r, experts, h, err)))
            return s;
    }
    for (int e = experts > 0 ? 0 : -1; e < experts || e == -1; e++) {
        for (size_t i = 0; i < 3; i++) {
            sym_tensor_ref *r = layer_ref(m, l, (size_t)(e + 1), ffn[i].role);
            if ((s = resolve(m, ffn[i].role, l, e, r, err)) ||
                (s = check_shape(m, r, ffn[i].rows, ffn[i].cols, err)))
                return s;
        }
        if (e == -1)
            break;
    }
    return SYM_OK;
}

static sym_status resolve_roles(sym_model *m, sym_error *err)
{
    const sym_model_config *c = &m->config;
    sym_status s = detect_prefix(m, err);
    if (s != SYM_OK)
        return s;
    if ((s = resolve(m, SYM_ROLE_EMBED, 0, -1, &m->global[SYM_ROLE_EMBED], err)) ||
        (s = check_shape(m, &m->global[SYM_ROLE_EMBED], c->vocab_size, c->hidden_size, err)) ||
        (s = resolve(m, SYM_ROLE_FINAL_NORM, 0, -1, &m->global[SYM_ROLE_FINAL_NORM], err)) ||
        (s = check_shape(m, &m->global[SYM_ROLE_FINAL_NORM], c->hidden_size, -1, err)))
        return s;

    sym_error lm_err;
    if (resolve(m, SYM_ROLE_LM_HEAD, 0, -1, &m->global[SYM_ROLE_LM_HEAD], &lm_err) == SYM_OK) {
        s = check_shape(m, &m->global[SYM_ROLE_LM_HEAD], c->vocab_size, c->hidden_size, err);
        if (s != SYM_OK)
            return s;
    } else if (c->tie_word_embeddings) {
        m->tied = true;
        m->global[SYM_ROLE_LM_HEAD] = m->global[SYM_ROLE_EMBED];
    } else {
        return sym_error_set(err, SYM_ERR_NOT_FOUND,
                             "%s; tie_word_embeddings is false, so the model needs it",
                             lm_err.message);
    }

    m->n_slots = 1 + (size_t)c->num_local_experts;
    m->layer_refs = calloc((size_t)c->num_hidden_layers * m->n_slots * SYM_ROLE_COUNT,
                           sizeof *m->layer_refs);
    if (m->layer_refs == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", m->dir);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        if ((s = resolve_layer(m, l, err)) != SYM_OK)
            return s;
    }
    return SYM_OK;
}

/* Lists unused tensors, rejecting biases, which the Llama computation has no place for. */
static sym_status collect_ignored(sym_model *m, sym_error *err)
{
    m->ignored = calloc(m->n_entries ? m->n_entries : 1, sizeof *m->ignored);
    if (m->ignored == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", m->dir);
    for (size_t i = 0; i < m->n_entries; i++) {
        const model_entry *e = &m->entries[i];
        if (e->used)
            continue;
        size_t len = strlen(e->name);
        if (len >= 5 && strcmp(e->name + len - 5, ".bias") == 0)
            return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                                 "%s: tensor '%s' is a bias; models with biases are not supported",
                                 m->dir, e->name);
        m->ignored[m->n_ignored++] = e->name;
    }
    return SYM_OK;
}

sym_status sym_model_open(sym_model **out, const char *dir, sym_error *err)
{
    *out = NULL;
    sym_model *m = calloc(1, sizeof *m);
    if (m == NULL || (m->dir = strdup(dir)) == NULL) {
        free(m);
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", dir);
    }
    size_t len = strlen(m->dir);
    while (len > 1 && m->dir[len - 1] == '/')
        m->dir[--len] = '\0';

    char path[PATH_MAX];
    struct stat st;
    sym_status s = SYM_OK;
    if (stat(m->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        s = sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: not a model directory: %s", dir,
                          stat(m->dir, &st) != 0 ? strerror(errno) : "not a directory");
    if (s == SYM_OK && snprintf(path, sizeof path, "%s/config.json", m->dir) >= (int)sizeof path)
        s = sym_error_set(err, SYM_ERR_LIMIT, "%s: path too long", dir);
    if (s == SYM_OK && access(path, F_OK) != 0 && errno == ENOENT)
        s = sym_error_set(err, SYM_ERR_NOT_FOUND,
                          "%s: no config.json, so this is not a Hugging Face model directory; "
                          "give the directory that holds config.json and the .safetensors "
                          "files", dir);
    if (s == SYM_OK)
        s = sym_json_load_file(path, SYM_MAX_CONFIG_BYTES, &m->config_json, err);
    if (s == SYM_OK)
        s = sym_config_parse(m->config_json, &m->config, path, err);
    if (s == SYM_OK)
        s = load_tensors(m, err);
    if (s == SYM_OK)
        s = resolve_roles(m, err);
    if (s == SYM_OK)
        s = collect_ignored(m, err);
    if (s != SYM_OK) {
        sym_model_close(m);
        return s;
    }
    *out = m;
    return SYM_OK;
}

void sym_model_close(sym_model *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_shards; i++)
        sym_st_close(m->shards[i]);
    free(m->shards);
    free(m->entries);
    free(m->layer_refs);
    free(m->ignored);
    json_decref(m->config_json);
    free(m->dir);
    free(m);
}

const char *sym_model_dir(const sym_model *m) { return m->dir; }
const sym_model_config *sym_model_get_config(const sym_model *m) { return &m->config; }
const void *sym_model_config_json(const sym_model *m) { return m->config_json; }
bool sym_model_lm_head_tied(const sym_model *m) { return m->tied; }
size_t sym_model_shard_count(const sym_model *m) { return m->n_shards; }
const sym_st_file *sym_model_shard(const sym_model *m, size_t i) { return m->shards[i]; }
const char *sym_model_prefix(const sym_model *m) { return m->prefix; }
size_t sym_model_ignored_count(const sym_model *m) { return m->n_ignored; }
const char *sym_model_ignored_name(const sym_model *m, size_t i) { return m->ignored[i]; }

const sym_tensor_ref *sym_model_tensor(const sym_model *m, sym_role role, int layer, int expert)
{
    if ((unsigned)role >= SYM_ROLE_COUNT)
        return NULL;
    if (role == SYM_ROLE_EMBED || role == SYM_ROLE_FINAL_NORM || role == SYM_ROLE_LM_HEAD)
        return &m->global[role];
    if (layer < 0 || layer >= m->config.num_hidden_layers)
        return NULL;
    bool moe = m->config.num_local_experts > 0;
    if (role == SYM_ROLE_ROUTER && !moe)
        return NULL;
    size_t slot = 0;
    if (is_ffn_role(role)) {
        if (moe != (expert >= 0) || expert >= m->config.num_local_experts)
            return NULL;
        slot = (size_t)(expert + 1);
    }
    return layer_ref(m, layer, slot, role);
}
