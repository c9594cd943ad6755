/* retrain-router: router training again from the work files of a calibrated merge
 * (see retrain.h). The merge writes router-setup.json and labels.hc here too. */
#include "symphony/retrain.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "pipeline_internal.h"
#include "symphony/fusion.h"
#include "symphony/model.h"
#include "symphony/writer.h"

#define SETUP_NAME "router-setup.json"
#define LABELS_NAME "labels.hc"
#define SETUP_FORMAT "symphony-router-setup-1"

sym_status sym_pipeline_write_router_setup(const sym_merge_config *cfg, int threads,
                                           const sym_calib *calib, size_t hidden,
                                           const char *work_dir, sym_error *err)
{
    size_t tokens = calib->n_seq * calib->seq_len;
    float *labels = malloc(tokens * sizeof *labels + 1);
    if (labels == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "calibration: out of memory");
    for (size_t t = 0; t < tokens; t++)
        labels[t] = (float)calib->labels[t];
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", work_dir, LABELS_NAME);
    sym_status s = sym_hcache_write(path, labels, tokens, 1, SYM_HCACHE_F32, err);
    free(labels);
    if (s != SYM_OK)
        return s;
    const sym_router_cfg *r = &cfg->router;
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:f, s:I, s:I,"
                          " s:I, s:I, s:i}",
                          "format", SETUP_FORMAT, "experts", (json_int_t)cfg->n_experts,
                          "hidden", (json_int_t)hidden, "tokens", (json_int_t)tokens,
                          "top_k", (json_int_t)cfg->experts_per_token, "objective",
                          (json_int_t)r->objective, "init", (json_int_t)r->init, "steps",
                          (json_int_t)r->steps, "learning_rate", r->learning_rate,
                          "batch_size", (json_int_t)r->batch_size, "balance_weight",
                          r->balance_weight, "gate_mode", (json_int_t)cfg->gate_mode,
                          "dtype", (json_int_t)cfg->dtype, "cache_dtype",
                          (json_int_t)cfg->cache_dtype, "seed", (json_int_t)cfg->seed,
                          "threads", threads > 0 ? threads : 1);
    if (j != NULL)
        json_object_set_new(j, "domain_weights", json_integer(r->domain_weights));
    if (j == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "calibration: out of memory");
    s = sym_write_json_file(j, work_dir, SETUP_NAME, err);
    json_decref(j);
    return s;
}

/* ---- retraining ---- */

/* Joins dir and name into path; fails when the result does not fit. */
static sym_status join_path(char *path, const char *dir, const char *name, sym_error *err)
{
    int n = snprintf(path, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX)
        return sym_error_set(err, SYM_ERR_INVALID, "%s/%s: path too long", dir, name);
    return SYM_OK;
}

/* One router tensor of the output: where it lives and its new bytes. */
typedef struct router_slot {
    char name[128];
    char shard[PATH_MAX];
    uint64_t offset, nbytes;
    uint8_t *bytes;
} router_slot;

typedef struct retrain {
    const char *dir;
    char work[PATH_MAX];
    sym_merge_config cfg; /* only the fields router training reads */
    int threads;
    size_t tokens, hidden, d_ff;
    int n_layers;
    sym_model *model;
    uint32_t *labels;
    float *x, *router;
    sym_merged_layer layer;
    router_slot *slots;
    json_t *reports; /* per-layer router reports */
} retrain;

static sym_status get_int(json_t *j, const char *path, const char *key, int64_t min,
                          int64_t max, int64_t *value, sym_error *err)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: '%s' is missing or not an integer in "
                             "[%lld, %lld]; rerun the merge to rewrite it", path, key,
                             (long long)min, (long long)max);
    *value = json_integer_value(v);
    return SYM_OK;
}

static sym_status get_real(json_t *j, const char *path, const char *key, double *value,
                           sym_error *err)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_number(v))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: '%s' is missing or not a number; "
                             "rerun the merge to rewrite it", path, key);
    *value = json_number_value(v);
    return SYM_OK;
}

