/* Producing each output tensor of a merge from the sources, in f32. */
#include "merge_internal.h"

#include <math.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "symphony/align.h"
#include "symphony/fusion.h"

/* Rows per block when fusing embeddings, so memory does not grow with the vocabulary. */
#define EMBED_BLOCK_ROWS 256u

/* The layer whose schedule value applies: embeddings use the first, the final norm and
 * lm_head the last. */
static int depth_of(const sym_merge_sources *src, const sym_tensor_job *job)
{
    if (job->kind == SYM_JOB_EMBED)
        return 0;
    if (job->kind == SYM_JOB_LM_HEAD || job->role == SYM_ROLE_FINAL_NORM)
        return src->n_layers - 1;
    return job->layer;
}

/* Source weights at a layer, normalised to sum to 1. */
static void source_weights(const sym_merge_sources *src, int layer, double *w)
{
    double sum = 0.0;
    for (size_t i = 0; i < src->n_experts; i++) {
        w[i] = sym_expert_weight_at(&src->cfg->experts[i], layer, src->n_layers);
        sum += w[i];
    }
    for (size_t i = 0; i < src->n_experts; i++)
        w[i] = sum > 0.0 ? w[i] / sum : 1.0 / (double)src->n_experts;
}

/* Computes the coefficients of base + scale x sum over present sources of w_i (x_i - base),
 * with weights relative to their mean, so equal weights give each source the scale. The
 * present sources come first in coef, then the base. */
static void task_coefficients(const sym_merge_sources *src, const double *w,
                              const bool *present, double *coef)
{
    size_t n = src->n_experts, k = 0;
    double base = 1.0;
    for (size_t i = 0; i < n; i++) {
        if (present != NULL && !present[i])
            continue;
        coef[k] = src->cfg->task_scale * (double)n * w[i];
        base -= coef[k++];
    }
    coef[k] = base;
}

static bool uses_task_arithmetic(const sym_merge_sources *src, const sym_tensor_job *job)
{
    const sym_merge_config *cfg = src->cfg;
    switch (job->kind) {
    case SYM_JOB_EMBED:
    case SYM_JOB_LM_HEAD:
        return cfg->embeddings == SYM_FUSION_TASK_ARITHMETIC;
    case SYM_JOB_NORM:
        return cfg->norms == SYM_FUSION_TASK_ARITHMETIC;
    case SYM_JOB_ATTENTION:
        return cfg->attention == SYM_ATTENTION_TASK_ARITHMETIC;
    case SYM_JOB_EXPERT:
    case SYM_JOB_ROUTER:
        break;
    }
    return false;
}

/* Returns the base model's tensor for a job. The config check makes sure there is a base. */
static const sym_tensor_ref *base_tensor(const sym_merge_sources *src, const sym_tensor_job *job)
{
    return sym_model_tensor(src->base, job->role, job->layer, -1);
}

/* Drops a source tensor's pages once it has been read: from this process's mapping, so
 * RSS does not grow with the model, and from the page cache, because a merge reads each
 * source tensor once (tied embeddings twice, at the start and the end). */
static void release_range(const sym_st_file *file, const uint8_t *begin, uint64_t length)
{
    if (length == 0)
        return; /* posix_fadvise reads a length of 0 as "to the end of the file" */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = (uintptr_t)begin / page * page;
    uintptr_t end = ((uintptr_t)begin + length) / page * page;
    if (end > first)
        (void)madvise((void *)first, end - first, MADV_DONTNEED);
    (void)posix_fadvise(file->fd, (off_t)(begin - file->map), (off_t)length,
                        POSIX_FADV_DONTNEED);
}

static void release_source(const sym_tensor_ref *ref)
{
    uint64_t length = ref->info->numel * (sym_dtype_bits(ref->info->dtype) / 8);
    release_range(ref->file, sym_st_data(ref->file, ref->info), length);
}

/* Fails, naming the source file and tensor, when elements [first, first + count) of it
 * hold a NaN or an infinity. Fused, the value would surface only later, as a non-finite
 * output or a NaN router loss. */
static sym_status check_source_finite(const sym_tensor_ref *ref, const float *values,
                                      uint64_t first, size_t count, sym_error *err)
{
    size_t bad = sym_find_nonfinite(values, count);
    if (bad == count)
        return SYM_OK;
    return sym_error_set(err, SYM_ERR_NONFINITE,
                         "%s: tensor '%s': element %llu is %g; the merge needs finite source "
                         "weights, so repair or replace this model", ref->file->path,
                         ref->info->name, (unsigned long long)(first + bad),
                         (double)values[bad]);
}

