/* The merge driver: sources, plan, output directory lifecycle, journal and resume.
 *
 * Output is built in OUTPUT.partial. symphony-merge.json there contains the fingerprint of
 * the merge (config bytes, settings, every source shard's size, mtime and header hash);
 * a resume is accepted only when it matches. Each tensor is written at its planned offset,
 * made durable, then journaled; a resume checks every journaled tensor (merge_resume.c)
 * and writes only the rest. When every tensor is done the metadata files are written, the
 * directory is renamed to OUTPUT, and the journal is deleted.
 */
#include "symphony/merge.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <xxhash.h>

#include "merge_internal.h"
#include "pipeline_internal.h"
#include "symphony/compat.h"
#include "symphony/fusion.h"
#include "symphony/kernels.h"
#include "symphony/writer.h"

/* State of one merge run. */
typedef struct merge_run {
    const sym_merge_config *cfg;
    const sym_merge_options *opts;
    sym_model *experts[SYM_MAX_SOURCES];
    sym_model *base; /* base_model when it is not an expert */
    const sym_model *fine_tune_base; /* base_model, also when it is an expert, or NULL */
    sym_model *anchor;
    const sym_model *vocab_donor;
    sym_merge_sources sources;
    bool tied;
    sym_out_plan plan;
    sym_tensor_job *jobs;
    bool *done;
    char partial[PATH_MAX];
    char lock_path[PATH_MAX];
    int lock_fd;
    int *shard_fds;
    uint64_t *shard_found_size; /* each shard's size before this run opened it */
    sym_journal journal;
    json_t *fingerprint;
    sym_pipeline *pipeline; /* calibration, or NULL */
    sym_merge_progress progress;
} merge_run;

static sym_status check_supported(const sym_merge_config *cfg, sym_error *err)
{
    uint64_t least = (uint64_t)cfg->sequence_length * cfg->n_experts;
    if (cfg->calibration_tokens > 0 && (uint64_t)cfg->calibration_tokens < least)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: calibration_tokens %lld: calibration needs at least one "
                             "sequence of %lld tokens per expert, %llu in all; raise it",
                             cfg->path, (long long)cfg->calibration_tokens,
                             (long long)cfg->sequence_length, (unsigned long long)least);
    if (cfg->calibration_tokens > 0)
        return SYM_OK;
    if (cfg->router.init == SYM_ROUTER_INIT_GATE_MODE &&
        cfg->gate_mode != SYM_GATE_RANDOM && cfg->gate_mode != SYM_GATE_UNIFORM_RANDOM)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: gate_mode '%s' is not supported without calibration "
                             "(calibration_tokens 0); set calibration_tokens, or use random, "
                             "uniform_random or symphony.router.init: zero",
                             cfg->path, sym_gate_mode_name(cfg->gate_mode));
    return SYM_OK;
}

static bool same_path(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    if (realpath(a, ra) == NULL || realpath(b, rb) == NULL)
        return strcmp(a, b) == 0;
    return strcmp(ra, rb) == 0;
}

static sym_status open_models(merge_run *run, sym_error *err)
{
    const sym_merge_config *cfg = run->cfg;
    for (size_t i = 0; i < cfg->n_experts; i++) {
        sym_status s = sym_model_open(&run->experts[i], cfg->experts[i].source_model, err);
        if (s != SYM_OK)
            return s;
    }
    sym_model *base = NULL;
    if (cfg->base_model != NULL) {
        for (size_t i = 0; i < cfg->n_experts && base == NULL; i++)
            if (same_path(cfg->base_model, cfg->experts[i].source_model))
                base = run->experts[i];
        if (base == NULL) {
            sym_status s = sym_model_open(&run->base, cfg->base_model, err);
            if (s != SYM_OK)
                return s;
            base = run->base;
        }
    }
    run->fine_tune_base = base;
    run->anchor = base != NULL ? base : run->experts[0];
    if (cfg->anchor != NULL) {
        run->anchor = NULL;
        for (size_t i = 0; i < cfg->n_experts && run->anchor == NULL; i++)
            if (same_path(cfg->anchor, cfg->experts[i].source_model))
                run->anchor = run->experts[i];
        if (run->anchor == NULL && base != NULL && same_path(cfg->anchor, cfg->base_model))
            run->anchor = base;
        if (run->anchor == NULL)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "%s: symphony.anchor '%s' is neither base_model nor an "
                                 "expert's source_model", cfg->path, cfg->anchor);
    }
    return SYM_OK;
}

/* Runs the architecture check with the anchor first, so it is the reference. With a plan,
 * every problem is added to it; without one, the first fails the call. */
static sym_status check_compatible(merge_run *run, sym_merge_plan *plan, sym_error *err)
{
    sym_model *list[SYM_MAX_SOURCES + 1];
    size_t n = 0;
    list[n++] = run->anchor;
    for (size_t i = 0; i < run->cfg->n_experts; i++)
        if (run->experts[i] != run->anchor)
            list[n++] = run->experts[i];
    /* Task arithmetic reads the base tensor by tensor, so it must have the same shapes. */
    if (run->base != NULL && run->base != run->anchor && sym_merge_config_uses_base(run->cfg))
        list[n++] = run->base;
    sym_compat_options options = {.rope_anchor = run->cfg->rope_anchor};
    sym_compat_report report;
    sym_status s = sym_compat_check(list, n, &options, &report, err);
    if (s != SYM_OK)
        return s;
    for (size_t i = 0; plan != NULL && i < report.n_problems; i++)
        sym_merge_plan_add_problem(plan, "the sources cannot be merged: %s",
                                   report.problems[i]);
    if (plan == NULL && report.n_problems > 0)
        s = sym_error_set(err, SYM_ERR_INCOMPATIBLE,
                          "the sources cannot be merged: %s (%zu problem(s) in all; "
                          "'symphony-stream inspect' on the sources lists them)",
                          report.problems[0], report.n_problems);
    sym_compat_report_free(&report);
    return s;
}

static void choose_vocabulary(merge_run *run)
{
    /* The output vocabulary is the longest source's; its tokenizer is copied.
     * TODO: check that every source's tokenizer agrees piece for piece with the donor's on
     * the ids it has; only the vocabulary sizes are compared now. */
    const sym_model *donor = run->anchor;
    uint64_t rows = sym_model_get_config(donor)->vocab_size;
    run->tied = true;
    for (size_t i = 0; i < run->cfg->n_experts; i++) {
        const sym_model *m = run->experts[i];
        if ((uint64_t)sym_model_get_config(m)->vocab_size > rows) {
            donor = m;
            rows = (uint64_t)sym_model_get_config(m)->vocab_size;
        }
        run->tied = run->tied && sym_model_lm_head_tied(m);
    }
    run->vocab_donor = donor;
    run->sources = (sym_merge_sources){
        .experts = run->experts,
        .n_experts = run->cfg->n_experts,
        .anchor = run->anchor,
        .base = run->fine_tune_base,
        .cfg = run->cfg,
        .n_layers = (int)sym_model_get_config(run->anchor)->num_hidden_layers,
        .vocab_out = rows,
        .hidden = (uint64_t)sym_model_get_config(run->anchor)->hidden_size,
    };
}

