/* Checks that a merge can run before it starts: the output path, the sources' settings, and the
 * plan that `merge --check` prints (memory, disk, bytes, FLOPs and an estimated time from a
 * short disk read and GEMM measurement of this machine). */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "merge_internal.h"
#include "pipeline_internal.h"
#include "symphony/actstore.h"
#include "symphony/hcache.h"
#include "symphony/merge.h"

const char *sym_format_size(uint64_t bytes, char *buf, size_t size)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, size, "%llu bytes", (unsigned long long)bytes);
        return buf;
    }
    double value = (double)bytes / 1024.0;
    size_t unit = 0;
    while (value >= 1024.0 && unit + 1 < sizeof units / sizeof units[0]) {
        value /= 1024.0;
        unit++;
    }
    int decimals = 0;
    if (value < 10)
        decimals = 2;
    else if (value < 100)
        decimals = 1;
    snprintf(buf, size, "%.*f %s", decimals, value, units[unit]);
    return buf;
}

void sym_merge_plan_add_problem(sym_merge_plan *plan, const char *fmt, ...)
{
    char line[SYM_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char **grown = realloc(plan->problems, (plan->n_problems + 1) * sizeof *grown);
    if (grown == NULL)
        return;
    plan->problems = grown;
    plan->problems[plan->n_problems] = strdup(line);
    if (plan->problems[plan->n_problems] != NULL)
        plan->n_problems++;
}

void sym_merge_plan_free(sym_merge_plan *plan)
{
    for (size_t i = 0; i < plan->n_problems; i++)
        free(plan->problems[i]);
    free(plan->problems);
    memset(plan, 0, sizeof *plan);
}

/* ---- output path ---- */

/* Resolves a path that may not exist yet: realpath of the path itself, else of its parent
 * followed by the last component. Returns false when neither resolves. */
static bool resolve_output(const char *path, char *out)
{
    if (realpath(path, out) != NULL)
        return true;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    const char *name = path;
    if (slash == NULL) {
        snprintf(parent, sizeof parent, ".");
    } else {
        name = path + (slash - parent) + 1;
        if (slash == parent)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    char resolved[PATH_MAX];
    if (realpath(parent, resolved) == NULL)
        return false;
    bool root = strcmp(resolved, "/") == 0;
    return snprintf(out, PATH_MAX, "%s/%s", root ? "" : resolved, name) < PATH_MAX;
}

/* True when a equals b or one lies inside the other (both canonical). */
static bool paths_overlap(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t shorter = la < lb ? la : lb;
    if (strncmp(a, b, shorter) != 0)
        return false;
    if (la == lb)
        return true;
    const char *longer = la > lb ? a : b;
    return shorter == 1 || longer[shorter] == '/'; /* shorter == 1: the root "/" */
}

/* One directory the merge reads: its config key and path. */
typedef struct source_path {
    const char *key;
    const char *path;
} source_path;

static size_t list_source_paths(const sym_merge_config *cfg, source_path *out)
{
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_experts; i++)
        out[n++] = (source_path){"source_model", cfg->experts[i].source_model};
    if (cfg->base_model != NULL)
        out[n++] = (source_path){"base_model", cfg->base_model};
    if (cfg->anchor != NULL)
        out[n++] = (source_path){"symphony.anchor", cfg->anchor};
    return n;
}

/* The merge replaces OUTPUT (with --force), deletes OUTPUT.partial (with --restart) and
 * OUTPUT.symphony-old, so none of them may be, contain or lie inside a source. */
sym_status sym_merge_check_output(const sym_merge_config *cfg, const char *output,
                                  sym_error *err)
{
    if (output == NULL || output[0] == '\0')
        return sym_error_set(err, SYM_ERR_INVALID, "the output directory is empty; name a "
                             "directory to create");
    static const char *const suffixes[] = {"", ".partial", ".symphony-old"};
    source_path sources[SYM_MAX_SOURCES + 2];
    size_t n = list_source_paths(cfg, sources);
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        char path[PATH_MAX], resolved[PATH_MAX];
        if (snprintf(path, sizeof path, "%s%s", output, suffixes[k]) >= (int)sizeof path ||
            !resolve_output(path, resolved))
            continue; /* the merge itself then fails to create it, naming the path */
        for (size_t i = 0; i < n; i++) {
            char source[PATH_MAX];
            if (realpath(sources[i].path, source) == NULL || !paths_overlap(resolved, source))
                continue;
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "output directory %s (%s) overlaps %s '%s' (%s): the merge "
                                 "would replace or delete it; choose an output outside every "
                                 "source", path, resolved, sources[i].key, sources[i].path,
                                 source);
        }
    }
    return SYM_OK;
}

