/* Exact linear assignment on a dense square matrix.
 *
 * The merge aligns FFN neurons of two models by solving one assignment problem per layer on
 * a d_ff x d_ff correlation matrix. sym_lap_solve finds a permutation that maximises (or
 * minimises) the summed weight, exactly up to f64 rounding of the dual variables.
 *
 * Memory: the solver reads the caller's matrix in place and never copies it. Work space is
 * about 60 bytes per row plus n^2 / 32 bytes of per-row bounds (6 MiB at n = 13824, under
 * 1% of the matrix).
 */
#ifndef SYMPHONY_LAP_H
#define SYMPHONY_LAP_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sym_lap_sense {
    SYM_LAP_MINIMIZE = 0,
    SYM_LAP_MAXIMIZE = 1
} sym_lap_sense;

/* Largest n accepted; row and column indices are stored as int32_t. */
#define SYM_LAP_MAX_N ((size_t)INT32_MAX)

/* Solves the assignment problem on cost, an n x n row-major f32 matrix.
 *
 * On success row_to_col[i] is the column assigned to row i (a permutation of 0..n-1) and
 * *total (when total is not NULL) is the sum of cost[i][row_to_col[i]] in f64, in row
 * order. threads caps the threads of the two phases that read the whole matrix, and 0
 * means one per online CPU. Those phases use at most one thread per 1024 columns, and the
 * rest of the solve runs on the calling thread. n = 0 succeeds with total 0. Ties between
 * optimal assignments are broken the same way whatever the thread count or the CPU's
 * vector instructions, so the result is reproducible.
 *
 * Fails with SYM_ERR_NONFINITE, naming the first row and column, when cost contains a NaN
 * or an infinity. Fails with SYM_ERR_INVALID for a NULL pointer, an unknown sense or a
 * negative thread count, with SYM_ERR_LIMIT when n exceeds SYM_LAP_MAX_N, and with
 * SYM_ERR_NOMEM when the work space cannot be allocated. row_to_col is unspecified after a
 * failure. */
sym_status sym_lap_solve(const float *cost, size_t n, sym_lap_sense sense, int threads,
                         int32_t *row_to_col, double *total, sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
