/* Verification of a merged directory: structure, index, config and checksums. */
#include "symphony/merge.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "symphony/model.h"
#include "symphony/safetensors.h"
#include "symphony/writer.h"

/* Progress is reported about every this many bytes hashed. */
#define PROGRESS_STEP (64u << 20)

typedef struct verify_state {
    const char *dir;
    sym_verify_report *report;
    json_t *manifest; /* "tensors" object, or NULL */
    json_t *weight_map;
    void (*progress)(void *context, uint64_t done, uint64_t total);
    void *context;
    uint64_t total_bytes;
} verify_state;

static void add_problem(verify_state *v, const char *file, const char *tensor, const char *fmt,
                        ...) __attribute__((format(printf, 4, 5)));

static void add_problem(verify_state *v, const char *file, const char *tensor, const char *fmt,
                        ...)
{
    sym_verify_report *r = v->report;
    sym_verify_problem *grown = realloc(r->problems, (r->n_problems + 1) * sizeof *grown);
    if (grown == NULL)
        return;
    r->problems = grown;
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    sym_verify_problem *p = &r->problems[r->n_problems++];
    p->file = strdup(file);
    p->tensor = tensor != NULL ? strdup(tensor) : NULL;
    p->message = strdup(message);
}

static json_t *load_json(verify_state *v, const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", v->dir, name);
    struct stat st;
    if (stat(path, &st) != 0) {
        add_problem(v, name, NULL, "cannot be read: %s; the merge writes it, so rerun the "
                    "merge with --force", strerror(errno));
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && jerr.line > 0)
        add_problem(v, name, NULL, "cannot be read as JSON: %s (line %d)", jerr.text, jerr.line);
    else if (root == NULL)
        add_problem(v, name, NULL, "cannot be read as JSON: %s", jerr.text);
    return root;
}

/* The manifest names its checksum algorithm; only xxh3-64 is computed here, so any other
 * name would make every comparison meaningless. Returns the "tensors" object or NULL. */
static json_t *manifest_tensors(verify_state *v, json_t *manifest)
{
    if (manifest == NULL)
        return NULL;
    const char *algorithm = json_string_value(json_object_get(manifest, "checksum"));
    if (algorithm == NULL || strcmp(algorithm, "xxh3-64") != 0) {
        add_problem(v, SYM_MANIFEST_NAME, NULL, "\"checksum\" is %s%s%s; expected "
                    "\"xxh3-64\", the only algorithm symphony-stream writes and checks",
                    algorithm ? "\"" : "", algorithm ? algorithm : "missing or not a string",
                    algorithm ? "\"" : "");
        return NULL;
    }
    json_t *tensors = json_object_get(manifest, "tensors");
    if (!json_is_object(tensors)) {
        add_problem(v, SYM_MANIFEST_NAME, NULL, "no \"tensors\" object");
        return NULL;
    }
    return tensors;
}

static void check_manifest_entry(verify_state *v, const char *file, const sym_st_file *f,
                                 const sym_st_tensor *t)
{
    json_t *entry = v->manifest ? json_object_get(v->manifest, t->name) : NULL;
    if (v->manifest == NULL)
        return;
    if (entry == NULL) {
        add_problem(v, file, t->name, "tensor is missing from " SYM_MANIFEST_NAME);
        return;
    }
    const char *want_file = json_string_value(json_object_get(entry, "file"));
    const char *want_hash = json_string_value(json_object_get(entry, "xxh3"));
    json_int_t offset = json_integer_value(json_object_get(entry, "offset"));
    json_int_t length = json_integer_value(json_object_get(entry, "length"));
    if (want_file == NULL || strcmp(want_file, file) != 0 || (uint64_t)offset != t->offset ||
        (uint64_t)length != t->nbytes) {
        add_problem(v, file, t->name, "location differs from " SYM_MANIFEST_NAME);
        return;
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx",
             (unsigned long long)XXH3_64bits(sym_st_data(f, t), t->nbytes));
    if (want_hash == NULL || strcmp(hex, want_hash) != 0)
        add_problem(v, file, t->name, "checksum mismatch: xxh3 %s, manifest %s: the data is "
                    "damaged", hex, want_hash ? want_hash : "(none)");
}