static sym_status read_whole(const sym_tensor_ref *ref, float **out, sym_error *err)
{
    *out = malloc(ref->info->numel * sizeof **out + 1);
    if (*out == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "tensor '%s': out of memory",
                             ref->info->name);
    sym_status s = sym_tensor_read_f32(ref, 0, ref->info->numel, *out, err);
    release_source(ref);
    if (s == SYM_OK)
        s = check_source_finite(ref, *out, 0, ref->info->numel, err);
    return s;
}

static void free_all(float **bufs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(bufs[i]);
}

/* Produces a norm or attention tensor: reads every source's tensor whole, and the base's
 * for task arithmetic, then combines them with coefficients. */
static sym_status produce_combined(const sym_merge_sources *src, const sym_tensor_job *job,
                                   const sym_tensor_sink *sink, sym_error *err)
{
    size_t n = src->n_experts;
    bool task = uses_task_arithmetic(src, job);
    float *bufs[SYM_MAX_SOURCES + 1];
    double w[SYM_MAX_SOURCES], coef[SYM_MAX_SOURCES + 1];
    double gram[SYM_MAX_SOURCES * SYM_MAX_SOURCES];
    memset(bufs, 0, sizeof bufs);
    memset(gram, 0, n * n * sizeof *gram);
    uint64_t numel = 0;
    sym_status s = SYM_OK;
    for (size_t i = 0; i < n && s == SYM_OK; i++) {
        const sym_tensor_ref *ref = sym_model_tensor(src->experts[i], job->role, job->layer, -1);
        numel = ref->info->numel;
        s = read_whole(ref, &bufs[i], err);
    }
    if (s == SYM_OK && task)
        s = read_whole(base_tensor(src, job), &bufs[n], err);
    size_t terms = n + (task ? 1 : 0);
    if (s != SYM_OK) {
        free_all(bufs, terms);
        return s;
    }
    source_weights(src, depth_of(src, job), w);
    memcpy(coef, w, n * sizeof *coef);
    if (task) {
        task_coefficients(src, w, NULL, coef);
    } else if (job->kind == SYM_JOB_ATTENTION && src->cfg->attention == SYM_ATTENTION_SLERP) {
        sym_fusion_gram_add((const float *const *)bufs, n, numel, gram);
        sym_multi_slerp_coefficients(gram, w, n, coef);
    }
    float *out = malloc(numel * sizeof *out + 1);
    if (out == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "out of memory fusing layer %d", job->layer);
    if (s == SYM_OK) {
        sym_fusion_combine((const float *const *)bufs, coef, terms, numel, out);
        s = sink->write(sink->context, out, numel, err);
    }
    free(out);
    free_all(bufs, terms);
    return s;
}

/* A tensor taken as it is from one model: the anchor's attention, or an expert's FFN. */
static sym_status produce_copy(const sym_tensor_ref *ref, const sym_tensor_sink *sink,
                               sym_error *err)
{
    float *buf;
    sym_status s = read_whole(ref, &buf, err);
    if (s == SYM_OK)
        s = sink->write(sink->context, buf, ref->info->numel, err);
    free(buf);
    return s;
}

/* Fuses rows [first, first + rows) of the union vocabulary. A row is the weighted mean of
 * the sources that have it, renormalised over them. With task arithmetic (refs[n] is the
 * base's tensor), a row the base has is the base row plus the scaled differences of the
 * sources that have it. A row no source has is the donor's (the longer anchor). */