/* Reads router-setup.json into the config fields router training uses. */
static sym_status load_setup(retrain *rt, sym_error *err)
{
    char path[PATH_MAX];
    sym_status s = join_path(path, rt->work, SETUP_NAME, err);
    if (s != SYM_OK)
        return s;
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL && access(path, F_OK) != 0)
        return sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: not found; retrain-router needs "
                             "the work directory of a merge with calibration_tokens > 0",
                             path);
    if (j == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", path,
                             jerr.line, jerr.text);
    int64_t v[12] = {0};
    static const char *const keys[] = {"experts", "hidden", "tokens", "top_k", "objective",
                                       "init", "steps", "batch_size", "gate_mode", "dtype",
                                       "seed", "threads"};
    static const int64_t min[] = {1, 1, 2, 1, 0, 0, 0, 1, 0, 0, 0, 1};
    static const int64_t max[] = {SYM_MAX_SOURCES, 1 << 20, INT64_MAX / 2, SYM_MAX_SOURCES,
                                  SYM_ROUTER_DISTILL_TOPK, 1, 100000000, 1 << 24, 4, 64,
                                  INT64_MAX, 4096};
    const char *format = json_string_value(json_object_get(j, "format"));
    s = format != NULL && strcmp(format, SETUP_FORMAT) == 0
                       ? SYM_OK
                       : sym_error_set(err, SYM_ERR_FORMAT, "%s: format is not '%s'", path,
                                       SETUP_FORMAT);
    for (size_t i = 0; i < 12 && s == SYM_OK; i++)
        s = get_int(j, path, keys[i], min[i], max[i], &v[i], err);
    if (s == SYM_OK)
        s = get_real(j, path, "learning_rate", &rt->cfg.router.learning_rate, err);
    if (s == SYM_OK)
        s = get_real(j, path, "balance_weight", &rt->cfg.router.balance_weight, err);
    /* Work directories written before domain weights existed trained with uniform ones. */
    int64_t weights = SYM_DOMAIN_WEIGHTS_UNIFORM;
    if (s == SYM_OK && json_object_get(j, "domain_weights") != NULL)
        s = get_int(j, path, "domain_weights", SYM_DOMAIN_WEIGHTS_LENS,
                    SYM_DOMAIN_WEIGHTS_UNIFORM, &weights, err);
    rt->cfg.router.domain_weights = (sym_domain_weights)weights;
    json_decref(j);
    rt->cfg.n_experts = (size_t)v[0];
    rt->hidden = (size_t)v[1];
    rt->tokens = (size_t)v[2];
    rt->cfg.experts_per_token = v[3];
    rt->cfg.router.objective = (sym_router_objective)v[4];
    rt->cfg.router.init = (sym_router_init)v[5];
    rt->cfg.router.steps = v[6];
    rt->cfg.router.batch_size = v[7];
    rt->cfg.gate_mode = (sym_gate_mode)v[8];
    rt->cfg.dtype = (sym_dtype)v[9];
    rt->cfg.seed = (uint64_t)v[10];
    rt->threads = (int)v[11];
    return s;
}

static void apply_options(retrain *rt, const sym_retrain_options *o)
{
    if (o->has_objective)
        rt->cfg.router.objective = o->objective;
    if (o->has_steps)
        rt->cfg.router.steps = o->steps;
    if (o->has_lr)
        rt->cfg.router.learning_rate = o->lr;
    if (o->has_seed)
        rt->cfg.seed = o->seed;
    if (o->has_domain_weights)
        rt->cfg.router.domain_weights = o->domain_weights;
    if (o->threads > 0)
        rt->threads = o->threads;
}

/* Checks the output's config against the setup file and allocates the buffers. */
static sym_status open_output(retrain *rt, sym_error *err)
{
    sym_status s = sym_model_open(&rt->model, rt->dir, err);
    if (s != SYM_OK)
        return s;
    const sym_model_config *c = sym_model_get_config(rt->model);
    if ((size_t)c->num_local_experts != rt->cfg.n_experts || (size_t)c->hidden_size != rt->hidden)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s/config.json: %lld experts of hidden size "
                             "%lld, but %s/%s was written for %zu experts of hidden size %zu",
                             rt->dir, (long long)c->num_local_experts,
                             (long long)c->hidden_size, rt->work, SETUP_NAME,
                             rt->cfg.n_experts, rt->hidden);
    rt->n_layers = (int)c->num_hidden_layers;
    rt->d_ff = (size_t)c->intermediate_size;
    size_t T = rt->tokens, d = rt->hidden, f = rt->d_ff, n = rt->cfg.n_experts;
    bool failed = false;
    rt->labels = malloc(T * sizeof *rt->labels + 1);
    rt->x = malloc(T * d * sizeof *rt->x + 1);
    rt->router = malloc(n * d * sizeof *rt->router + 1);
    rt->slots = calloc((size_t)rt->n_layers + 1, sizeof *rt->slots);
    failed = rt->labels == NULL || rt->x == NULL || rt->router == NULL || rt->slots == NULL;
    for (size_t e = 0; e < n && !failed; e++) {
        rt->layer.gate[e] = malloc(f * d * sizeof(float));
        rt->layer.up[e] = malloc(f * d * sizeof(float));
        rt->layer.down[e] = malloc(f * d * sizeof(float));
        failed = rt->layer.gate[e] == NULL || rt->layer.up[e] == NULL ||
                 rt->layer.down[e] == NULL;
    }
    rt->layer.experts = n;
    rt->layer.hidden = d;
    rt->layer.d_ff = f;
    rt->reports = json_array();
    if (failed || rt->reports == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "retrain-router: out of memory for %zu "
                             "tokens of hidden size %zu", T, d);
    return SYM_OK;
}

