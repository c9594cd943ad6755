/* Activation statistics, z-scores and the anchor x source correlation matrix. */
#include "symphony/align.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BLOCK_TOKENS 1024

sym_status sym_act_stats_init(sym_act_stats *stats, size_t d_ff, sym_error *err)
{
    memset(stats, 0, sizeof *stats);
    if (d_ff == 0)
        return sym_error_set(err, SYM_ERR_INVALID, "activation statistics: d_ff is 0");
    stats->d_ff = d_ff;
    stats->mean = calloc(d_ff, sizeof *stats->mean);
    stats->std = calloc(d_ff, sizeof *stats->std);
    stats->shift = calloc(d_ff, sizeof *stats->shift);
    stats->sum = calloc(d_ff, sizeof *stats->sum);
    stats->sum_sq = calloc(d_ff, sizeof *stats->sum_sq);
    stats->scale = calloc(d_ff, sizeof *stats->scale);
    if (stats->mean == NULL || stats->std == NULL || stats->shift == NULL ||
        stats->sum == NULL || stats->sum_sq == NULL || stats->scale == NULL) {
        sym_act_stats_free(stats);
        return sym_error_set(err, SYM_ERR_NOMEM,
                             "activation statistics: cannot allocate %zu neurons", d_ff);
    }
    return SYM_OK;
}

void sym_act_stats_free(sym_act_stats *stats)
{
    if (stats == NULL)
        return;
    free(stats->mean);
    free(stats->std);
    free(stats->shift);
    free(stats->sum);
    free(stats->sum_sq);
    free(stats->scale);
    memset(stats, 0, sizeof *stats);
}

sym_status sym_act_stats_add(sym_act_stats *stats, const float *acts, size_t rows,
                             sym_error *err)
{
    size_t d_ff = stats->d_ff;
    for (size_t t = 0; t < rows; t++) {
        const float *row = acts + t * d_ff;
        for (size_t j = 0; j < d_ff; j++) {
            if (!isfinite(row[j]))
                return sym_error_set(err, SYM_ERR_NONFINITE,
                                     "activation of token %llu, neuron %zu is %g; expected "
                                     "a finite value",
                                     (unsigned long long)(stats->tokens + t), j,
                                     (double)row[j]);
        }
        /* Shifting by the first token's value keeps the sum of squares free of the
         * cancellation that E[x^2] - E[x]^2 suffers when |mean| >> std. */
        if (stats->tokens == 0 && t == 0) {
            for (size_t j = 0; j < d_ff; j++)
                stats->shift[j] = row[j];
        }
        for (size_t j = 0; j < d_ff; j++) {
            double x = (double)row[j] - stats->shift[j];
            stats->sum[j] += x;
            stats->sum_sq[j] += x * x;
        }
    }
    stats->tokens += rows;
    return SYM_OK;
}

sym_status sym_act_stats_finish(sym_act_stats *stats, sym_error *err)
{
    if (stats->tokens == 0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "activation statistics: no tokens were added");
    double n = (double)stats->tokens;
    stats->dead = 0;
    for (size_t j = 0; j < stats->d_ff; j++) {
        double mean_shifted = stats->sum[j] / n;
        double variance = stats->sum_sq[j] / n - mean_shifted * mean_shifted;
        stats->mean[j] = stats->shift[j] + mean_shifted;
        stats->std[j] = variance > 0 ? sqrt(variance) : 0;
        bool dead = stats->std[j] <= SYM_ALIGN_DEAD_STD * (1 + fabs(stats->mean[j]));
        stats->scale[j] = dead ? 0 : 1 / stats->std[j];
        stats->dead += dead;
    }
    return SYM_OK;
}

void sym_act_zscore(const sym_act_stats *stats, const float *acts, size_t rows, float *z)
{
    size_t d_ff = stats->d_ff;
    for (size_t t = 0; t < rows; t++) {
        const float *x = acts + t * d_ff;
        float *out = z + t * d_ff;
        for (size_t j = 0; j < d_ff; j++)
            out[j] = (float)(((double)x[j] - stats->mean[j]) * stats->scale[j]);
    }
}

void sym_align_corr_add(float *corr, size_t d_ff, const float *za, const float *zb,
                        size_t rows)
{
    if (rows == 0)
        return;
    int n = (int)d_ff;
    /* NOTE: blocks accumulate into corr in f32, so the rounding error grows with the
     * number of blocks. Larger blocks keep it small for long calibration runs. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, (int)rows, 1.0f, za, n, zb, n,
                1.0f, corr, n);
}

void sym_align_corr_scale(float *corr, size_t d_ff, uint64_t tokens)
{
    float scale = (float)(1.0 / (double)tokens);
    for (size_t i = 0; i < d_ff * d_ff; i++)
        corr[i] *= scale;
}

static sym_status check_pair(const sym_act_stats *stats_a, const sym_act_stats *stats_b,
                             sym_error *err)
{
    if (stats_a->d_ff != stats_b->d_ff)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "correlation: anchor has %zu neurons, source %zu; expected equal",
                             stats_a->d_ff, stats_b->d_ff);
    if (stats_a->tokens != stats_b->tokens || stats_a->tokens == 0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "correlation: anchor has %llu tokens, source %llu; expected the "
                             "same nonzero count",
                             (unsigned long long)stats_a->tokens,
                             (unsigned long long)stats_b->tokens);
    if (stats_a->d_ff > (size_t)INT32_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT, "correlation: d_ff %zu exceeds %d",
                             stats_a->d_ff, INT32_MAX);
    return SYM_OK;
}

sym_status sym_align_correlation(const float *a, const sym_act_stats *stats_a, const float *b,
                                 const sym_act_stats *stats_b, size_t block_tokens,
                                 float *corr, sym_error *err)
{
    sym_status status = check_pair(stats_a, stats_b, err);
    if (status != SYM_OK)
        return status;
    size_t d_ff = stats_a->d_ff;
    uint64_t tokens = stats_a->tokens;
    size_t block = block_tokens != 0 ? block_tokens : DEFAULT_BLOCK_TOKENS;
    if (block > tokens)
        block = (size_t)tokens;
    if (block > (size_t)INT32_MAX / d_ff)
        block = (size_t)INT32_MAX / d_ff;

    float *za = malloc(block * d_ff * sizeof *za);
    float *zb = malloc(block * d_ff * sizeof *zb);
    if (za == NULL || zb == NULL) {
        free(za);
        free(zb);
        return sym_error_set(err, SYM_ERR_NOMEM,
                             "correlation: cannot allocate two blocks of %zu x %zu floats",
                             block, d_ff);
    }

    memset(corr, 0, d_ff * d_ff * sizeof *corr);
    for (uint64_t first = 0; first < tokens; first += block) {
        size_t rows = (size_t)(tokens - first < block ? tokens - first : block);
        sym_act_zscore(stats_a, a + first * d_ff, rows, za);
        sym_act_zscore(stats_b, b + first * d_ff, rows, zb);
        sym_align_corr_add(corr, d_ff, za, zb, rows);
    }
    sym_align_corr_scale(corr, d_ff, tokens);

    free(za);
    free(zb);
    return SYM_OK;
}