static sym_status fuse_rows(const sym_merge_sources *src, const sym_tensor_ref *const *refs,
                            const sym_tensor_ref *donor, const double *w, uint64_t first,
                            uint64_t rows, float **bufs, float *out, bool task, sym_error *err)
{
    size_t n = src->n_experts;
    size_t terms = n + (task ? 1 : 0);
    uint64_t hidden = src->hidden;
    for (size_t i = 0; i < terms; i++) {
        uint64_t have = refs[i]->info->shape[0];
        uint64_t count = 0;
        if (first < have)
            count = have - first < rows ? have - first : rows;
        if (count == 0)
            continue; /* a source (or the base) a whole block shorter than the output */
        sym_status s = sym_tensor_read_f32(refs[i], first * hidden, count * hidden, bufs[i],
                                           err);
        if (s == SYM_OK)
            s = check_source_finite(refs[i], bufs[i], first * hidden, count * hidden, err);
        if (s != SYM_OK)
            return s;
        /* Each row is read once, so the block's pages can go at once, not at the end of
         * the tensor (655 MB at 13B width with two sources). */
        uint64_t row_bytes = hidden * (sym_dtype_bits(refs[i]->info->dtype) / 8);
        release_range(refs[i]->file, sym_st_data(refs[i]->file, refs[i]->info) +
                      first * row_bytes, count * row_bytes);
    }
    for (uint64_t r = 0; r < rows; r++) {
        const float *row_src[SYM_MAX_SOURCES + 1];
        double coef[SYM_MAX_SOURCES + 1];
        bool present[SYM_MAX_SOURCES];
        size_t count = 0;
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) {
            present[i] = first + r < refs[i]->info->shape[0];
            if (present[i]) {
                row_src[count] = bufs[i] + r * hidden;
                coef[count] = w[i];
                sum += w[i];
                count++;
            }
        }
        if (task && first + r < refs[n]->info->shape[0]) {
            task_coefficients(src, w, present, coef);
            row_src[count++] = bufs[n] + r * hidden;
        } else if (count == 0) {
            sym_status s = sym_tensor_read_f32(donor, (first + r) * hidden, hidden,
                                               out + r * hidden, err);
            if (s == SYM_OK)
                s = check_source_finite(donor, out + r * hidden, (first + r) * hidden, hidden,
                                        err);
            if (s != SYM_OK)
                return s;
            continue;
        } else {
            for (size_t k = 0; k < count; k++)
                coef[k] = sum > 0.0 ? coef[k] / sum : 1.0 / (double)count;
        }
        sym_fusion_combine(row_src, coef, count, hidden, out + r * hidden);
    }
    return SYM_OK;
}

