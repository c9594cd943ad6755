/* Functional alignment of FFN neurons (stage I of the merge).
 *
 * For one layer, the anchor's and a source's FFN intermediate activations
 * silu(gate x) * up x on the same T calibration tokens ([T, d_ff] row-major f32) are
 * z-scored per neuron, and the correlation matrix C = Za^T Zb / T [d_ff, d_ff] (row: anchor
 * neuron, column: source neuron) is computed with OpenBLAS sgemm in token blocks. The
 * permutation that maximises trace(C P) comes from the exact assignment solver (lap.h):
 * perm[i] is the source neuron that moves to anchor position i. Applying it to the source's
 * gate_proj and up_proj rows and down_proj columns leaves the FFN's function unchanged.
 *
 * Optionally the token axis is sketched: a seeded random matrix S [k, T] with entries
 * +-1/sqrt(k) gives Y = S Z [k, d_ff], and Ya^T Yb / T approximates C because
 * E[S^T S] = I. docs/ALIGNMENT.md reports how often the sketched assignment agrees.
 */
#ifndef SYMPHONY_ALIGN_H
#define SYMPHONY_ALIGN_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A neuron is dead when its standard deviation is at most SYM_ALIGN_DEAD_STD x (1 + |mean|).
 * f32 rounding alone perturbs a constant activation by about 6e-8 x |mean|, so this
 * threshold catches constants (and all-zero neurons) without touching live ones. A dead
 * neuron's z-scores are 0, so its row or column of C is 0. */
#define SYM_ALIGN_DEAD_STD 1e-6

/* Per-neuron statistics of one model's activations over the calibration tokens. */
typedef struct sym_act_stats {
    size_t d_ff;
    uint64_t tokens; /* rows seen so far */
    double *mean;    /* [d_ff]; valid after sym_act_stats_finish */
    double *std;     /* [d_ff], population (divides by tokens); valid after finish */
    size_t dead;     /* neurons counted dead by finish */
    /* Private: the first row (a shift against cancellation), the sums of x - shift and
     * of its square, and the z-score factor 1 / std (0 for a dead neuron), all f64. */
    double *shift;
    double *sum;
    double *sum_sq;
    double *scale;
} sym_act_stats;

/* Allocates the statistics of d_ff neurons, with no tokens seen. */
sym_status sym_act_stats_init(sym_act_stats *stats, size_t d_ff, sym_error *err);

void sym_act_stats_free(sym_act_stats *stats);

/* Adds rows tokens of activations acts [rows, d_ff] to the sums. Fails with
 * SYM_ERR_NONFINITE, naming the token and neuron, on a NaN or an infinity. */
sym_status sym_act_stats_add(sym_act_stats *stats, const float *acts, size_t rows,
                             sym_error *err);

/* Computes mean, std and the dead count from the sums. Needs at least one token. */
sym_status sym_act_stats_finish(sym_act_stats *stats, sym_error *err);

/* Writes the z-scores (x - mean) / std of acts [rows, d_ff] into z [rows, d_ff]. A dead
 * neuron gets 0. acts and z may be the same buffer. */
void sym_act_zscore(const sym_act_stats *stats, const float *acts, size_t rows, float *z);

/* Adds za^T zb [d_ff, d_ff] to corr, where za and zb are [rows, d_ff] (one token block of
 * z-scores, or sketch rows). Divide by the token count at the end (sym_align_corr_scale). */
void sym_align_corr_add(float *corr, size_t d_ff, const float *za, const float *zb,
                        size_t rows);

/* Multiplies corr [d_ff, d_ff] by 1 / tokens. */
void sym_align_corr_scale(float *corr, size_t d_ff, uint64_t tokens);

/* Computes the exact correlation C [d_ff, d_ff] of in-memory activations a and b
 * [tokens, d_ff], whose statistics are finished, z-scoring block_tokens rows at a time: the
 * work space is 2 x block_tokens x d_ff floats (block_tokens 0 means 1024). */
sym_status sym_align_correlation(const float *a, const sym_act_stats *stats_a, const float *b,
                                 const sym_act_stats *stats_b, size_t block_tokens,
                                 float *corr, sym_error *err);