/* The forward pass attends over the whole sequence, so a source trained with a shorter
 * sliding window would be calibrated, and its config copied, with a different function. */
sym_status sym_merge_check_sliding_window(const sym_model *model, sym_error *err)
{
    const json_t *config = sym_model_config_json(model);
    const json_t *window = json_object_get(config, "sliding_window");
    const sym_model_config *c = sym_model_get_config(model);
    if (window == NULL || json_is_null(window))
        return SYM_OK;
    if (!json_is_integer(window))
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s/config.json: 'sliding_window' is not an integer or null",
                             sym_model_dir(model));
    json_int_t size = json_integer_value(window);
    if (size >= c->max_position_embeddings)
        return SYM_OK;
    return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                         "%s/config.json: 'sliding_window' is %lld, below "
                         "max_position_embeddings %lld; symphony-stream computes full "
                         "attention and cannot merge sliding-window sources, so set it to "
                         "null only if the model was trained without a window",
                         sym_model_dir(model), (long long)size,
                         (long long)c->max_position_embeddings);
}

/* ---- measurements ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

enum { PROBE_BYTES = 8 << 20, PROBE_ALIGN = 4096 };

/* Reads up to PROBE_BYTES of path bypassing the page cache: O_DIRECT where the file system
 * allows it, else after POSIX_FADV_DONTNEED (which drops only clean cached pages). */
static double probe_read(const char *path, uint64_t *bytes_read)
{
    *bytes_read = 0;
    void *buf = NULL;
    if (posix_memalign(&buf, PROBE_ALIGN, PROBE_BYTES) != 0)
        return 0;
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    bool direct = fd >= 0;
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        free(buf);
        return 0;
    }
    if (!direct)
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    double start = now_seconds();
    uint64_t total = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, PROBE_BYTES - total, (off_t)total);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        total += (uint64_t)n;
        if (total >= PROBE_BYTES || (total % PROBE_ALIGN) != 0)
            break;
    }
    double seconds = now_seconds() - start;
    close(fd);
    free(buf);
    *bytes_read = total;
    return total > 0 && seconds > 0 ? (double)total / seconds : 0;
}

/* Best of a few 256^3 SGEMMs, in FLOP/s, on the merge's thread count: without the call
 * OpenBLAS uses every core, which is not what the merge runs with. */
static double probe_gemm(int threads)
{
    openblas_set_num_threads(threads > 0 ? threads : 1);
    enum { N = 256, REPS = 5 };
    float *a = malloc(3 * N * N * sizeof *a);
    if (a == NULL)
        return 0;
    for (size_t i = 0; i < 3 * N * N; i++)
        a[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    double best = 0;
    for (int r = 0; r < REPS; r++) {
        double start = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1.0f, a, N, a + N * N,
                    N, 0.0f, a + 2 * N * N, N);
        double rate = 2.0 * N * N * N / (now_seconds() - start);
        best = rate > best ? rate : best;
    }
    free(a);
    return best;
}

/* ---- the plan's numbers ---- */

uint64_t sym_merge_source_bytes(const sym_model *m)
{
    uint64_t sum = 0;
    for (size_t s = 0; s < sym_model_shard_count(m); s++) {
        const sym_st_file *f = sym_model_shard(m, s);
        for (size_t i = 0; i < f->header.n_tensors; i++)
            sum += f->header.tensors[i].nbytes;
    }
    return sum;
}

uint64_t sym_merge_calibration_tokens(const sym_merge_config *cfg)
{
    if (cfg->calibration_tokens <= 0)
        return 0;
    uint64_t per_expert = (uint64_t)cfg->calibration_tokens / cfg->n_experts /
                          (uint64_t)cfg->sequence_length;
    return per_expert * cfg->n_experts * (uint64_t)cfg->sequence_length;
}

/* Counts multiply-adds as 2 FLOPs. Attention is causal, so a token attends to half the
 * sequence on average. */