static sym_status load_labels(retrain *rt, sym_error *err)
{
    char path[PATH_MAX];
    sym_status s = join_path(path, rt->work, LABELS_NAME, err);
    if (s == SYM_OK)
        s = sym_hcache_read(path, rt->x, rt->tokens, 1, err);
    for (size_t t = 0; t < rt->tokens && s == SYM_OK; t++) {
        float v = rt->x[t];
        if (!(v >= 0 && v < (float)rt->cfg.n_experts) || v != (float)(uint32_t)v)
            return sym_error_set(err, SYM_ERR_FORMAT, "%s: token %zu has label %g; expected "
                                 "an expert index 0..%zu", path, t, (double)v,
                                 rt->cfg.n_experts - 1);
        rt->labels[t] = (uint32_t)v;
    }
    return s;
}

static sym_status load_experts(retrain *rt, int l, sym_error *err)
{
    static const sym_role roles[3] = {SYM_ROLE_FFN_GATE, SYM_ROLE_FFN_UP, SYM_ROLE_FFN_DOWN};
    sym_status s = SYM_OK;
    for (size_t e = 0; e < rt->cfg.n_experts && s == SYM_OK; e++) {
        float *dst[3] = {rt->layer.gate[e], rt->layer.up[e], rt->layer.down[e]};
        for (int r = 0; r < 3 && s == SYM_OK; r++) {
            const sym_tensor_ref *ref = sym_model_tensor(rt->model, roles[r], l, (int)e);
            s = sym_tensor_read_f32(ref, 0, ref->info->numel, dst[r], err);
        }
    }
    return s;
}

/* Converts the router to the output's dtype and records where its bytes go. */
static sym_status stage_router(retrain *rt, int l, sym_error *err)
{
    const sym_tensor_ref *ref = sym_model_tensor(rt->model, SYM_ROLE_ROUTER, l, -1);
    size_t n = rt->cfg.n_experts * rt->hidden;
    router_slot *slot = &rt->slots[l];
    if (ref->info->numel != n || ref->info->dtype != rt->cfg.dtype)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: tensor %s is %s with %llu elements; "
                             "expected %s with %zu", ref->file->path, ref->info->name,
                             sym_dtype_name(ref->info->dtype),
                             (unsigned long long)ref->info->numel,
                             sym_dtype_name(rt->cfg.dtype), n);
    snprintf(slot->name, sizeof slot->name, "%s", ref->info->name);
    snprintf(slot->shard, sizeof slot->shard, "%s", ref->file->path);
    slot->offset = ref->info->offset;
    slot->nbytes = ref->info->nbytes;
    slot->bytes = malloc(slot->nbytes + 1);
    if (slot->bytes == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "retrain-router: out of memory");
    uint64_t overflow = 0;
    sym_status s = sym_convert_f32(rt->router, n, rt->cfg.dtype, slot->bytes, &overflow, err);
    if (s == SYM_OK && overflow > 0)
        s = sym_error_set(err, SYM_ERR_NONFINITE, "%s: %llu router weights overflow %s",
                          slot->name, (unsigned long long)overflow,
                          sym_dtype_name(rt->cfg.dtype));
    return s;
}

/* Largest domain weight accepted from a work file. The merge's weights average 1 over the
 * calibration tokens, so no domain's weight exceeds the number of domains (at most 64)
 * unless its share of the tokens is tiny. */
#define MAX_DOMAIN_WEIGHT 1000.0

