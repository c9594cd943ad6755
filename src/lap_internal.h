/* Internals of the assignment solver shared by src/lap*.c and the tests: the row kernels
 * (scalar and AVX2 variants) and a small spinning thread team. Not installed. */
#ifndef SYMPHONY_LAP_INTERNAL_H
#define SYMPHONY_LAP_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "symphony/status.h"

/* Column minima of sign * a over all n rows, for the columns lo..hi-1. */
typedef struct lap_colmin_args {
    const float *cost;
    size_t n;
    float sign;
    float *col_min;      /* [n], minimum of each column */
    int32_t *col_argmin; /* [n], first row that reaches it */
} lap_colmin_args;

/* The two smallest reduced costs sign * row[j] - v[j] of one row, ordered by (value, j),
 * so that j1 is the first column reaching min1. j2 is -1 when the range has one column. */
typedef struct lap_top2 {
    double min1, min2;
    int64_t j1, j2;
} lap_top2;

/* One step of the shortest augmenting path search: row `row_index` is scanned and every
 * column that is not done gets d[j] = min(d[j], sign * row[j] - v[j] - offset), with
 * pred[j] = row_index where it dropped. A done column is marked by d[j] = -HUGE_VAL (minus infinity).
 * With assign_all set (the first row of a search) every d[j] is overwritten. */
typedef struct lap_scan_args {
    const float *row;
    const double *v;
    double *d;
    int32_t *pred;
    const int32_t *col_to_row; /* -1 for a free column */
    double sign;
    double offset;
    int32_t row_index;
    int assign_all;
} lap_scan_args;

/* Result of a scan over a column range: the smallest d over columns that are not done and
 * its first column (-1 when none), and the smallest d over free columns. */
typedef struct lap_scan_result {
    double min;
    int64_t jmin;
    double min_free;
} lap_scan_result;

typedef struct lap_kernels {
    const char *name;
    /* Returns nonzero when the columns lo..hi-1 hold a NaN or an infinity. */
    int (*colmin)(const lap_colmin_args *args, size_t lo, size_t hi);
    void (*top2)(const float *row, const double *v, double sign, size_t lo, size_t hi,
                 lap_top2 *out);
    void (*scan)(const lap_scan_args *args, size_t lo, size_t hi, lap_scan_result *out);
} lap_kernels;

extern const lap_kernels lap_kernels_scalar;
extern const lap_kernels lap_kernels_avx2;

/* Returns the fastest kernel set this CPU supports, or the scalar one when the environment
 * variable SYMPHONY_LAP_KERNEL is "scalar". */
const lap_kernels *lap_kernels_best(void);

/* Returns nonzero when the CPU and OS support the AVX2 kernels. */
int lap_kernels_have_avx2(void);

/* Merges two top-2 results of disjoint ranges into *acc. */
void lap_top2_merge(lap_top2 *acc, const lap_top2 *other);

/* Merges the scan result of a range to the right of acc's range into *acc. */
void lap_scan_merge(lap_scan_result *acc, const lap_scan_result *right);

/* A fixed set of threads that run one task at a time. The caller's thread is part 0 and
 * takes part in every task, so a team of one thread starts nothing. Idle workers spin and
 * then yield, because tasks are microseconds apart during a solve. */
typedef void (*lap_task_fn)(void *ctx, int part, int parts);

typedef struct lap_worker lap_worker;

typedef struct lap_team {
    int parts;
    lap_worker *workers;
    lap_task_fn task;
    void *task_ctx;
    _Atomic unsigned generation;
    _Atomic int pending;
    _Atomic int quit;
} lap_team;

sym_status lap_team_start(lap_team *team, int parts, sym_error *err);

/* Runs task(ctx, part, parts) for every part and returns when all have finished. */
void lap_team_run(lap_team *team, lap_task_fn task, void *ctx);

void lap_team_stop(lap_team *team);

#endif