static void count_flops(const sym_merge_config *cfg, const sym_model_config *c,
                        size_t n_models, uint64_t tokens, sym_merge_plan *plan)
{
    double T = (double)tokens, d = (double)c->hidden_size, f = (double)c->intermediate_size;
    double L = (double)c->num_hidden_layers, n = (double)cfg->n_experts;
    double qd = (double)(c->num_attention_heads * c->head_dim);
    double kvd = (double)(c->num_key_value_heads * c->head_dim);
    double seq = (double)cfg->sequence_length;
    double attention = 2 * (2 * d * qd + 2 * d * kvd) + 2 * seq * qd;
    double ffn = 2 * 3 * d * f;
    plan->flops_source_forward = (double)n_models * T * L * (attention + ffn);
    /* The merged layer runs every expert on every token (dense mixture), plus the router. */
    plan->flops_merged_forward = T * L * (attention + n * ffn + 2 * n * d);
    plan->flops_correlation = L * (n - 1) * 2 * T * f * f;
    /* A Jonker-Volgenant solve costs at most about f^3 steps; counted as f^3 operations. */
    plan->flops_assignment = tokens > 0 ? L * (n - 1) * f * f * f : 0;
    double batch = (double)cfg->router.batch_size < T ? (double)cfg->router.batch_size : T;
    double per_token = 3 * 2 * n * d;
    if (sym_router_objective_uses_experts(cfg->router.objective))
        per_token += n * ffn;
    plan->flops_router = tokens > 0 ? L * (double)cfg->router.steps * batch * per_token : 0;
    /* Logit-lens domain weights: two states per sampled token (at most 1024 per domain)
     * against the whole lm_head, at every layer. */
    double sampled = T / n < 1024 ? T : 1024 * n;
    if (tokens > 0 && cfg->router.domain_weights == SYM_DOMAIN_WEIGHTS_LENS)
        plan->flops_router += L * 2 * sampled * 2 * (double)c->vocab_size * d;
    plan->flops_total = plan->flops_source_forward + plan->flops_merged_forward +
                        plan->flops_correlation + plan->flops_assignment + plan->flops_router;
}

/* Working memory, an estimate from the buffer sizes of the fusion and the calibration
 * pipeline; mapped source files are page cache and not counted. */
static void count_memory(const sym_merge_config *cfg, const sym_model_config *c,
                         size_t n_models, uint64_t tokens, sym_merge_plan *plan)
{
    uint64_t T = tokens, d = (uint64_t)c->hidden_size, f = (uint64_t)c->intermediate_size;
    uint64_t n = cfg->n_experts;
    uint64_t qd = (uint64_t)(c->num_attention_heads * c->head_dim);
    uint64_t kvd = (uint64_t)(c->num_key_value_heads * c->head_dim);
    uint64_t layer_params = 2 * d * qd + 2 * d * kvd + 3 * d * f + 2 * d;
    uint64_t floats = 0;
    if (T > 0) {
        floats += T * d * (n_models + 2) + 2 * T * f;         /* hidden states, activations */
        floats += n * 3 * f * d + 2 * qd * d + 2 * kvd * d;  /* the merged layer */
        floats += n_models * 2 * layer_params;               /* each source: layer + prefetch */
        floats += f * f + 2 * T * f;                         /* correlation and z-scores */
        uint64_t seq = (uint64_t)cfg->sequence_length;
        uint64_t batch = seq * sym_pipeline_forward_sequences((size_t)seq, (size_t)(T / seq));
        floats += n_models * batch * (3 * d + 2 * qd + 2 * kvd + 2 * f); /* activations */
    }
    plan->memory_calibration = floats * 4;
    plan->memory_total = plan->memory_tensor + plan->memory_calibration;
}

/* Bytes of one cache file of `raw` payload bytes at most: its header and zstd's worst-case
 * output, which is never below the uncompressed size. */
static uint64_t cache_file_bound(uint64_t header, uint64_t raw)
{
    return header + (uint64_t)ZSTD_compressBound((size_t)raw);
}

/* Disk: the output shards, the small metadata files, and an upper bound of the work
 * directory. Per layer the pipeline writes the hidden states leaving it for each calibrated
 * model and for the merged model, the router inputs (all [tokens, hidden] in the cache
 * dtype), one activation statistics file ([d_ff, d_ff] f32 plus f64 mean and std) per
 * aligned expert, and a JSON report; once, the token labels and the router setup. */
