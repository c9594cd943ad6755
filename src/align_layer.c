/* Token sketch, assignment, diagnostics and the per-layer alignment driver. */
#include "symphony/align.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/lap.h"

#define DEFAULT_BLOCK_TOKENS 1024
#define SKETCH_CHUNK_TOKENS 256

/* splitmix64's finaliser: a bijection on 64-bit words with good avalanche. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

sym_status sym_sketch_init(sym_sketch *sketch, size_t k, size_t d_ff, uint64_t seed,
                           sym_error *err)
{
    memset(sketch, 0, sizeof *sketch);
    if (k == 0 || d_ff == 0 || k > (size_t)INT32_MAX || d_ff > (size_t)INT32_MAX)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "sketch: %zu rows of %zu neurons; expected 1 to %d of each", k,
                             d_ff, INT32_MAX);
    sketch->rows = calloc(k * d_ff, sizeof *sketch->rows);
    if (sketch->rows == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "sketch: cannot allocate %zu x %zu floats",
                             k, d_ff);
    sketch->k = k;
    sketch->d_ff = d_ff;
    sketch->seed = seed;
    return SYM_OK;
}

void sym_sketch_free(sym_sketch *sketch)
{
    if (sketch == NULL)
        return;
    free(sketch->rows);
    memset(sketch, 0, sizeof *sketch);
}

/* Fills s [k, count] with S's columns first .. first + count - 1. */
static void sketch_columns(const sym_sketch *sketch, uint64_t first, size_t count, float *s)
{
    float value = (float)(1.0 / sqrt((double)sketch->k));
    uint64_t seed = mix64(sketch->seed);
    for (size_t c = 0; c < count; c++) {
        uint64_t column = mix64(seed ^ mix64(first + c));
        for (size_t r = 0; r < sketch->k; r++)
            s[r * count + c] = (mix64(column + r) >> 63) != 0 ? value : -value;
    }
}

sym_status sym_sketch_add(sym_sketch *sketch, const float *z, size_t rows, sym_error *err)
{
    size_t chunk = rows < SKETCH_CHUNK_TOKENS ? rows : SKETCH_CHUNK_TOKENS;
    float *s = malloc((chunk != 0 ? chunk : 1) * sketch->k * sizeof *s);
    if (s == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "sketch: cannot allocate %zu x %zu floats",
                             sketch->k, chunk);
    int k = (int)sketch->k;
    int n = (int)sketch->d_ff;
    for (size_t done = 0; done < rows; done += chunk) {
        size_t count = rows - done < chunk ? rows - done : chunk;
        sketch_columns(sketch, sketch->tokens + done, count, s);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, n, (int)count, 1.0f, s,
                    (int)count, z + done * sketch->d_ff, n, 1.0f, sketch->rows, n);
    }
    sketch->tokens += rows;
    free(s);
    return SYM_OK;
}

sym_status sym_align_solve(const float *corr, size_t d_ff, int threads, int32_t *perm,
                           double *total, sym_error *err)
{
    sym_status status = sym_lap_solve(corr, d_ff, SYM_LAP_MAXIMIZE, threads, perm, total, err);
    if (status != SYM_OK)
        sym_error_prefix(err, "neuron assignment");
    return status;
}

void sym_align_diagnose(const float *corr, size_t d_ff, const int32_t *perm,
                        const sym_act_stats *stats_a, const sym_act_stats *stats_b,
                        sym_align_diag *diag)
{
    memset(diag, 0, sizeof *diag);
    diag->d_ff = d_ff;
    for (size_t i = 0; i < d_ff; i++) {
        diag->total += (double)corr[i * d_ff + (size_t)perm[i]];
        diag->identity_count += (size_t)perm[i] == i;
    }
    diag->mean_matched_corr = d_ff != 0 ? diag->total / (double)d_ff : 0;
    diag->identity_fraction = d_ff != 0 ? (double)diag->identity_count / (double)d_ff : 0;
    diag->dead_anchor = stats_a->dead;
    diag->dead_source = stats_b->dead;
}

void sym_align_options_init(sym_align_options *options)
{
    memset(options, 0, sizeof *options);
    options->block_tokens = DEFAULT_BLOCK_TOKENS;
    options->sketch_seed = 1;
    options->threads = 1;
}