static sym_status add_job(merge_run *run, sym_job_kind kind, sym_role role, int layer,
                          int expert, sym_error *err)
{
    const sym_model *shape_model = expert >= 0 ? run->experts[expert] : run->anchor;
    const sym_tensor_ref *ref = sym_model_tensor(shape_model, role, layer, -1);
    uint64_t shape[2] = {ref->info->shape[0], ref->info->ndim > 1 ? ref->info->shape[1] : 1};
    int ndim = ref->info->ndim;
    if (kind == SYM_JOB_EMBED || kind == SYM_JOB_LM_HEAD)
        shape[0] = run->sources.vocab_out;
    if (kind == SYM_JOB_ROUTER) {
        shape[0] = run->cfg->n_experts;
        shape[1] = run->sources.hidden;
        ndim = 2;
    }
    char name[256];
    sym_role_name(role, layer, expert, name, sizeof name);
    sym_status s = sym_plan_add(&run->plan, name, run->cfg->dtype, ndim, shape, err);
    if (s != SYM_OK)
        return s;
    run->jobs[run->plan.n_tensors - 1] = (sym_tensor_job){kind, role, layer, expert};
    return SYM_OK;
}

static sym_status add_layer_jobs(merge_run *run, int l, sym_error *err)
{
    static const sym_role attention[] = {SYM_ROLE_Q, SYM_ROLE_K, SYM_ROLE_V, SYM_ROLE_O};
    static const sym_role ffn[] = {SYM_ROLE_FFN_GATE, SYM_ROLE_FFN_DOWN, SYM_ROLE_FFN_UP};
    sym_status s = add_job(run, SYM_JOB_NORM, SYM_ROLE_INPUT_NORM, l, -1, err);
    for (int i = 0; i < 4 && s == SYM_OK; i++)
        s = add_job(run, SYM_JOB_ATTENTION, attention[i], l, -1, err);
    if (s == SYM_OK)
        s = add_job(run, SYM_JOB_NORM, SYM_ROLE_POST_NORM, l, -1, err);
    /* The router's shape comes from the anchor's q_proj entry, then is overridden. */
    if (s == SYM_OK)
        s = add_job(run, SYM_JOB_ROUTER, SYM_ROLE_Q, l, -1, err);
    if (s == SYM_OK) {
        char name[256];
        sym_role_name(SYM_ROLE_ROUTER, l, -1, name, sizeof name);
        free(run->plan.tensors[run->plan.n_tensors - 1].name);
        run->plan.tensors[run->plan.n_tensors - 1].name = strdup(name);
        run->jobs[run->plan.n_tensors - 1].role = SYM_ROLE_ROUTER;
    }
    for (int e = 0; e < (int)run->cfg->n_experts && s == SYM_OK; e++)
        for (int k = 0; k < 3 && s == SYM_OK; k++)
            s = add_job(run, SYM_JOB_EXPERT, ffn[k], l, e, err);
    return s;
}

