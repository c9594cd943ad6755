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
 * column gets d[j] = min(d[j], sign * row[j] - v[j] - offset), with pred[j] = row_index
 * where it dropped. A column that the search has finished is marked by v[j] = -HUGE_VAL
 * and d[j] = +HUGE_VAL, so it is never updated and never the minimum. With assign_all set
 * (the first row of a search, when no column is finished) every d[j] is overwritten. */
typedef struct lap_scan_args {
    const float *row;
    const double *v;
    double *d;
    int32_t *pred;
    double sign;
    double offset;
    int32_t row_index;
    int assign_all;
} lap_scan_args;

typedef struct lap_kernels {
    const char *name;
    /* Returns nonzero when the columns lo..hi-1 hold a NaN or an infinity. */
    int (*colmin)(const lap_colmin_args *args, size_t lo, size_t hi);
    void (*top2)(const float *row, const double *v, double sign, size_t lo, size_t hi,
                 lap_top2 *out);
    /* Returns the smallest d[j] of the columns lo..hi-1 after the update, and stores the
     * smallest sign * row[j] - v[j] - offset before it in *min_h. */
    double (*scan)(const lap_scan_args *args, size_t lo, size_t hi, double *min_h);
    /* Returns the first j in lo..hi-1 with d[j] == value, or -1. */
    int64_t (*find)(const double *d, size_t lo, size_t hi, double value);
} lap_kernels;

extern const lap_kernels lap_kernels_scalar;
extern const lap_kernels lap_kernels_avx2;
extern const lap_kernels lap_kernels_avx512;

/* Returns the fastest kernel set this CPU supports. The environment variable
 * SYMPHONY_LAP_KERNEL set to "scalar" or "avx2" caps the choice, for tests and timing. */
const lap_kernels *lap_kernels_best(void);

/* Merges two top-2 results of disjoint ranges into *acc. */
void lap_top2_merge(lap_top2 *acc, const lap_top2 *other);

/* A fixed set of threads that share the chunks of one task at a time. The caller's thread
 * takes chunks too, so a team of one thread starts nothing. Chunks are claimed one by one.
 * A worker that the OS has descheduled therefore delays a task by at most the chunk it
 * claimed, because the caller takes over the rest. Idle workers poll for a while and then
 * yield their core. */
typedef void (*lap_chunk_fn)(void *ctx, size_t chunk);

#define LAP_TEAM_MAX_CHUNKS 0xffffu

typedef struct lap_worker lap_worker;

typedef struct lap_team {
    int threads;
    lap_worker *workers;
    lap_chunk_fn task;
    void *task_ctx;
    /* generation << 32 | chunk count << 16 | next unclaimed chunk */
    _Atomic uint64_t work;
    _Atomic size_t chunks_done;
    _Atomic int quit;
} lap_team;

sym_status lap_team_start(lap_team *team, int threads, sym_error *err);

/* Runs task(ctx, c) for every chunk c < chunks (at most LAP_TEAM_MAX_CHUNKS) and returns
 * when all have finished. */
void lap_team_run(lap_team *team, lap_chunk_fn task, void *ctx, size_t chunks);

void lap_team_stop(lap_team *team);

#endif