static void check_shard(verify_state *v, const char *file, uint64_t *done)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", v->dir, file);
    sym_st_file *f;
    sym_error err;
    if (sym_st_open(&f, path, &err) != SYM_OK) {
        add_problem(v, file, NULL, "%s", err.message);
        return;
    }
    if (!f->header.meta_strict)
        add_problem(v, file, NULL, "__metadata__ must map strings to strings");
    bool format_pt = false;
    for (size_t i = 0; i < f->header.n_meta; i++)
        format_pt |= strcmp(f->header.meta[i].key, "format") == 0 &&
                     strcmp(f->header.meta[i].value, "pt") == 0;
    if (!format_pt)
        add_problem(v, file, NULL, "__metadata__ lacks \"format\": \"pt\"; transformers "
                    "refuses such shards");
    for (size_t i = 0; i < f->header.n_tensors; i++) {
        const sym_st_tensor *t = &f->header.tensors[i];
        const char *mapped = json_string_value(json_object_get(v->weight_map, t->name));
        if (mapped == NULL || strcmp(mapped, file) != 0)
            add_problem(v, file, t->name, "tensor is not mapped to this file by the index");
        check_manifest_entry(v, file, f, t);
        v->report->tensors_checked++;
        uint64_t before = *done;
        *done += t->nbytes;
        v->report->bytes_checked += t->nbytes;
        if (v->progress != NULL && *done / PROGRESS_STEP != before / PROGRESS_STEP)
            v->progress(v->context, *done, v->total_bytes);
    }
    sym_st_close(f);
}

/* Every tensor the index or the manifest names must exist in its shard. */
static void check_listed_tensors(verify_state *v, json_t *index_total)
{
    const char *name;
    json_t *value;
    uint64_t sum = 0;
    json_object_foreach(v->weight_map, name, value) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", v->dir, json_string_value(value));
        sym_st_file *f;
        sym_error err;
        if (sym_st_open(&f, path, &err) != SYM_OK)
            continue; /* reported by check_shard */
        const sym_st_tensor *t = sym_st_header_find(&f->header, name);
        if (t == NULL)
            add_problem(v, json_string_value(value), name, "tensor named by the index is "
                        "missing from the file");
        else
            sum += t->nbytes;
        sym_st_close(f);
    }
    if (index_total != NULL && (uint64_t)json_integer_value(index_total) != sum)
        add_problem(v, "model.safetensors.index.json", NULL,
                    "metadata.total_size is %lld, the tensors hold %llu bytes",
                    (long long)json_integer_value(index_total), (unsigned long long)sum);
    json_object_foreach(v->manifest, name, value) {
        if (json_object_get(v->weight_map, name) == NULL)
            add_problem(v, SYM_MANIFEST_NAME, name, "tensor listed in the manifest is missing "
                        "from the index");
    }
}

static void check_config(verify_state *v)
{
    sym_model *m;
    sym_error err;
    if (sym_model_open(&m, v->dir, &err) != SYM_OK) {
        add_problem(v, "config.json", NULL, "config and tensors disagree: %s", err.message);
        return;
    }
    sym_model_close(m);
}

/* Collects the distinct shard names of the weight map, in first-seen order. */
static json_t *shard_list(json_t *weight_map)
{
    json_t *seen = json_object(), *list = json_array();
    const char *name;
    json_t *value;
    json_object_foreach(weight_map, name, value) {
        const char *file = json_string_value(value);
        if (file != NULL && json_object_get(seen, file) == NULL) {
            json_object_set_new(seen, file, json_true());
            json_array_append_new(list, json_string(file));
        }
    }
    json_decref(seen);
    return list;
}

sym_status sym_verify_dir(const char *dir, sym_verify_report *report,
                          void (*progress)(void *context, uint64_t done, uint64_t total),
                          void *context, sym_error *err)
{
    memset(report, 0, sizeof *report);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: not a directory", dir);
    verify_state v = {.dir = dir, .report = report, .progress = progress, .context = context};
    json_t *index = load_json(&v, "model.safetensors.index.json");
    json_t *manifest = load_json(&v, SYM_MANIFEST_NAME);
    v.manifest = manifest_tensors(&v, manifest);
    v.weight_map = index ? json_object_get(index, "weight_map") : NULL;
    if (v.weight_map == NULL || !json_is_object(v.weight_map)) {
        if (index != NULL)
            add_problem(&v, "model.safetensors.index.json", NULL, "no weight_map object");
        json_decref(index);
        json_decref(manifest);
        return SYM_OK;
    }
    json_t *total = json_object_get(json_object_get(index, "metadata"), "total_size");
    v.total_bytes = total ? (uint64_t)json_integer_value(total) : 0;

    json_t *shards = shard_list(v.weight_map);
    uint64_t done = 0;
    for (size_t i = 0; i < json_array_size(shards); i++)
        check_shard(&v, json_string_value(json_array_get(shards, i)), &done);
    check_listed_tensors(&v, total);
    check_config(&v);
    json_decref(shards);
    json_decref(index);
    json_decref(manifest);
    return SYM_OK;
}

void sym_verify_report_free(sym_verify_report *report)
{
    for (size_t i = 0; i < report->n_problems; i++) {
        free(report->problems[i].file);
        free(report->problems[i].tensor);
        free(report->problems[i].message);
    }
    free(report->problems);
    memset(report, 0, sizeof *report);
}
