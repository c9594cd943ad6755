/* Output plan, shard headers and the JSON files of a Mixtral-format directory. */
#include "symphony/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

sym_status sym_plan_add(sym_out_plan *plan, const char *name, sym_dtype dtype, int ndim,
                        const uint64_t *shape, sym_error *err)
{
    if (plan->n_tensors == plan->capacity) {
        size_t capacity = plan->capacity ? 2 * plan->capacity : 64;
        sym_plan_tensor *grown = realloc(plan->tensors, capacity * sizeof *grown);
        if (grown == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");
        plan->tensors = grown;
        plan->capacity = capacity;
    }
    sym_plan_tensor *t = &plan->tensors[plan->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (t->name == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");
    t->dtype = dtype;
    t->ndim = ndim;
    t->shape[0] = shape[0];
    t->shape[1] = ndim > 1 ? shape[1] : 1;
    t->nbytes = t->shape[0] * t->shape[1] * (sym_dtype_bits(dtype) / 8);
    plan->n_tensors++;
    return SYM_OK;
}

/* Builds the header of one shard: tensors [first, end) with data offsets relative to the
 * data start, padded with spaces to a multiple of 8 bytes as other writers do. */
static sym_status build_header(sym_out_plan *plan, uint32_t shard, size_t first, size_t end,
                               sym_error *err)
{
    json_t *root = json_object();
    json_t *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    uint64_t position = 0;
    for (size_t i = first; i < end; i++) {
        sym_plan_tensor *t = &plan->tensors[i];
        json_t *entry = json_object();
        json_object_set_new(entry, "dtype", json_string(sym_dtype_name(t->dtype)));
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        json_object_set_new(entry, "shape", shape);
        json_t *offsets = json_array();
        json_array_append_new(offsets, json_integer((json_int_t)position));
        json_array_append_new(offsets, json_integer((json_int_t)(position + t->nbytes)));
        json_object_set_new(entry, "data_offsets", offsets);
        json_object_set_new(root, t->name, entry);
        position += t->nbytes;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");
    size_t len = strlen(text);
    size_t padded = (len + 7) / 8 * 8;
    char *header = malloc(8 + padded);
    if (header == NULL) {
        free(text);
        return sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");
    }
    for (int b = 0; b < 8; b++)
        header[b] = (char)(((uint64_t)padded >> (8 * b)) & 0xffu);
    memcpy(header + 8, text, len);
    memset(header + 8 + len, ' ', padded - len);
    free(text);

    plan->shard_header[shard] = header;
    plan->shard_header_len[shard] = 8 + padded;
    for (size_t i = first; i < end; i++)
        plan->tensors[i].offset += 8 + padded;
    plan->shard_file_size[shard] = 8 + padded + position;
    return SYM_OK;
}

sym_status sym_plan_layout(sym_out_plan *plan, uint64_t shard_size, sym_error *err)
{
    /* First pass: shard numbers and offsets relative to each shard's data start. */
    uint32_t shard = 0;
    uint64_t used = 0;
    for (size_t i = 0; i < plan->n_tensors; i++) {
        sym_plan_tensor *t = &plan->tensors[i];
        if (used > 0 && used + t->nbytes > shard_size) {
            shard++;
            used = 0;
        }
        t->shard = shard;
        t->offset = used;
        used += t->nbytes;
        plan->total_size += t->nbytes;
    }
    plan->n_shards = plan->n_tensors ? shard + 1 : 0;
    plan->shard_file_size = calloc(plan->n_shards + 1, sizeof *plan->shard_file_size);
    plan->shard_header = calloc(plan->n_shards + 1, sizeof *plan->shard_header);
    plan->shard_header_len = calloc(plan->n_shards + 1, sizeof *plan->shard_header_len);
    if (!plan->shard_file_size || !plan->shard_header || !plan->shard_header_len)
        return sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");

    /* Second pass: one header per shard; offsets become absolute file positions. */
    size_t first = 0;
    for (uint32_t s = 0; s < plan->n_shards; s++) {
        size_t end = first;
        while (end < plan->n_tensors && plan->tensors[end].shard == s)
            end++;
        sym_status st = build_header(plan, s, first, end, err);
        if (st != SYM_OK)
            return st;
        first = end;
    }
    return SYM_OK;
}

void sym_plan_free(sym_out_plan *plan)
{
    for (size_t i = 0; i < plan->n_tensors; i++)
        free(plan->tensors[i].name);
    free(plan->tensors);
    for (uint32_t s = 0; plan->shard_header != NULL && s < plan->n_shards; s++)
        free(plan->shard_header[s]);
    free(plan->shard_header);
    free(plan->shard_header_len);
    free(plan->shard_file_size);
    memset(plan, 0, sizeof *plan);
}

void sym_shard_name(uint32_t shard, uint32_t n_shards, char *buf, size_t size)
{
    snprintf(buf, size, "model-%05u-of-%05u.safetensors", shard + 1, n_shards);
}

sym_status sym_write_file(const char *dir, const char *name, const void *data, size_t size,
                          sym_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    const char *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, p + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            sym_status s = sym_error_set(err, SYM_ERR_IO, "%s: write failed: %s", path,
                                         strerror(errno));
            close(fd);
            return s;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        sym_status s = sym_error_set(err, SYM_ERR_IO, "%s: fsync failed: %s", path,
                                     strerror(errno));
        close(fd);
        return s;
    }
    close(fd);
    return SYM_OK;
}

sym_status sym_write_json_file(const void *json, const char *dir, const char *name,
                               sym_error *err)
{
    char *text = json_dumps((const json_t *)json, JSON_INDENT(2) | JSON_SORT_KEYS |
                                                      JSON_REAL_PRECISION(17));
    if (text == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    size_t len = strlen(text);
    text[len] = '\0';
    char *with_newline = realloc(text, len + 2);
    if (with_newline == NULL) {
        free(text);
        return sym_error_set(err, SYM_ERR_NOMEM, "%s/%s: out of memory", dir, name);
    }
    with_newline[len] = '\n';
    sym_status s = sym_write_file(dir, name, with_newline, len + 1, err);
    free(with_newline);
    return s;
}

sym_status sym_write_index(const sym_out_plan *plan, const char *dir, sym_error *err)
{
    json_t *root = json_object();
    json_t *meta = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)plan->total_size));
    json_object_set_new(root, "metadata", meta);
    json_t *map = json_object();
    for (size_t i = 0; i < plan->n_tensors; i++) {
        char shard[64];
        sym_shard_name(plan->tensors[i].shard, plan->n_shards, shard, sizeof shard);
        json_object_set_new(map, plan->tensors[i].name, json_string(shard));
    }
    json_object_set_new(root, "weight_map", map);
    sym_status s = sym_write_json_file(root, dir, "model.safetensors.index.json", err);
    json_decref(root);
    return s;
}

sym_status sym_write_manifest(const sym_out_plan *plan, const char *dir, sym_error *err)
{
    json_t *root = json_object();
    json_object_set_new(root, "checksum", json_string("xxh3-64"));
    json_t *tensors = json_object();
    for (size_t i = 0; i < plan->n_tensors; i++) {
        const sym_plan_tensor *t = &plan->tensors[i];
        char shard[64], hex[17];
        sym_shard_name(t->shard, plan->n_shards, shard, sizeof shard);
        snprintf(hex, sizeof hex, "%016llx", (unsigned long long)t->xxh3);
        json_t *entry = json_object();
        json_object_set_new(entry, "file", json_string(shard));
        json_object_set_new(entry, "offset", json_integer((json_int_t)t->offset));
        json_object_set_new(entry, "length", json_integer((json_int_t)t->nbytes));
        json_object_set_new(entry, "xxh3", json_string(hex));
        json_object_set_new(tensors, t->name, entry);
    }
    json_object_set_new(root, "tensors", tensors);
    sym_status s = sym_write_json_file(root, dir, SYM_MANIFEST_NAME, err);
    json_decref(root);
    return s;
}

static const char *torch_dtype_name(sym_dtype dtype)
{
    if (dtype == SYM_DTYPE_BF16)
        return "bfloat16";
    if (dtype == SYM_DTYPE_F16)
        return "float16";
    return "float32";
}

/* Sets a real value, keeping the anchor's spelling when it already has that value. */
static void set_real(json_t *root, const char *key, double value)
{
    json_t *old = json_object_get(root, key);
    if (old != NULL && json_is_number(old) && json_number_value(old) == value)
        return;
    json_object_set_new(root, key, json_real(value));
}

/* Writes every architecture value explicitly: Mixtral's defaults differ from Llama's. */
static void set_architecture(json_t *root, const sym_model_config *c,
                             const sym_moe_config_values *v)
{
    json_object_set_new(root, "model_type", json_string("mixtral"));
    json_t *arch = json_array();
    json_array_append_new(arch, json_string("MixtralForCausalLM"));
    json_object_set_new(root, "architectures", arch);
    json_object_set_new(root, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(root, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(root, "num_hidden_layers", json_integer(c->num_hidden_layers));
    json_object_set_new(root, "num_attention_heads", json_integer(c->num_attention_heads));
    json_object_set_new(root, "num_key_value_heads", json_integer(c->num_key_value_heads));
    json_object_set_new(root, "head_dim", json_integer(c->head_dim));
    json_object_set_new(root, "max_position_embeddings",
                        json_integer(c->max_position_embeddings));
    set_real(root, "rms_norm_eps", c->rms_norm_eps);
    set_real(root, "rope_theta", c->rope_theta);
    json_object_set_new(root, "hidden_act", json_string("silu"));
    json_object_set_new(root, "vocab_size", json_integer(v->vocab_size));
    json_object_set_new(root, "tie_word_embeddings", json_boolean(v->tie_word_embeddings));
    json_object_set_new(root, "num_local_experts", json_integer(v->num_local_experts));
    json_object_set_new(root, "num_experts_per_tok", json_integer(v->num_experts_per_tok));
    json_object_set_new(root, "torch_dtype", json_string(torch_dtype_name(v->dtype)));
    if (json_object_get(root, "rope_scaling") == NULL)
        json_object_set_new(root, "rope_scaling", json_null());
    if (json_object_get(root, "sliding_window") == NULL)
        json_object_set_new(root, "sliding_window", json_null());
}

sym_status sym_write_moe_config(const sym_model *anchor, const sym_moe_config_values *values,
                                const char *dir, sym_error *err)
{
    json_t *root = json_deep_copy((const json_t *)sym_model_config_json(anchor));
    if (root == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s/config.json: out of memory", dir);
    json_object_del(root, "auto_map");
    set_architecture(root, sym_model_get_config(anchor), values);
    sym_status s = sym_write_json_file(root, dir, "config.json", err);
    json_decref(root);
    return s;
}

sym_status sym_copy_file_if_present(const char *src_dir, const char *dst_dir, const char *name,
                                    bool *copied, sym_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", src_dir, name);
    *copied = false;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return errno == ENOENT ? SYM_OK
                               : sym_error_set(err, SYM_ERR_IO, "%s: cannot open: %s", path,
                                               strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        char *grown = realloc(buf, cap * 2);
        if (grown == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    bool failed = ferror(f);
    fclose(f);
    if (buf == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    if (failed) {
        free(buf);
        return sym_error_set(err, SYM_ERR_IO, "%s: read failed", path);
    }
    sym_status s = sym_write_file(dst_dir, name, buf, len, err);
    free(buf);
    *copied = s == SYM_OK;
    return s;
}