static sym_status build_plan(merge_run *run, sym_error *err)
{
    size_t per_layer = 7 + 3 * run->cfg->n_experts;
    size_t max_jobs = 3 + per_layer * (size_t)run->sources.n_layers;
    run->jobs = calloc(max_jobs, sizeof *run->jobs);
    if (run->jobs == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");
    sym_status s = add_job(run, SYM_JOB_EMBED, SYM_ROLE_EMBED, -1, -1, err);
    for (int l = 0; l < run->sources.n_layers && s == SYM_OK; l++)
        s = add_layer_jobs(run, l, err);
    if (s == SYM_OK)
        s = add_job(run, SYM_JOB_NORM, SYM_ROLE_FINAL_NORM, -1, -1, err);
    if (s == SYM_OK && !run->tied)
        s = add_job(run, SYM_JOB_LM_HEAD, SYM_ROLE_LM_HEAD, -1, -1, err);
    if (s == SYM_OK)
        s = sym_plan_layout(&run->plan, run->opts->shard_size, err);
    if (s == SYM_OK)
        run->done = calloc(run->plan.n_tensors, sizeof *run->done);
    if (s == SYM_OK && run->done == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "output plan: out of memory");
    return s;
}

static void check_plan_memory(merge_run *run, sym_merge_plan *plan);

/* Lists every source the merge reads, the base model after the experts. */
static size_t list_models(const merge_run *run, sym_model **models)
{
    size_t n = 0;
    for (size_t i = 0; i < run->cfg->n_experts; i++)
        models[n++] = run->experts[i];
    if (run->base != NULL)
        models[n++] = run->base;
    return n;
}

/* Fills the memory and disk figures of plan as `merge --check` computes them. */
static void estimate_needs(merge_run *run, sym_merge_plan *plan)
{
    sym_model *models[SYM_MAX_SOURCES + 1];
    size_t n = list_models(run, models);
    memset(plan, 0, sizeof *plan);
    check_plan_memory(run, plan);
    sym_merge_estimate_needs(run->cfg, n, run->anchor, plan);
}

static sym_status check_memory(merge_run *run, sym_error *err)
{
    uint64_t limit = run->opts->memory_limit;
    if (limit == 0)
        return SYM_OK;
    char need_text[32], limit_text[32], part_text[32], tensor_text[32];
    for (size_t i = 0; i < run->plan.n_tensors; i++) {
        const sym_plan_tensor *t = &run->plan.tensors[i];
        uint64_t need = sym_job_memory(&run->sources, &run->jobs[i], t->shape[0] * t->shape[1]);
        if (need > limit)
            return sym_error_set(err, SYM_ERR_LIMIT,
                                 "tensor '%s' needs about %s of working memory, more than "
                                 "--memory-limit (%s); raise the limit", t->name,
                                 sym_format_size(need, need_text, sizeof need_text),
                                 sym_format_size(limit, limit_text, sizeof limit_text));
    }
    sym_merge_plan plan;
    estimate_needs(run, &plan);
    if (plan.memory_total <= limit)
        return SYM_OK;
    return sym_error_set(err, SYM_ERR_LIMIT,
                         "the merge needs about %s (%llu bytes) of working memory, %s for "
                         "calibration and %s for the largest tensor, more than --memory-limit "
                         "(%s); raise the limit to at least that or lower calibration_tokens",
                         sym_format_size(plan.memory_total, need_text, sizeof need_text),
                         (unsigned long long)plan.memory_total,
                         sym_format_size(plan.memory_calibration, part_text, sizeof part_text),
                         sym_format_size(plan.memory_tensor, tensor_text, sizeof tensor_text),
                         sym_format_size(limit, limit_text, sizeof limit_text));
}

/* Writes dir/name into out; output paths are checked against PATH_MAX up front, so a
 * truncated result only yields an error from the open that follows. */
static void join_path(char *out, size_t size, const char *dir, const char *name)
{
    if (snprintf(out, size, "%s/%s", dir, name) >= (int)size)
        out[size - 1] = '\0';
}

/* ---- fingerprint ---- */

static char *hex64(uint64_t v, char *buf)
{
    snprintf(buf, 17, "%016llx", (unsigned long long)v);
    return buf;
}

static sym_status hash_file(const char *path, uint64_t *hash, sym_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    XXH3_state_t *state = XXH3_createState();
    XXH3_64bits_reset(state);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        XXH3_64bits_update(state, buf, n);
    *hash = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    bool failed = ferror(f);
    fclose(f);
    return failed ? sym_error_set(err, SYM_ERR_IO, "%s: read failed", path) : SYM_OK;
}

static json_t *model_fingerprint(const sym_model *m)
{
    json_t *files = json_array();
    char hex[17];
    for (size_t i = 0; i < sym_model_shard_count(m); i++) {
        const sym_st_file *f = sym_model_shard(m, i);
        struct stat st;
        json_t *entry = json_object();
        json_object_set_new(entry, "path", json_string(f->path));
        json_object_set_new(entry, "size", json_integer((json_int_t)f->file_size));
        if (stat(f->path, &st) == 0)
            json_object_set_new(entry, "mtime_ns",
                                json_integer((json_int_t)st.st_mtim.tv_sec * 1000000000 +
                                             st.st_mtim.tv_nsec));
        uint64_t header_hash = XXH3_64bits(f->map, f->header.data_start);
        json_object_set_new(entry, "header_xxh3", json_string(hex64(header_hash, hex)));
        json_array_append_new(files, entry);
    }
    return files;
}

static sym_status build_fingerprint(merge_run *run, sym_error *err)
{
    const sym_merge_config *cfg = run->cfg;
    uint64_t config_hash = 0;
    sym_status s = hash_file(cfg->path, &config_hash, err);
    if (s != SYM_OK)
        return s;
    char hex[17];
    json_t *settings = json_object();
    json_object_set_new(settings, "dtype", json_string(sym_dtype_name(cfg->dtype)));
    json_object_set_new(settings, "seed", json_integer((json_int_t)cfg->seed));
    json_object_set_new(settings, "calibration_tokens", json_integer(cfg->calibration_tokens));
    json_object_set_new(settings, "router", json_pack("{s:i, s:I, s:f, s:I, s:f, s:i}",
                                                      "objective", (int)cfg->router.objective,
                                                      "steps", (json_int_t)cfg->router.steps,
                                                      "lr", cfg->router.learning_rate, "batch",
                                                      (json_int_t)cfg->router.batch_size,
                                                      "balance", cfg->router.balance_weight,
                                                      "domain_weights",
                                                      (int)cfg->router.domain_weights));
    json_object_set_new(settings, "cache_dtype", json_integer((json_int_t)cfg->cache_dtype));
    json_object_set_new(settings, "shard_size", json_integer((json_int_t)run->opts->shard_size));
    json_object_set_new(settings, "threads", json_integer(run->opts->threads));
    const char *simd = sym_kernels_variant_name();
    json_object_set_new(settings, "simd", json_string(simd != NULL ? simd : "unknown"));
    json_t *sources = json_object();
    for (size_t i = 0; i < cfg->n_experts; i++)
        json_object_set_new(sources, cfg->experts[i].source_model,
                            model_fingerprint(run->experts[i]));
    if (run->base != NULL)
        json_object_set_new(sources, cfg->base_model, model_fingerprint(run->base));
    json_t *fp = json_object();
    json_object_set_new(fp, "format", json_string("symphony-merge-1"));
    json_object_set_new(fp, "config", json_string(cfg->path));
    json_object_set_new(fp, "config_xxh3", json_string(hex64(config_hash, hex)));
    json_object_set_new(fp, "settings", settings);
    json_object_set_new(fp, "sources", sources);
    run->fingerprint = fp;
    return SYM_OK;
}

/* Names the first difference between a stored fingerprint and this run's. */
static const char *fingerprint_difference(json_t *stored, json_t *now)
{
    if (!json_equal(json_object_get(stored, "config_xxh3"), json_object_get(now, "config_xxh3")))
        return "the config file changed";
    json_t *a = json_object_get(stored, "settings"), *b = json_object_get(now, "settings");
    if (!json_equal(json_object_get(a, "threads"), json_object_get(b, "threads")))
        return "the thread count (--threads) changed";
    if (!json_equal(json_object_get(a, "simd"), json_object_get(b, "simd")))
        return "the SIMD variant changed";
    if (!json_equal(a, b))
        return "a command-line setting (--dtype, --seed, --shard-size, --calibration-tokens) "
               "changed";
    if (!json_equal(json_object_get(stored, "sources"), json_object_get(now, "sources")))
        return "a source model changed (size, modification time or header)";
    if (!json_equal(stored, now))
        return "the merge settings changed";
    return NULL;
}

static sym_status load_state(const char *dir, json_t **state)
{
    char path[PATH_MAX];
    join_path(path, sizeof path, dir, SYM_STATE_NAME);
    json_error_t jerr;
    *state = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    return *state != NULL ? SYM_OK : SYM_ERR_NOT_FOUND;
}

/* ---- output directory ---- */


static bool is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Deletes a directory of plain files; refuses one with subdirectories. */
static sym_status remove_flat_dir(const char *dir, sym_error *err)
{
    char path[PATH_MAX];
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    DIR *d = fdopendir(dfd);
    if (d == NULL) {
        close(dfd);
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
    }
    struct dirent *entry;
    sym_status s = SYM_OK;
    while ((entry = readdir(d)) != NULL && s == SYM_OK) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        join_path(path, sizeof path, dir, entry->d_name);
        if (is_directory(path) && strcmp(entry->d_name, SYM_WORK_DIR_NAME) == 0)
            s = remove_flat_dir(path, err);
        else if (is_directory(path))
            s = sym_error_set(err, SYM_ERR_INVALID,
                              "%s contains the directory '%s'; not replacing it, remove it "
                              "yourself", dir, entry->d_name);
        else if (unlinkat(dfd, entry->d_name, 0) != 0)
            s = sym_error_set(err, SYM_ERR_IO, "%s: cannot delete: %s", path,
                              strerror(errno));
    }
    closedir(d);
    if (s == SYM_OK && rmdir(dir) != 0)
        s = sym_error_set(err, SYM_ERR_IO, "%s: cannot delete: %s", dir, strerror(errno));
    return s;
}

static sym_status fsync_path(const char *path, sym_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    return SYM_OK;
}

static void parent_dir(const char *path, char *out, size_t size)
{
    snprintf(out, size, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == NULL)
        snprintf(out, size, ".");
    else if (slash == out)
        slash[1] = '\0';
    else
        *slash = '\0';
}