/* Reads the domain weights the merge recorded for router l in layer-<l>.json. */
static sym_status read_domain_weights(const retrain *rt, int l, double *weights,
                                      sym_error *err)
{
    char path[PATH_MAX], name[32];
    snprintf(name, sizeof name, "layer-%d.json", l);
    sym_status s = join_path(path, rt->work, name, err);
    if (s != SYM_OK)
        return s;
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: cannot read: %s", path, jerr.text);
    json_t *array = json_object_get(json_object_get(j, "router"), "domain_weights");
    if (json_array_size(array) != rt->cfg.n_experts)
        s = sym_error_set(err, SYM_ERR_FORMAT, "%s: router.domain_weights is missing or does "
                          "not have %zu entries; retrain with --router-domain-weights uniform "
                          "or rerun the merge", path, rt->cfg.n_experts);
    for (size_t e = 0; e < rt->cfg.n_experts && s == SYM_OK; e++) {
        json_t *v = json_array_get(array, e);
        weights[e] = json_number_value(v);
        if (!json_is_number(v) || !(weights[e] >= 0.0) || !(weights[e] <= MAX_DOMAIN_WEIGHT))
            s = sym_error_set(err, SYM_ERR_FORMAT, "%s: router.domain_weights[%zu] is not a "
                              "number in [0, %g]; rerun the merge to rewrite it", path, e,
                              MAX_DOMAIN_WEIGHT);
    }
    double sum = 0.0;
    for (size_t e = 0; e < rt->cfg.n_experts && s == SYM_OK; e++)
        sum += weights[e];
    if (s == SYM_OK && !(sum > 0.0))
        s = sym_error_set(err, SYM_ERR_FORMAT, "%s: router.domain_weights are all 0; rerun "
                          "the merge to rewrite them", path);
    json_decref(j);
    return s;
}

static sym_status train_layer(retrain *rt, int l, const sym_retrain_options *o,
                              sym_error *err)
{
    char path[PATH_MAX], name[32];
    snprintf(name, sizeof name, "x-%d.hc", l);
    sym_status s = join_path(path, rt->work, name, err);
    if (s == SYM_OK)
        s = sym_hcache_read(path, rt->x, rt->tokens, rt->hidden, err);
    if (s == SYM_OK)
        s = load_experts(rt, l, err);
    sym_router_report report;
    float *y = NULL;
    double weights[SYM_MAX_SOURCES];
    bool lens = rt->cfg.router.domain_weights == SYM_DOMAIN_WEIGHTS_LENS;
    if (s == SYM_OK && lens)
        s = read_domain_weights(rt, l, weights, err);
    if (s == SYM_OK)
        s = sym_pipeline_expert_cache(&rt->cfg, &rt->layer, rt->x, rt->tokens, &y, err);
    if (s == SYM_OK)
        s = sym_pipeline_train_router(&rt->cfg, l, &rt->layer, rt->x, y, rt->labels,
                                      rt->tokens, lens ? weights : NULL, rt->threads,
                                      rt->router, &report, err);
    free(y);
    if (s == SYM_OK)
        s = stage_router(rt, l, err);
    if (s == SYM_OK) {
        json_array_append_new(rt->reports,
                              sym_pipeline_router_json(&report, rt->cfg.n_experts,
                                                       lens ? weights : NULL));
        if (o->layer_done != NULL)
            o->layer_done(o->context, l, rt->n_layers, &report);
    }
    return s;
}

/* ---- rewriting the output ---- */

static sym_status write_slot(const router_slot *slot, sym_error *err)
{
    int fd = open(slot->shard, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot open for writing: %s", slot->shard,
                             strerror(errno));
    sym_status s = SYM_OK;
    ssize_t n = pwrite(fd, slot->bytes, slot->nbytes, (off_t)slot->offset);
    if (n != (ssize_t)slot->nbytes)
        s = sym_error_set(err, SYM_ERR_IO, "%s: writing tensor %s failed: %s", slot->shard,
                          slot->name, n < 0 ? strerror(errno) : "short write");
    if (s == SYM_OK && fdatasync(fd) != 0)
        s = sym_error_set(err, SYM_ERR_IO, "%s: fdatasync failed: %s", slot->shard,
                          strerror(errno));
    close(fd);
    return s;
}

static sym_status load_json(const char *dir, const char *name, json_t **out, sym_error *err)
{
    char path[PATH_MAX];
    *out = NULL;
    sym_status s = join_path(path, dir, name, err);
    if (s != SYM_OK)
        return s;
    json_error_t jerr;
    *out = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (*out == NULL)
        s = sym_error_set(err, SYM_ERR_FORMAT, "%s: cannot load: %s", path, jerr.text);
    return s;
}