/* Random projection of the token axis: the k rows of Y = S Z, where S [k, T] has entries
 * +-1/sqrt(k) drawn from (seed, token, row) alone, so blocks may come in any sizes. */
typedef struct sym_sketch {
    size_t k;
    size_t d_ff;
    uint64_t seed;
    uint64_t tokens; /* tokens added so far */
    float *rows;     /* Y [k, d_ff] */
} sym_sketch;

sym_status sym_sketch_init(sym_sketch *sketch, size_t k, size_t d_ff, uint64_t seed,
                           sym_error *err);

void sym_sketch_free(sym_sketch *sketch);

/* Adds the next rows tokens of z-scores z [rows, d_ff] (tokens sketch->tokens onwards). */
sym_status sym_sketch_add(sym_sketch *sketch, const float *z, size_t rows, sym_error *err);

/* Solves the assignment on corr [d_ff, d_ff]: perm[i] is the source neuron (column) given
 * to anchor neuron (row) i, maximising the sum of corr[i][perm[i]], which *total receives
 * (may be NULL). threads as in sym_lap_solve. */
sym_status sym_align_solve(const float *corr, size_t d_ff, int threads, int32_t *perm,
                           double *total, sym_error *err);

/* Checks that perm [n] is a permutation of 0..n-1. The error names the first bad entry. */
sym_status sym_align_check_perm(const int32_t *perm, size_t n, sym_error *err);

/* Permutes the rows of w [d_ff, hidden] in place (gate_proj, up_proj): new row i is old
 * row perm[i]. Uses one row of scratch space. */
sym_status sym_align_permute_rows(float *w, size_t d_ff, size_t hidden, const int32_t *perm,
                                  sym_error *err);

/* Permutes the columns of w [hidden, d_ff] in place (down_proj): new column i is old
 * column perm[i]. Uses one row of scratch space. */
sym_status sym_align_permute_cols(float *w, size_t hidden, size_t d_ff, const int32_t *perm,
                                  sym_error *err);

/* Inverts a permutation: inverse[perm[i]] = i. perm must be valid. */
void sym_align_invert_perm(const int32_t *perm, size_t n, int32_t *inverse);

/* Diagnostics of one layer's alignment, for the merge to print and store. */
typedef struct sym_align_diag {
    size_t d_ff;
    double total;             /* sum of corr[i][perm[i]] */
    double mean_matched_corr; /* total / d_ff; dead neurons contribute 0 */
    double identity_fraction; /* fraction of i with perm[i] == i */
    size_t identity_count;
    size_t dead_anchor; /* dead neurons of the anchor */
    size_t dead_source; /* dead neurons of the source */
} sym_align_diag;

/* Fills diag from a solved layer. */
void sym_align_diagnose(const float *corr, size_t d_ff, const int32_t *perm,
                        const sym_act_stats *stats_a, const sym_act_stats *stats_b,
                        sym_align_diag *diag);

typedef struct sym_align_options {
    size_t block_tokens; /* token rows z-scored at a time; 0 means 1024 */
    size_t sketch_rows;  /* k of the token sketch; 0 for the exact correlation */
    uint64_t sketch_seed;
    int threads; /* for the assignment solver, as in sym_lap_solve */
} sym_align_options;

/* Fills options with the defaults: exact, 1024-token blocks, seed 1, one thread. */
void sym_align_options_init(sym_align_options *options);

/* Aligns one layer: statistics of a and b [tokens, d_ff], their correlation (exact or
 * sketched), the assignment and the diagnostics. perm [d_ff] receives the permutation;
 * corr_out, when not NULL, [d_ff, d_ff] receives the correlation used. Memory beyond the
 * inputs: d_ff^2 floats for C (unless corr_out is given) plus the block or sketch rows. */
sym_status sym_align_layer(const float *a, const float *b, uint64_t tokens, size_t d_ff,
                           const sym_align_options *options, int32_t *perm, float *corr_out,
                           sym_align_diag *diag, sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