static sym_status take_lock(merge_run *run, sym_error *err)
{
    snprintf(run->lock_path, sizeof run->lock_path, "%s.lock", run->opts->output);
    run->lock_fd = open(run->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (run->lock_fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot create the lock file: %s",
                             run->lock_path, strerror(errno));
    if (flock(run->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return sym_error_set(err, errno == EWOULDBLOCK ? SYM_ERR_BUSY : SYM_ERR_IO,
                             "%s: another merge is writing %s (lock held); wait for it to "
                             "finish", run->lock_path, run->opts->output);

    /* A merge that finishes deletes the lock file, so a lock taken on the file it just
     * deleted protects nothing: the path must still name the locked file. */
    struct stat locked, current;
    if (fstat(run->lock_fd, &locked) != 0 || stat(run->lock_path, &current) != 0 ||
        locked.st_ino != current.st_ino || locked.st_dev != current.st_dev)
        return sym_error_set(err, SYM_ERR_BUSY,
                             "%s: another merge of %s finished while this one started; run "
                             "the command again", run->lock_path, run->opts->output);
    return SYM_OK;
}

static void release_lock(merge_run *run, bool remove_file)
{
    if (run->lock_fd < 0)
        return;
    if (remove_file)
        unlink(run->lock_path);
    close(run->lock_fd);
    run->lock_fd = -1;
}

/* Creates OUTPUT.partial, or checks that the one there belongs to this merge. */
static sym_status prepare_partial(merge_run *run, sym_error *err)
{
    snprintf(run->partial, sizeof run->partial, "%s.partial", run->opts->output);
    if (is_directory(run->partial)) {
        json_t *stored = NULL;
        if (run->opts->restart) {
            sym_status s = remove_flat_dir(run->partial, err);
            if (s != SYM_OK)
                return s;
        } else if (load_state(run->partial, &stored) == SYM_OK) {
            const char *why = fingerprint_difference(stored, run->fingerprint);
            json_decref(stored);
            if (why != NULL)
                return sym_error_set(err, SYM_ERR_INVALID,
                                     "%s: cannot resume the interrupted merge because %s; "
                                     "rerun with --restart to start over", run->partial, why);
            return SYM_OK;
        }
    }
    if (!is_directory(run->partial) && mkdir(run->partial, 0755) != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot create: %s", run->partial,
                             strerror(errno));
    sym_status s = sym_write_json_file(run->fingerprint, run->partial, SYM_STATE_NAME, err);
    if (s == SYM_OK)
        s = fsync_path(run->partial, err);
    return s;
}

/* Returns the bytes of the plain files in dir, 0 when it cannot be read. */
static uint64_t directory_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return 0;
    uint64_t sum = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        char path[PATH_MAX];
        struct stat st;
        join_path(path, sizeof path, dir, entry->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    closedir(d);
    return sum;
}

/* Compares the free space of the output's parent with what the merge still writes: the
 * shard bytes not yet journaled and the work directory's caches (the upper bound that
 * `merge --check` prints, less what an interrupted run already wrote). */
static sym_status check_disk_space(merge_run *run, sym_error *err)
{
    char parent[PATH_MAX];
    parent_dir(run->opts->output, parent, sizeof parent);
    struct statvfs vfs;
    if (statvfs(parent, &vfs) != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot read free space: %s", parent,
                             strerror(errno));
    sym_merge_plan plan;
    estimate_needs(run, &plan);
    uint64_t shards = plan.output_bytes;
    for (size_t i = 0; run->done != NULL && i < run->plan.n_tensors; i++)
        if (run->done[i])
            shards -= run->plan.tensors[i].nbytes;
    char work[PATH_MAX];
    join_path(work, sizeof work, run->partial, SYM_WORK_DIR_NAME);
    uint64_t cached = directory_bytes(work);
    uint64_t caches = plan.cache_bytes > cached ? plan.cache_bytes - cached : 0;
    uint64_t need = shards + caches + (1u << 20);
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (avail >= need)
        return SYM_OK;
    char avail_text[32], need_text[32], shards_text[32], caches_text[32];
    return sym_error_set(err, SYM_ERR_LIMIT,
                         "%s: %s free, the merge needs about %s more (%s of output shards, "
                         "%s of calibration caches in %s); free space, choose another output "
                         "directory, or lower calibration_tokens", parent,
                         sym_format_size(avail, avail_text, sizeof avail_text),
                         sym_format_size(need, need_text, sizeof need_text),
                         sym_format_size(shards, shards_text, sizeof shards_text),
                         sym_format_size(caches, caches_text, sizeof caches_text), work);
}

/* Bytes per pwrite of tensor data. Each chunk's writeback starts as soon as it is
 * written, so the disk works while later chunks are copied in, instead of during one long
 * fdatasync at the end of the tensor. */
#define WRITE_CHUNK (8u << 20)

static sym_status pwrite_all(int fd, const uint8_t *p, size_t size, uint64_t offset,
                             const char *name, sym_error *err)
{
    size_t done = 0;
    while (done < size) {
        size_t want = size - done < WRITE_CHUNK ? size - done : WRITE_CHUNK;
        ssize_t n = pwrite(fd, p + done, want, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: write failed: %s", name,
                                 strerror(errno));
        /* Only a hint: fdatasync before the journal record is what makes it durable. */
        (void)sync_file_range(fd, (off_t)(offset + done), n, SYNC_FILE_RANGE_WRITE);
        done += (size_t)n;
    }
    return SYM_OK;
}

/* Opens every shard, writes its header and sets its final size. Rewriting a header on
 * resume writes the same bytes again. */
static sym_status open_shards(merge_run *run, sym_error *err)
{
    run->shard_fds = malloc((run->plan.n_shards + 1) * sizeof *run->shard_fds);
    run->shard_found_size = calloc(run->plan.n_shards + 1, sizeof *run->shard_found_size);
    if (run->shard_fds == NULL || run->shard_found_size == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory");
    for (uint32_t s = 0; s < run->plan.n_shards; s++)
        run->shard_fds[s] = -1;
    for (uint32_t s = 0; s < run->plan.n_shards; s++) {
        char name[64], path[PATH_MAX];
        sym_shard_name(s, run->plan.n_shards, name, sizeof name);
        join_path(path, sizeof path, run->partial, name);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: cannot create: %s", path,
                                 strerror(errno));
        run->shard_fds[s] = fd;
        /* The resume check needs the size an earlier run left, before ftruncate hides a
         * truncation behind zeros. */
        struct stat found;
        if (fstat(fd, &found) != 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: stat failed: %s", path,
                                 strerror(errno));
        run->shard_found_size[s] = (uint64_t)found.st_size;
        if (ftruncate(fd, (off_t)run->plan.shard_file_size[s]) != 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: cannot set the size to %llu: %s", path,
                                 (unsigned long long)run->plan.shard_file_size[s],
                                 strerror(errno));
        sym_status st = pwrite_all(fd, (const uint8_t *)run->plan.shard_header[s],
                                   run->plan.shard_header_len[s], 0, path, err);
        if (st == SYM_OK && fdatasync(fd) != 0)
            st = sym_error_set(err, SYM_ERR_IO, "%s: fdatasync failed: %s", path,
                               strerror(errno));
        if (st != SYM_OK)
            return st;
    }
    return SYM_OK;
}

static size_t find_tensor(const sym_out_plan *plan, const char *name)
{
    for (size_t i = 0; i < plan->n_tensors; i++)
        if (strcmp(plan->tensors[i].name, name) == 0)
            return i;
    return plan->n_tensors;
}

static void note_failed_check(sym_merge_result *result, const char *name)
{
    if (result->tensors_failed_check++ == 0)
        snprintf(result->first_failed_check, sizeof result->first_failed_check, "%s", name);
}

/* Marks as done every journaled tensor that passes the resume check (opts->resume_check);
 * the others are written again. */
static sym_status resume_from_journal(merge_run *run, sym_merge_result *result,
                                      sym_error *err)
{
    char path[PATH_MAX];
    join_path(path, sizeof path, run->partial, SYM_JOURNAL_NAME);
    sym_journal_record *records;
    size_t n_records;
    sym_status s = sym_journal_open(&run->journal, path, &records, &n_records, err);
    for (size_t r = 0; r < n_records && s == SYM_OK; r++) {
        size_t i = find_tensor(&run->plan, records[r].name);
        if (i == run->plan.n_tensors || run->done[i])
            continue;
        sym_plan_tensor *t = &run->plan.tensors[i];
        if (t->offset != records[r].offset || t->nbytes != records[r].length)
            continue;
        bool intact;
        s = sym_resume_check_tensor(run->shard_fds[t->shard], run->shard_found_size[t->shard],
                                    &records[r], run->opts->resume_check, &intact, err);
        if (s == SYM_OK && !intact)
            note_failed_check(result, t->name);
        if (s == SYM_OK && intact) {
            run->done[i] = true;
            t->xxh3 = records[r].xxh3;
            result->tensors_resumed++;
        }
    }
    sym_journal_records_free(records, n_records);
    return s;
}

/* ---- writing tensors ---- */

typedef struct tensor_output {
    const sym_plan_tensor *tensor;
    int fd;
    uint64_t position;
    uint64_t dropped; /* bytes from the tensor's start already written back and dropped */
    XXH3_state_t *hash;
    sym_sample *sample;
    uint8_t *bytes;
    size_t capacity;
} tensor_output;

/* Waits for the writeback of all but the last WRITE_CHUNK bytes written so far and drops
 * them from the page cache, so a tensor written in many blocks (the embeddings) keeps
 * about one chunk cached instead of all of it. fdatasync still makes them durable. */
static void drop_written(tensor_output *out)
{
    if (out->position < out->dropped + 2 * (uint64_t)WRITE_CHUNK)
        return;
    uint64_t end = out->position - WRITE_CHUNK;
    off_t begin = (off_t)(out->tensor->offset + out->dropped);
    off_t length = (off_t)(end - out->dropped);
    unsigned flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                     SYNC_FILE_RANGE_WAIT_AFTER;
    if (sync_file_range(out->fd, begin, length, flags) == 0)
        (void)posix_fadvise(out->fd, begin, length, POSIX_FADV_DONTNEED);
    out->dropped = end;
}

static sym_status output_check(const tensor_output *out, const float *values, size_t count,
                               uint64_t overflow, sym_error *err)
{
    const sym_plan_tensor *t = out->tensor;
    size_t bad = sym_find_nonfinite(values, count);
    if (bad < count)
        return sym_error_set(err, SYM_ERR_NONFINITE,
                             "tensor '%s': element %llu is %g after fusion; check the sources "
                             "for non-finite weights", t->name,
                             (unsigned long long)(out->position / (sym_dtype_bits(t->dtype) / 8)
                                                  + bad), (double)values[bad]);
    if (overflow > 0)
        return sym_error_set(err, SYM_ERR_NONFINITE,
                             "tensor '%s': %llu values exceed the float16 range (65504); use "
                             "dtype bfloat16 or float32", t->name, (unsigned long long)overflow);
    return SYM_OK;
}

/* The sink of sym_produce_tensor: checks, converts, hashes and writes each block. */
static sym_status output_write(void *context, const float *values, size_t count,
                               sym_error *err)
{
    tensor_output *out = context;
    const sym_plan_tensor *t = out->tensor;
    size_t size = count * (sym_dtype_bits(t->dtype) / 8);
    if (out->position + size > t->nbytes)
        return sym_error_set(err, SYM_ERR_INVALID, "tensor '%s': more data than its %llu bytes",
                             t->name, (unsigned long long)t->nbytes);
    if (size > out->capacity) {
        free(out->bytes);
        out->bytes = malloc(size);
        out->capacity = out->bytes != NULL ? size : 0;
        if (out->bytes == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM, "tensor '%s': out of memory", t->name);
    }
    uint64_t overflow = 0;
    sym_status s = sym_convert_f32(values, count, t->dtype, out->bytes, &overflow, err);
    if (s == SYM_OK)
        s = output_check(out, values, count, overflow, err);
    if (s != SYM_OK)
        return s;
    XXH3_64bits_update(out->hash, out->bytes, size);
    sym_sample_feed(out->sample, out->position, out->bytes, size);

    /* Two writes, so a test kill point can stop a tensor half written. */
    uint64_t offset = t->offset + out->position;
    char label[512];
    snprintf(label, sizeof label, "tensor '%s'", t->name);
    s = pwrite_all(out->fd, out->bytes, size / 2, offset, label, err);
    sym_kill_point();
    if (s == SYM_OK)
        s = pwrite_all(out->fd, out->bytes + size / 2, size - size / 2, offset + size / 2,
                       label, err);
    out->position += size;
    if (s == SYM_OK)
        drop_written(out);
    return s;
}

static sym_status write_tensor(merge_run *run, size_t i, sym_error *err)
{
    sym_plan_tensor *t = &run->plan.tensors[i];
    tensor_output out = {.tensor = t, .fd = run->shard_fds[t->shard]};
    out.hash = XXH3_createState();
    out.sample = malloc(sizeof *out.sample);
    if (out.hash == NULL || out.sample == NULL) {
        XXH3_freeState(out.hash);
        free(out.sample);
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory");
    }
    XXH3_64bits_reset(out.hash);
    sym_sample_init(out.sample, t->name, t->nbytes);
    sym_tensor_sink sink = {output_write, &out};
    sym_kill_point();
    sym_status s = sym_produce_tensor(&run->sources, &run->jobs[i], &sink, err);
    if (s == SYM_OK && out.position != t->nbytes)
        s = sym_error_set(err, SYM_ERR_INVALID, "tensor '%s': %llu bytes produced, %llu planned",
                          t->name, (unsigned long long)out.position,
                          (unsigned long long)t->nbytes);
    t->xxh3 = XXH3_64bits_digest(out.hash);
    uint64_t sample_xxh3 = sym_sample_digest(out.sample);
    XXH3_freeState(out.hash);
    free(out.sample);
    free(out.bytes);
    if (s == SYM_OK && fdatasync(out.fd) != 0)
        s = sym_error_set(err, SYM_ERR_IO, "tensor '%s': fdatasync failed: %s", t->name,
                          strerror(errno));
    /* The written pages are clean now and not read again by this run: dropping them keeps
     * the page cache (and a memory cgroup's charge) from filling with output. */
    if (s == SYM_OK)
        (void)posix_fadvise(out.fd, (off_t)t->offset, (off_t)t->nbytes, POSIX_FADV_DONTNEED);
    sym_kill_point();
    if (s == SYM_OK)
        s = sym_journal_append(&run->journal, t->name, t->offset, t->nbytes, t->xxh3,
                               sample_xxh3, err);
    if (s == SYM_OK)
        run->done[i] = true;
    return s;
}

static bool layer_written(const merge_run *run, int layer)
{
    for (size_t i = 0; i < run->plan.n_tensors; i++)
        if (run->jobs[i].layer == layer && !run->done[i])
            return false;
    return true;
}

static void report_progress(merge_run *run, const char *stage, int layer, const char *tensor)
{
    run->progress.stage = stage;
    run->progress.layer = layer;
    run->progress.tensor = tensor;
    if (run->opts->progress != NULL)
        run->opts->progress(run->opts->progress_context, &run->progress);
}

/* Runs calibration for a tensor's layer when it is the first tensor of that layer. */
static sym_status prepare_layer(merge_run *run, size_t i, int *prepared, sym_error *err)
{
    int layer = run->jobs[i].layer;
    if (run->pipeline == NULL || layer < 0 || layer == *prepared)
        return SYM_OK;
    *prepared = layer;
    report_progress(run, "calibrate", layer, NULL);
    sym_status s = sym_pipeline_layer(run->pipeline, layer, layer_written(run, layer), err);
    run->progress.tokens_done += run->progress.tokens_total / (uint64_t)run->sources.n_layers;
    report_progress(run, "calibrate", layer, NULL);
    return s;
}

static void start_progress(merge_run *run, size_t resumed)
{
    const sym_merge_config *cfg = run->cfg;
    sym_merge_progress *p = &run->progress;
    p->n_layers = run->sources.n_layers;
    p->tensors_done = resumed;
    p->tensors_total = run->plan.n_tensors;
    for (size_t i = 0; i < run->plan.n_tensors; i++)
        p->bytes_total += run->done[i] ? 0 : run->plan.tensors[i].nbytes;
    /* Every source, and the merged model, passes every calibration token through every
     * layer. */
    size_t models = cfg->n_experts + (run->base != NULL ? 1 : 0) + 1;
    if (run->pipeline != NULL)
        p->tokens_total = sym_merge_calibration_tokens(cfg) * models * (uint64_t)p->n_layers;
}

static sym_status write_tensors(merge_run *run, size_t resumed, sym_error *err)
{
    size_t done = resumed;
    int prepared = -1;
    start_progress(run, resumed);
    for (size_t i = 0; i < run->plan.n_tensors; i++) {
        sym_status ps = prepare_layer(run, i, &prepared, err);
        if (ps != SYM_OK)
            return ps;
        if (run->done[i])
            continue;
        size_t next = i + 1;
        while (next < run->plan.n_tensors && run->done[next])
            next++;
        if (next < run->plan.n_tensors)
            sym_job_prefetch(&run->sources, &run->jobs[next]);
        sym_status s = write_tensor(run, i, err);
        if (s != SYM_OK)
            return s;
        done++;
        run->progress.tensors_done = done;
        run->progress.bytes_done += run->plan.tensors[i].nbytes;
        report_progress(run, "write", run->jobs[i].layer, run->plan.tensors[i].name);
        if (run->opts->interrupt != NULL && *run->opts->interrupt && done < run->plan.n_tensors)
            return sym_error_set(err, SYM_ERR_INTERRUPTED,
                                 "interrupted after %zu of %zu tensors; the completed ones "
                                 "are journaled in %s", done, run->plan.n_tensors,
                                 run->partial);
    }
    return SYM_OK;
}

/* ---- finishing ---- */

/* Rejects a source that was replaced, truncated or rewritten while the merge ran: its
 * mapping may still show the old bytes, but the published output would then match no
 * file on disk. */
static sym_status check_sources_unchanged(merge_run *run, sym_error *err)
{
    json_t *stored = json_object_get(run->fingerprint, "sources");
    const char *path;
    json_t *files;
    json_object_foreach(stored, path, files) {
        const sym_model *m = NULL;
        for (size_t i = 0; i < run->cfg->n_experts && m == NULL; i++)
            if (strcmp(path, run->cfg->experts[i].source_model) == 0)
                m = run->experts[i];
        if (m == NULL)
            m = run->base;
        if (m == NULL)
            continue;
        json_t *now = model_fingerprint(m);
        bool same = json_equal(now, files);
        json_decref(now);
        if (!same)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "%s: the source model changed while the merge was running "
                                 "(size, modification time or header); nothing was published. "
                                 "Restore it and rerun the command, or rerun with --restart",
                                 path);
    }
    return SYM_OK;
}

static sym_status write_model_card(merge_run *run, sym_error *err)
{
    sym_card_facts facts = {
        .cfg = run->cfg,
        .experts = run->experts,
        .base = run->base,
        .anchor = run->anchor,
        .vocab_donor = run->vocab_donor,
        .tied = run->tied,
        .calibrated = run->pipeline != NULL,
        .vocab_rows = run->sources.vocab_out,
        .plan = &run->plan,
    };
    return sym_merge_write_card(&facts, run->partial, err);
}

static sym_status copy_side_files(merge_run *run, sym_error *err)
{
    static const char *const tokenizer_files[] = {"tokenizer.json", "tokenizer_config.json",
                                                  "special_tokens_map.json", "tokenizer.model",
                                                  "added_tokens.json", NULL};
    bool copied;
    sym_status s = SYM_OK;
    for (size_t i = 0; tokenizer_files[i] != NULL && s == SYM_OK; i++)
        s = sym_copy_file_if_present(sym_model_dir(run->vocab_donor), run->partial,
                                     tokenizer_files[i], &copied, err);
    if (s == SYM_OK)
        s = sym_copy_file_if_present(sym_model_dir(run->anchor), run->partial,
                                     "generation_config.json", &copied, err);
    return s;
}

static sym_status write_metadata(merge_run *run, sym_error *err)
{
    sym_moe_config_values values = {
        .num_local_experts = (int64_t)run->cfg->n_experts,
        .num_experts_per_tok = run->cfg->experts_per_token,
        .vocab_size = (int64_t)run->sources.vocab_out,
        .tie_word_embeddings = run->tied,
        .dtype = run->cfg->dtype,
    };
    sym_status s = sym_write_index(&run->plan, run->partial, err);
    if (s == SYM_OK)
        s = sym_write_manifest(&run->plan, run->partial, err);
    if (s == SYM_OK)
        s = sym_write_moe_config(run->anchor, &values, run->partial, err);
    if (s == SYM_OK)
        s = copy_side_files(run, err);
    if (s == SYM_OK && run->pipeline != NULL)
        s = sym_pipeline_report(run->pipeline, run->partial, err);
    if (s == SYM_OK)
        s = write_model_card(run, err);
    if (s == SYM_OK)
        s = fsync_path(run->partial, err);
    return s;
}

static void report_step(void *context, int layer, const char *step)
{
    merge_run *run = context;
    run->progress.step = step;
    report_progress(run, "calibrate", layer, NULL);
    run->progress.step = NULL;
}

/* Starts calibration when the config requests it; its files go to OUTPUT.partial's work
 * directory, which stays in the output for retrain-router. */
static sym_status start_pipeline(merge_run *run, sym_error *err)
{
    if (run->cfg->calibration_tokens <= 0)
        return SYM_OK;
    char work[PATH_MAX];
    join_path(work, sizeof work, run->partial, SYM_WORK_DIR_NAME);
    if (mkdir(work, 0755) != 0 && errno != EEXIST)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot create: %s", work, strerror(errno));
    sym_pipeline_setup setup = {.cfg = run->cfg, .opts = run->opts, .sources = &run->sources,
                                .base = run->base, .vocab_donor = run->vocab_donor,
                                .work_dir = work, .step = report_step, .step_context = run};
    return sym_pipeline_create(&run->pipeline, &setup, err);
}

/* Renames OUTPUT.partial to OUTPUT (an old OUTPUT, which --force allowed, is moved to
 * OUTPUT.symphony-old first and deleted last), then deletes the journal. */
static sym_status publish(merge_run *run, sym_error *err)
{
    const char *output = run->opts->output;
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s.symphony-old", output);
    if (is_directory(output)) {
        sym_status s = is_directory(old) ? remove_flat_dir(old, err) : SYM_OK;
        if (s != SYM_OK)
            return s;
        if (rename(output, old) != 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: cannot move aside to %s: %s", output,
                                 old, strerror(errno));
    }
    sym_kill_point();
    if (rename(run->partial, output) != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot rename to %s: %s", run->partial,
                             output, strerror(errno));
    char parent[PATH_MAX], journal[PATH_MAX];
    parent_dir(output, parent, sizeof parent);
    sym_status s = fsync_path(parent, err);
    sym_kill_point();
    join_path(journal, sizeof journal, output, SYM_JOURNAL_NAME);
    if (s == SYM_OK && unlink(journal) != 0 && errno != ENOENT)
        s = sym_error_set(err, SYM_ERR_IO, "%s: cannot delete: %s", journal, strerror(errno));
    /* Also a leftover of a run killed between the two renames. */
    if (s == SYM_OK && is_directory(old))
        s = remove_flat_dir(old, err);
    return s;
}

/* An existing OUTPUT: the same merge already finished, or a directory to keep. */
static sym_status check_existing_output(merge_run *run, bool *complete, sym_error *err)
{
    const char *output = run->opts->output;
    *complete = false;
    if (!is_directory(output)) {
        struct stat st;
        if (lstat(output, &st) == 0)
            return sym_error_set(err, SYM_ERR_INVALID, "%s exists and is not a directory",
                                 output);
        return SYM_OK;
    }
    json_t *stored = NULL;
    if (load_state(output, &stored) == SYM_OK) {
        *complete = fingerprint_difference(stored, run->fingerprint) == NULL;
        json_decref(stored);
    }
    if (*complete) {
        char journal[PATH_MAX];
        join_path(journal, sizeof journal, output, SYM_JOURNAL_NAME);
        unlink(journal);
        return SYM_OK;
    }
    if (!run->opts->force)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s already exists and contains a different merge or other files; "
                             "rerun with --force to replace it", output);
    return SYM_OK;
}

static void close_run(merge_run *run)
{
    sym_pipeline_free(run->pipeline);
    for (uint32_t s = 0; run->shard_fds != NULL && s < run->plan.n_shards; s++)
        if (run->shard_fds[s] >= 0)
            close(run->shard_fds[s]);
    free(run->shard_fds);
    free(run->shard_found_size);
    sym_journal_close(&run->journal);
    free(run->jobs);
    free(run->done);
    sym_plan_free(&run->plan);
    json_decref(run->fingerprint);
    for (size_t i = 0; i < run->cfg->n_experts; i++)
        sym_model_close(run->experts[i]);
    sym_model_close(run->base);
}

/* Checks the settings that need the opened sources: sliding windows and the weight sums
 * at every layer of the anchor's depth. */
static sym_status check_source_settings(merge_run *run, sym_error *err)
{
    sym_status s = SYM_OK;
    for (size_t i = 0; i < run->cfg->n_experts && s == SYM_OK; i++)
        s = sym_merge_check_sliding_window(run->experts[i], err);
    if (s == SYM_OK && run->base != NULL)
        s = sym_merge_check_sliding_window(run->base, err);
    if (s == SYM_OK)
        s = sym_merge_config_check_weights(
            run->cfg, (int)sym_model_get_config(run->anchor)->num_hidden_layers, err);
    return s;
}

static sym_status prepare(merge_run *run, sym_error *err)
{
    sym_status s = sym_merge_check_output(run->cfg, run->opts->output, err);
    if (s == SYM_OK)
        s = check_supported(run->cfg, err);
    if (s == SYM_OK)
        s = open_models(run, err);
    if (s == SYM_OK)
        s = check_compatible(run, NULL, err);
    if (s == SYM_OK)
        s = check_source_settings(run, err);
    if (s == SYM_OK) {
        choose_vocabulary(run);
        s = build_plan(run, err);
    }
    if (s == SYM_OK)
        s = check_memory(run, err);
    if (s == SYM_OK)
        s = build_fingerprint(run, err);
    return s;
}

/* Checks the free space of a merge that starts from nothing, before the lock file and
 * OUTPUT.partial are created. A resumed merge is checked once its journal shows which
 * tensors remain; an existing OUTPUT is left to check_existing_output. */
static sym_status check_fresh_disk_space(merge_run *run, sym_error *err)
{
    snprintf(run->partial, sizeof run->partial, "%s.partial", run->opts->output);
    if (is_directory(run->partial) || is_directory(run->opts->output))
        return SYM_OK;
    return check_disk_space(run, err);
}

static sym_status run_locked(merge_run *run, sym_merge_result *result, sym_error *err)
{
    bool complete;
    sym_status s = check_existing_output(run, &complete, err);
    if (s != SYM_OK || complete) {
        result->already_complete = complete;
        return s;
    }
    s = prepare_partial(run, err);
    if (s == SYM_OK)
        s = open_shards(run, err);
    if (s == SYM_OK)
        s = resume_from_journal(run, result, err);
    if (s == SYM_OK)
        s = check_disk_space(run, err);
    if (s == SYM_OK)
        s = start_pipeline(run, err);
    if (s == SYM_OK)
        s = write_tensors(run, result->tensors_resumed, err);
    if (s == SYM_OK)
        s = check_sources_unchanged(run, err);
    if (s == SYM_OK)
        s = write_metadata(run, err);
    if (s == SYM_OK)
        s = publish(run, err);
    return s;
}

sym_status sym_merge_run(const sym_merge_config *cfg, const sym_merge_options *opts,
                         sym_merge_result *result, sym_error *err)
{
    memset(result, 0, sizeof *result);
    merge_run run = {.cfg = cfg, .opts = opts, .lock_fd = -1, .journal = {.fd = -1}};
    sym_status s = prepare(&run, err);
    if (s == SYM_OK)
        s = check_fresh_disk_space(&run, err);
    if (s == SYM_OK)
        s = take_lock(&run, err);
    if (s == SYM_OK)
        s = run_locked(&run, result, err);
    result->tensors_total = run.plan.n_tensors;
    result->bytes_total = run.plan.total_size;
    result->bytes_written = run.progress.bytes_done;
    for (size_t i = 0; i < cfg->n_experts && run.experts[i] != NULL; i++)
        result->bytes_read += sym_merge_source_bytes(run.experts[i]);
    if (run.base != NULL)
        result->bytes_read += sym_merge_source_bytes(run.base);
    result->shards = run.plan.n_shards;
    release_lock(&run, s == SYM_OK);
    close_run(&run);
    return s;
}

/* ---- merge --check ---- */

/* Opens each source on its own, so that every one that fails is listed. */
static bool check_sources_open(const sym_merge_config *cfg, sym_merge_plan *plan)
{
    bool ok = true;
    for (size_t i = 0; i <= cfg->n_experts; i++) {
        const char *dir = i < cfg->n_experts ? cfg->experts[i].source_model : cfg->base_model;
        if (dir == NULL)
            continue;
        sym_model *m;
        sym_error e;
        if (sym_model_open(&m, dir, &e) != SYM_OK) {
            sym_merge_plan_add_problem(plan, "%s", e.message);
            ok = false;
        }
        sym_model_close(m);
    }
    return ok;
}

static void check_plan_settings(merge_run *run, sym_merge_plan *plan)
{
    sym_error e;
    for (size_t i = 0; i <= run->cfg->n_experts; i++) {
        const sym_model *m = i < run->cfg->n_experts ? run->experts[i] : run->base;
        if (m != NULL && sym_merge_check_sliding_window(m, &e) != SYM_OK)
            sym_merge_plan_add_problem(plan, "%s", e.message);
    }
    int layers = (int)sym_model_get_config(run->anchor)->num_hidden_layers;
    if (sym_merge_config_check_weights(run->cfg, layers, &e) != SYM_OK)
        sym_merge_plan_add_problem(plan, "%s", e.message);
}

static void check_plan_memory(merge_run *run, sym_merge_plan *plan)
{
    for (size_t i = 0; i < run->plan.n_tensors; i++) {
        const sym_plan_tensor *t = &run->plan.tensors[i];
        uint64_t need = sym_job_memory(&run->sources, &run->jobs[i], t->shape[0] * t->shape[1]);
        plan->memory_tensor = need > plan->memory_tensor ? need : plan->memory_tensor;
    }
    plan->n_tensors = run->plan.n_tensors;
    plan->n_shards = run->plan.n_shards;
    plan->output_bytes = 0;
    for (uint32_t s = 0; s < run->plan.n_shards; s++)
        plan->output_bytes += run->plan.shard_file_size[s];
}

/* The output directory as the merge will find it: absent, the same finished merge, or a
 * directory that only --force replaces; and the free space of its parent. */
static void check_plan_output(merge_run *run, sym_merge_plan *plan)
{
    const char *output = run->opts->output;
    char need[32], free_text[32];
    struct stat st;
    json_t *stored = NULL;
    bool same = false;
    if (lstat(output, &st) == 0 && !S_ISDIR(st.st_mode) && !is_directory(output))
        sym_merge_plan_add_problem(plan, "%s exists and is not a directory", output);
    if (is_directory(output) && load_state(output, &stored) == SYM_OK) {
        same = fingerprint_difference(stored, run->fingerprint) == NULL;
        json_decref(stored);
    }
    if (is_directory(output) && !same && !run->opts->force)
        sym_merge_plan_add_problem(plan, "%s already exists and contains a different merge or "
                                   "other files; rerun with --force to replace it", output);
    plan->disk_free = sym_merge_free_space(output, plan->disk_path, sizeof plan->disk_path);
    if (plan->disk_free == UINT64_MAX)
        sym_merge_plan_add_problem(plan, "%s: cannot read free space: %s", plan->disk_path,
                                   strerror(errno));
    else if (plan->disk_free < plan->disk_needed)
        sym_merge_plan_add_problem(plan, "%s: %s free, the merge needs about %s for the output "
                                   "and its caches; free space or choose another output "
                                   "directory", plan->disk_path,
                                   sym_format_size(plan->disk_free, free_text, sizeof free_text),
                                   sym_format_size(plan->disk_needed, need, sizeof need));
}

static void check_plan_limits(merge_run *run, sym_merge_plan *plan)
{
    char need[32], limit[32];
    if (plan->memory_limit > 0 && plan->memory_total > plan->memory_limit)
        sym_merge_plan_add_problem(plan, "the merge needs about %s of working memory, more "
                                   "than --memory-limit (%s); raise the limit or lower "
                                   "calibration_tokens",
                                   sym_format_size(plan->memory_total, need, sizeof need),
                                   sym_format_size(plan->memory_limit, limit, sizeof limit));
    if (run->opts->output != NULL)
        check_plan_output(run, plan);
}

/* The part of the check that needs every source open and compatible. */
static sym_status check_plan_models(merge_run *run, sym_merge_plan *plan, sym_error *err)
{
    sym_error e;
    if (open_models(run, &e) != SYM_OK) {
        sym_merge_plan_add_problem(plan, "%s", e.message);
        return SYM_OK;
    }
    size_t before = plan->n_problems;
    sym_status s = check_compatible(run, plan, err);
    if (s != SYM_OK || plan->n_problems > before)
        return s;
    check_plan_settings(run, plan);
    choose_vocabulary(run);
    s = build_plan(run, err);
    if (s == SYM_OK)
        s = build_fingerprint(run, err);
    if (s != SYM_OK)
        return s;
    check_plan_memory(run, plan);
    sym_model *models[SYM_MAX_SOURCES + 1];
    size_t n = list_models(run, models);
    plan->n_sources = n;
    sym_merge_estimate(run->cfg, run->opts, models, n, run->anchor, plan);
    check_plan_limits(run, plan);
    return SYM_OK;
}

sym_status sym_merge_check(const sym_merge_config *cfg, const sym_merge_options *opts,
                           sym_merge_plan *plan, sym_error *err)
{
    memset(plan, 0, sizeof *plan);
    plan->disk_free = UINT64_MAX;
    plan->memory_limit = opts->memory_limit;
    merge_run run = {.cfg = cfg, .opts = opts, .lock_fd = -1, .journal = {.fd = -1}};
    sym_error e;
    if (check_supported(cfg, &e) != SYM_OK)
        sym_merge_plan_add_problem(plan, "%s", e.message);
    if (opts->output != NULL && sym_merge_check_output(cfg, opts->output, &e) != SYM_OK)
        sym_merge_plan_add_problem(plan, "%s", e.message);
    sym_status s = SYM_OK;
    if (check_sources_open(cfg, plan))
        s = check_plan_models(&run, plan, err);
    close_run(&run);
    return s;
}