static void count_disk(const sym_merge_config *cfg, const sym_model_config *c, size_t n_models,
                       uint64_t tokens, sym_merge_plan *plan)
{
    uint64_t T = tokens, d = (uint64_t)c->hidden_size, f = (uint64_t)c->intermediate_size;
    uint64_t L = (uint64_t)c->num_hidden_layers, n = cfg->n_experts;
    uint64_t elem = cfg->cache_dtype == SYM_HCACHE_BF16 ? 2 : 4;
    plan->cache_bytes = 0;
    if (T > 0) {
        uint64_t states = (n_models + 2) * cache_file_bound(SYM_HCACHE_HEADER_BYTES, T * d * elem);
        uint64_t stats = n * cache_file_bound(SYM_ACTSTORE_HEADER_BYTES, (f * f * 4) + f * 16);
        uint64_t report = 4096 + 512 * n;
        plan->cache_bytes = L * (states + stats + report);
        plan->cache_bytes += cache_file_bound(SYM_HCACHE_HEADER_BYTES, T * 4) + 4096;
    }
    plan->disk_needed = plan->output_bytes + plan->cache_bytes + (1u << 20);
}

/* NOTE: a rough estimate. For fixtures/configs/real.yml it gave 26 s for a merge that
 * took 42 s, because per-call overheads at small sizes and non-GEMM work are not
 * modelled. */
static void estimate_time(sym_merge_plan *plan, const char *probe_file, int threads)
{
    uint64_t probed = 0;
    plan->read_bytes_per_s = probe_file != NULL ? probe_read(probe_file, &probed) : 0;
    plan->probe_bytes = probed;
    plan->gemm_flops_per_s = probe_gemm(threads);
    double io = plan->read_bytes_per_s;
    plan->seconds_read = io > 0 ? (double)plan->read_bytes / io : (double)NAN;
    /* Writes are assumed to run at the measured read speed. */
    uint64_t written = plan->output_bytes + plan->cache_bytes;
    plan->seconds_write = io > 0 ? (double)written / io : (double)NAN;
    plan->seconds_compute = plan->gemm_flops_per_s > 0
                                ? plan->flops_total / plan->gemm_flops_per_s
                                : (double)NAN;
    plan->seconds_total = plan->seconds_read + plan->seconds_write + plan->seconds_compute;
}

void sym_merge_estimate_needs(const sym_merge_config *cfg, size_t n_models,
                              const sym_model *anchor, sym_merge_plan *plan)
{
    const sym_model_config *c = sym_model_get_config(anchor);
    uint64_t tokens = sym_merge_calibration_tokens(cfg);
    plan->calibration_tokens = tokens;
    plan->n_layers = (int)c->num_hidden_layers;
    size_t calibrated_models = tokens > 0 ? n_models : 0;
    count_memory(cfg, c, calibrated_models, tokens, plan);
    count_disk(cfg, c, calibrated_models, tokens, plan);
}

void sym_merge_estimate(const sym_merge_config *cfg, const sym_merge_options *opts,
                        sym_model *const *models, size_t n_models, const sym_model *anchor,
                        sym_merge_plan *plan)
{
    const sym_model_config *c = sym_model_get_config(anchor);
    sym_merge_estimate_needs(cfg, n_models, anchor, plan);
    plan->read_bytes = 0;
    const char *largest = NULL;
    uint64_t largest_size = 0;
    for (size_t m = 0; m < n_models; m++) {
        plan->read_bytes += sym_merge_source_bytes(models[m]);
        for (size_t s = 0; s < sym_model_shard_count(models[m]); s++) {
            const sym_st_file *file = sym_model_shard(models[m], s);
            if (file->file_size > largest_size) {
                largest_size = file->file_size;
                largest = file->path;
            }
        }
    }
    size_t calibrated_models = plan->calibration_tokens > 0 ? n_models : 0;
    count_flops(cfg, c, calibrated_models, plan->calibration_tokens, plan);
    plan->memory_limit = opts->memory_limit;
    estimate_time(plan, largest, opts->threads);
}

/* Free space of the output's parent directory; UINT64_MAX when it cannot be read. */
uint64_t sym_merge_free_space(const char *output, char *parent, size_t size)
{
    snprintf(parent, size, "%s", output);
    char *slash = strrchr(parent, '/');
    if (slash == NULL)
        snprintf(parent, size, ".");
    else if (slash == parent)
        slash[1] = '\0';
    else
        *slash = '\0';
    struct statvfs vfs;
    if (statvfs(parent, &vfs) != 0)
        return UINT64_MAX;
    return (uint64_t)vfs.f_bavail * vfs.f_frsize;
}