static sym_status produce_vocab(const sym_merge_sources *src, const sym_tensor_job *job,
                                const sym_tensor_sink *sink, sym_error *err)
{
    size_t n = src->n_experts;
    bool task = uses_task_arithmetic(src, job);
    size_t terms = n + (task ? 1 : 0);
    const sym_tensor_ref *refs[SYM_MAX_SOURCES + 1];
    float *bufs[SYM_MAX_SOURCES + 1];
    double w[SYM_MAX_SOURCES];
    sym_role role = job->kind == SYM_JOB_EMBED ? SYM_ROLE_EMBED : SYM_ROLE_LM_HEAD;
    for (size_t i = 0; i < n; i++)
        refs[i] = sym_model_tensor(src->experts[i], role, -1, -1);
    if (task)
        refs[n] = sym_model_tensor(src->base, role, -1, -1);
    const sym_tensor_ref *donor = sym_model_tensor(src->anchor, role, -1, -1);
    source_weights(src, depth_of(src, job), w);

    size_t block = (size_t)EMBED_BLOCK_ROWS * src->hidden;
    sym_status s = SYM_OK;
    float *out = malloc(block * sizeof *out);
    for (size_t i = 0; i < terms; i++)
        bufs[i] = malloc(block * sizeof **bufs);
    for (size_t i = 0; i < terms && out != NULL; i++)
        if (bufs[i] == NULL)
            s = sym_error_set(err, SYM_ERR_NOMEM, "out of memory fusing the embeddings");
    if (out == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "out of memory fusing the embeddings");
    for (uint64_t first = 0; first < src->vocab_out && s == SYM_OK; first += EMBED_BLOCK_ROWS) {
        uint64_t rows = src->vocab_out - first;
        if (rows > EMBED_BLOCK_ROWS)
            rows = EMBED_BLOCK_ROWS;
        s = fuse_rows(src, refs, donor, w, first, rows, bufs, out, task, err);
        if (s == SYM_OK)
            s = sink->write(sink->context, out, rows * src->hidden, err);
    }
    free_all(bufs, terms);
    free(out);
    return s;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* Router rows without calibration: zero, standard normal (Box-Muller) or uniform in
 * [-1, 1), from a generator seeded with the seed and the layer, so each layer's rows do
 * not depend on which layers were written before (resume). */
static sym_status produce_router(const sym_merge_sources *src, const sym_tensor_job *job,
                                 const sym_tensor_sink *sink, sym_error *err)
{
    size_t count = src->n_experts * src->hidden;
    const sym_layer_state *calibrated = src->layer_state;
    if (calibrated != NULL && calibrated->layer == job->layer && calibrated->router != NULL)
        return sink->write(sink->context, calibrated->router, count, err);
    float *out = calloc(count, sizeof *out);
    if (out == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory building router %d",
                             job->layer);
    uint64_t state = src->cfg->seed ^ (0xd1b54a32d192ed03ull * (uint64_t)(job->layer + 1));
    const sym_merge_config *cfg = src->cfg;
    bool zero = cfg->router.init == SYM_ROUTER_INIT_ZERO;
    for (size_t j = 0; j < count && !zero; j++) {
        if (cfg->gate_mode == SYM_GATE_UNIFORM_RANDOM) {
            out[j] = (float)(2.0 * uniform01(&state) - 1.0);
        } else {
            double u1 = 1.0 - uniform01(&state), u2 = uniform01(&state);
            out[j] = (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
        }
    }
    sym_status s = sink->write(sink->context, out, count, err);
    free(out);
    return s;
}

/* Expert e's FFN tensor with calibration's permutation applied: rows of gate and up,
 * columns of down. */
static sym_status produce_expert(const sym_merge_sources *src, const sym_tensor_job *job,
                                 const sym_tensor_sink *sink, sym_error *err)
{
    const sym_tensor_ref *ref = sym_model_tensor(src->experts[job->expert], job->role,
                                                 job->layer, -1);
    const sym_layer_state *state = src->layer_state;
    const int32_t *perm = NULL;
    if (state != NULL && state->layer == job->layer)
        perm = state->perm[job->expert];
    if (perm == NULL)
        return produce_copy(ref, sink, err);
    float *buf;
    sym_status s = read_whole(ref, &buf, err);
    size_t rows = ref->info->shape[0], cols = ref->info->shape[1];
    if (s == SYM_OK && job->role == SYM_ROLE_FFN_DOWN)
        s = sym_align_permute_cols(buf, rows, cols, perm, err);
    else if (s == SYM_OK)
        s = sym_align_permute_rows(buf, rows, cols, perm, err);
    if (s == SYM_OK)
        s = sink->write(sink->context, buf, ref->info->numel, err);
    free(buf);
    return s;
}

sym_status sym_produce_tensor(const sym_merge_sources *src, const sym_tensor_job *job,
                              const sym_tensor_sink *sink, sym_error *err)
{
    switch (job->kind) {
    case SYM_JOB_EMBED:
    case SYM_JOB_LM_HEAD:
        return produce_vocab(src, job, sink, err);
    case SYM_JOB_NORM:
        return produce_combined(src, job, sink, err);
    case SYM_JOB_ATTENTION:
        if (src->cfg->attention == SYM_ATTENTION_BASE)
            return produce_copy(sym_model_tensor(src->anchor, job->role, job->layer, -1), sink,
                                err);
        return produce_combined(src, job, sink, err);
    case SYM_JOB_EXPERT:
        return produce_expert(src, job, sink, err);
    case SYM_JOB_ROUTER:
        return produce_router(src, job, sink, err);
    }
    return sym_error_set(err, SYM_ERR_INVALID, "unknown tensor job %d", (int)job->kind);
}

/* Asks the kernel to read a source tensor into the page cache in the background. */
static void prefetch_source(const sym_tensor_ref *ref)
{
    const uint8_t *begin = sym_st_data(ref->file, ref->info);
    uint64_t length = ref->info->numel * (sym_dtype_bits(ref->info->dtype) / 8);
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t first = (uintptr_t)begin / page * page;
    if (length > 0)
        (void)madvise((void *)first, (uintptr_t)begin + length - first, MADV_WILLNEED);
}

void sym_job_prefetch(const sym_merge_sources *src, const sym_tensor_job *job)
{
    switch (job->kind) {
    case SYM_JOB_NORM:
    case SYM_JOB_ATTENTION:
        if (job->kind == SYM_JOB_ATTENTION && src->cfg->attention == SYM_ATTENTION_BASE) {
            prefetch_source(sym_model_tensor(src->anchor, job->role, job->layer, -1));
            return;
        }
        for (size_t i = 0; i < src->n_experts; i++)
            prefetch_source(sym_model_tensor(src->experts[i], job->role, job->layer, -1));
        if (uses_task_arithmetic(src, job))
            prefetch_source(base_tensor(src, job));
        return;
    case SYM_JOB_EXPERT:
        prefetch_source(sym_model_tensor(src->experts[job->expert], job->role, job->layer, -1));
        return;
    case SYM_JOB_EMBED:
    case SYM_JOB_LM_HEAD:
    case SYM_JOB_ROUTER:
        /* Embeddings are read in row blocks with the kernel's own readahead; routers read
         * nothing. */
        return;
    }
}

uint64_t sym_job_memory(const sym_merge_sources *src, const sym_tensor_job *job, uint64_t numel)
{
    uint64_t n = src->n_experts + (uses_task_arithmetic(src, job) ? 1 : 0);
    if (job->kind == SYM_JOB_EMBED || job->kind == SYM_JOB_LM_HEAD)
        return (n + 2) * EMBED_BLOCK_ROWS * src->hidden * 4;
    if (job->kind == SYM_JOB_NORM || job->kind == SYM_JOB_ATTENTION)
        return (n + 2) * numel * 4;
    return 2 * numel * 4;
}