static sym_status update_manifest(retrain *rt, sym_error *err)
{
    json_t *root;
    sym_status s = load_json(rt->dir, SYM_MANIFEST_NAME, &root, err);
    json_t *tensors = s == SYM_OK ? json_object_get(root, "tensors") : NULL;
    for (int l = 0; l < rt->n_layers && s == SYM_OK; l++) {
        json_t *entry = json_object_get(tensors, rt->slots[l].name);
        if (!json_is_object(entry)) {
            s = sym_error_set(err, SYM_ERR_FORMAT, "%s/%s: no entry for %s", rt->dir,
                              SYM_MANIFEST_NAME, rt->slots[l].name);
            break;
        }
        char hex[17];
        snprintf(hex, sizeof hex, "%016llx",
                 (unsigned long long)XXH3_64bits(rt->slots[l].bytes, rt->slots[l].nbytes));
        json_object_set_new(entry, "xxh3", json_string(hex));
    }
    if (s == SYM_OK)
        s = sym_write_json_file(root, rt->dir, SYM_MANIFEST_NAME, err);
    json_decref(root);
    return s;
}

static json_t *settings_json(const retrain *rt)
{
    const sym_router_cfg *r = &rt->cfg.router;
    return json_pack("{s:s, s:s, s:I, s:f, s:I, s:i}", "objective",
                     sym_router_objective_name(r->objective), "domain_weights",
                     sym_domain_weights_name(r->domain_weights),
                     "steps", (json_int_t)r->steps, "learning_rate", r->learning_rate,
                     "seed", (json_int_t)rt->cfg.seed, "threads", rt->threads);
}

/* Replaces every layer's router entry in merge-report.json and records the settings. */
static sym_status update_report(retrain *rt, sym_error *err)
{
    json_t *root;
    sym_status s = load_json(rt->dir, SYM_REPORT_NAME, &root, err);
    json_t *layers = s == SYM_OK ? json_object_get(root, "layers") : NULL;
    size_t i;
    json_t *entry;
    json_array_foreach(layers, i, entry) {
        json_t *layer = json_object_get(entry, "layer");
        json_int_t l = json_is_integer(layer) ? json_integer_value(layer) : -1;
        if (l >= 0 && l < rt->n_layers)
            json_object_set(entry, "router", json_array_get(rt->reports, (size_t)l));
    }
    if (s == SYM_OK) {
        json_object_set_new(root, "router_retrain", settings_json(rt));
        s = sym_write_json_file(root, rt->dir, SYM_REPORT_NAME, err);
    }
    json_decref(root);
    return s;
}

/* Marks the routers in the merge state, so that rerunning the original merge command
 * replaces the output (with --force) instead of taking it as already complete. */
static sym_status update_state(retrain *rt, sym_error *err)
{
    json_t *root;
    sym_status s = load_json(rt->dir, SYM_STATE_NAME, &root, err);
    json_t *settings = s == SYM_OK ? json_object_get(root, "settings") : NULL;
    if (json_is_object(settings))
        json_object_set_new(settings, "router_retrain", settings_json(rt));
    if (s == SYM_OK)
        s = sym_write_json_file(root, rt->dir, SYM_STATE_NAME, err);
    json_decref(root);
    return s;
}

static void free_retrain(retrain *rt)
{
    sym_model_close(rt->model);
    for (size_t e = 0; e < rt->cfg.n_experts; e++) {
        free(rt->layer.gate[e]);
        free(rt->layer.up[e]);
        free(rt->layer.down[e]);
    }
    for (int l = 0; rt->slots != NULL && l < rt->n_layers; l++)
        free(rt->slots[l].bytes);
    free(rt->slots);
    free(rt->labels);
    free(rt->x);
    free(rt->router);
    json_decref(rt->reports);
}

sym_status sym_retrain_router(const char *dir, const sym_retrain_options *options,
                              sym_error *err)
{
    retrain rt = {.dir = dir};
    snprintf(rt.work, sizeof rt.work, "%s/%s", dir, SYM_WORK_DIR_NAME);
    sym_status s = load_setup(&rt, err);
    if (s == SYM_OK) {
        apply_options(&rt, options);
        s = open_output(&rt, err);
    }
    if (s == SYM_OK)
        s = load_labels(&rt, err);
    for (int l = 0; l < rt.n_layers && s == SYM_OK; l++)
        s = train_layer(&rt, l, options, err);
    /* The shards are mapped read-only by the model; close it before writing them. */
    sym_model_close(rt.model);
    rt.model = NULL;
    /* NOTE: a crash from here on can leave some routers rewritten and the manifest old;
     * verify then names the routers whose checksums differ. */
    for (int l = 0; l < rt.n_layers && s == SYM_OK; l++)
        s = write_slot(&rt.slots[l], err);
    if (s == SYM_OK)
        s = update_manifest(&rt, err);
    if (s == SYM_OK)
        s = update_report(&rt, err);
    if (s == SYM_OK)
        s = update_state(&rt, err);
    free_retrain(&rt);
    return s;
}