static sym_status compute_stats(const float *acts, uint64_t tokens, size_t d_ff,
                                sym_act_stats *stats, const char *which, sym_error *err)
{
    sym_status status = sym_act_stats_init(stats, d_ff, err);
    if (status == SYM_OK)
        status = sym_act_stats_add(stats, acts, (size_t)tokens, err);
    if (status == SYM_OK)
        status = sym_act_stats_finish(stats, err);
    if (status != SYM_OK)
        sym_error_prefix(err, "%s activations", which);
    return status;
}

/* Approximates the correlation from k sketch rows of each model's z-scores. */
static sym_status sketched_correlation(const float *a, const sym_act_stats *stats_a,
                                       const float *b, const sym_act_stats *stats_b,
                                       const sym_align_options *options, float *corr,
                                       sym_error *err)
{
    size_t d_ff = stats_a->d_ff;
    uint64_t tokens = stats_a->tokens;
    size_t block = options->block_tokens != 0 ? options->block_tokens : DEFAULT_BLOCK_TOKENS;
    if (block > tokens)
        block = (size_t)tokens;

    sym_sketch sketch_a, sketch_b;
    sym_status status = sym_sketch_init(&sketch_a, options->sketch_rows, d_ff,
                                        options->sketch_seed, err);
    if (status != SYM_OK)
        return status;
    status = sym_sketch_init(&sketch_b, options->sketch_rows, d_ff, options->sketch_seed, err);
    float *z = malloc(block * d_ff * sizeof *z);
    if (status == SYM_OK && z == NULL)
        status = sym_error_set(err, SYM_ERR_NOMEM,
                               "sketch: cannot allocate a block of %zu x %zu floats", block,
                               d_ff);

    for (uint64_t first = 0; status == SYM_OK && first < tokens; first += block) {
        size_t rows = (size_t)(tokens - first < block ? tokens - first : block);
        sym_act_zscore(stats_a, a + first * d_ff, rows, z);
        status = sym_sketch_add(&sketch_a, z, rows, err);
        if (status != SYM_OK)
            break;
        sym_act_zscore(stats_b, b + first * d_ff, rows, z);
        status = sym_sketch_add(&sketch_b, z, rows, err);
    }
    if (status == SYM_OK) {
        memset(corr, 0, d_ff * d_ff * sizeof *corr);
        sym_align_corr_add(corr, d_ff, sketch_a.rows, sketch_b.rows, sketch_a.k);
        sym_align_corr_scale(corr, d_ff, tokens);
    }
    free(z);
    sym_sketch_free(&sketch_a);
    sym_sketch_free(&sketch_b);
    return status;
}

sym_status sym_align_layer(const float *a, const float *b, uint64_t tokens, size_t d_ff,
                           const sym_align_options *options, int32_t *perm, float *corr_out,
                           sym_align_diag *diag, sym_error *err)
{
    if (tokens == 0 || d_ff == 0 || d_ff > (size_t)INT32_MAX || tokens > SIZE_MAX / d_ff)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "align layer: %llu tokens x %zu neurons; expected both nonzero "
                             "and d_ff at most %d",
                             (unsigned long long)tokens, d_ff, INT32_MAX);
    sym_act_stats stats_a, stats_b;
    memset(&stats_b, 0, sizeof stats_b);
    float *corr = corr_out;

    /* Statistics first: the z-scores need every token's mean and std. */
    sym_status status = compute_stats(a, tokens, d_ff, &stats_a, "anchor", err);
    if (status == SYM_OK)
        status = compute_stats(b, tokens, d_ff, &stats_b, "source", err);
    if (status == SYM_OK && corr == NULL) {
        corr = malloc(d_ff * d_ff * sizeof *corr);
        if (corr == NULL)
            status = sym_error_set(err, SYM_ERR_NOMEM,
                                   "align layer: cannot allocate the %zu x %zu correlation",
                                   d_ff, d_ff);
    }

    /* The correlation, exact or from the token sketch. */
    if (status == SYM_OK && options->sketch_rows == 0)
        status = sym_align_correlation(a, &stats_a, b, &stats_b, options->block_tokens, corr,
                                       err);
    else if (status == SYM_OK)
        status = sketched_correlation(a, &stats_a, b, &stats_b, options, corr, err);

    /* The assignment and what it achieved. */
    if (status == SYM_OK)
        status = sym_align_solve(corr, d_ff, options->threads, perm, NULL, err);
    if (status == SYM_OK && diag != NULL)
        sym_align_diagnose(corr, d_ff, perm, &stats_a, &stats_b, diag);

    if (corr != corr_out)
        free(corr);
    sym_act_stats_free(&stats_a);
    sym_act_stats_free(&stats_b);
    return status;
}
