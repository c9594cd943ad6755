/* Exact linear assignment: Jonker-Volgenant (JV) on a dense f32 matrix.
 *
 * Algorithm. The solver follows Jonker and Volgenant, "A shortest augmenting path algorithm
 * for dense and sparse linear assignment problems", Computing 38 (1987): column reduction,
 * reduction transfer, two rounds of augmenting row reduction, then one Dijkstra search per
 * row that is still free. Column duals v are f64; row duals are implicit
 * (u[i] = c[i][x[i]] - v[x[i]]). Every phase keeps the JV invariant that an assigned row's
 * column attains the minimum of c[i][j] - v[j] over its row, so the search only ever sees
 * non-negative reduced costs up to rounding.
 *
 * Why JV and not auction: auction with epsilon scaling is exact only when the final epsilon
 * is below (smallest gap between distinct assignment totals) / n, which has no useful bound
 * for f32 data, and its bidding touches every row many times. JV is exact in f64, and its
 * initialisation phases assign most rows of the matrices this program meets with one or two
 * passes over the matrix; the timings are in docs/BENCHMARKS.md.
 *
 * Layout. The matrix is never copied or transposed: maximisation multiplies each element by
 * -1 as it is read, column reduction walks rows and keeps running column minima, and every
 * other phase reads whole rows. Each row operation (top-2 search, Dijkstra scan) is split by
 * columns across a spinning thread team (lap_team.c) because one row is tens of kilobytes at
 * the sizes that matter and a row read is bound by memory bandwidth. The scan over a row is
 * dense: done columns are skipped by a d[j] = -infinity mark instead of a compacted list, so
 * that the kernels (lap_kernels.c) read the row contiguously with AVX2.
 */
#include "symphony/lap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lap_internal.h"

/* Below this size one thread is faster than waking a second one for every row. */
#define LAP_MIN_COLUMNS_PER_THREAD 512
/* Upper bound on the rows scanned by augmenting row reduction, in units of n. The phase
 * only speeds up the search that follows, so stopping it early is always safe, and the
 * bound keeps rounding-level decrements of v from chaining for a long time. */
#define LAP_ARR_SCAN_LIMIT 8
#define LAP_MAX_THREADS 64

typedef struct lap_part_result {
    lap_top2 top2;
    lap_scan_result scan;
    int nonfinite;
    char pad[64];
} lap_part_result;

typedef struct lap_solver {
    const float *cost;
    size_t n;
    double sign;
    const lap_kernels *kernels;
    lap_team team;

    double *v;          /* [n] column duals */
    double *d;          /* [n] path lengths during a search, scratch before */
    int32_t *x;         /* [n] column of each row, -1 when free */
    int32_t *y;         /* [n] row of each column, -1 when free */
    int32_t *pred;      /* [n] predecessor row of each column on the search tree */
    int32_t *free_rows; /* [n] rows still free */
    size_t free_count;
    int32_t *done;      /* [n] columns finished by the current search */
    double *done_d;     /* [n] their path lengths */
    lap_part_result *parts;

    /* Arguments of the task being run by the team. */
    const float *task_row;
    lap_scan_args scan_args;
    lap_colmin_args colmin_args;
    int32_t *matches;
} lap_solver;

/* Columns lo..hi-1 of part `part`, cut at multiples of 16 floats (one cache line). */
static void part_range(size_t n, int part, int parts, size_t *lo, size_t *hi)
{
    size_t blocks = (n + 15) / 16;
    size_t b0 = blocks * (size_t)part / (size_t)parts;
    size_t b1 = blocks * (size_t)(part + 1) / (size_t)parts;
    *lo = b0 * 16 < n ? b0 * 16 : n;
    *hi = b1 * 16 < n ? b1 * 16 : n;
}

/* ---- argument checks ---- */

static sym_status find_nonfinite(const float *cost, size_t n, sym_error *err)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            float c = cost[i * n + j];
            if (!isfinite(c))
                return sym_error_set(err, SYM_ERR_NONFINITE, "assignment cost matrix: "
                                     "%s at row %zu, column %zu; every cost must be finite",
                                     isnan(c) ? "NaN" : "infinity", i, j);
        }
    }
    return sym_error_set(err, SYM_ERR_NONFINITE, "assignment cost matrix: NaN or "
                         "infinity found by the column scan but not by the row scan");
}

static sym_status check_arguments(const float *cost, size_t n, sym_lap_sense sense,
                                  int threads, const int32_t *row_to_col, sym_error *err)
{
    if (n > 0 && (cost == NULL || row_to_col == NULL))
        return sym_error_set(err, SYM_ERR_INVALID, "assignment: cost and row_to_col must "
                             "not be NULL for n = %zu", n);
    if (sense != SYM_LAP_MINIMIZE && sense != SYM_LAP_MAXIMIZE)
        return sym_error_set(err, SYM_ERR_INVALID, "assignment: unknown sense %d; use "
                             "SYM_LAP_MINIMIZE or SYM_LAP_MAXIMIZE", (int)sense);
    if (threads < 0)
        return sym_error_set(err, SYM_ERR_INVALID, "assignment: thread count %d is "
                             "negative; use 0 for one per CPU", threads);
    if (n > SYM_LAP_MAX_N || n > SIZE_MAX / sizeof(float) / n)
        return sym_error_set(err, SYM_ERR_LIMIT, "assignment: n = %zu exceeds the "
                             "maximum %zu", n, (size_t)SYM_LAP_MAX_N);
    return SYM_OK;
}

static int choose_threads(int requested, size_t n)
{
    long cpus = requested > 0 ? requested : sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    if (cpus > LAP_MAX_THREADS)
        cpus = LAP_MAX_THREADS;
    size_t useful = n / LAP_MIN_COLUMNS_PER_THREAD;
    if (useful < 1)
        useful = 1;
    return (int)((size_t)cpus < useful ? (size_t)cpus : useful);
}

/* ---- work space ---- */

static void solver_free(lap_solver *s)
{
    lap_team_stop(&s->team);
    free(s->v);
    free(s->d);
    free(s->x);
    free(s->y);
    free(s->pred);
    free(s->free_rows);
    free(s->done);
    free(s->done_d);
    free(s->matches);
    free(s->parts);
}

static sym_status solver_init(lap_solver *s, const float *cost, size_t n, sym_lap_sense sense,
                              int threads, sym_error *err)
{
    memset(s, 0, sizeof *s);
    s->cost = cost;
    s->n = n;
    s->sign = sense == SYM_LAP_MAXIMIZE ? -1.0 : 1.0;
    s->kernels = lap_kernels_best();

    s->v = malloc(n * sizeof *s->v);
    s->d = malloc(n * sizeof *s->d);
    s->x = malloc(n * sizeof *s->x);
    s->y = malloc(n * sizeof *s->y);
    s->pred = malloc(n * sizeof *s->pred);
    s->free_rows = malloc(n * sizeof *s->free_rows);
    s->done = malloc(n * sizeof *s->done);
    s->done_d = malloc(n * sizeof *s->done_d);
    s->matches = calloc(n, sizeof *s->matches);
    s->parts = calloc(LAP_MAX_THREADS, sizeof *s->parts);
    if (!s->v || !s->d || !s->x || !s->y || !s->pred || !s->free_rows || !s->done ||
        !s->done_d || !s->matches || !s->parts) {
        solver_free(s);
        return sym_error_set(err, SYM_ERR_NOMEM, "assignment: cannot allocate work space "
                             "for n = %zu (about %zu MiB)", n, n * 48 >> 20);
    }
    sym_status status = lap_team_start(&s->team, choose_threads(threads, n), err);
    if (status != SYM_OK)
        solver_free(s);
    return status;
}

/* ---- parallel row operations ---- */

static void top2_task(void *ctx, int part, int parts)
{
    lap_solver *s = ctx;
    size_t lo, hi;
    part_range(s->n, part, parts, &lo, &hi);
    s->kernels->top2(s->task_row, s->v, s->sign, lo, hi, &s->parts[part].top2);
}

/* Returns the two smallest c[i][j] - v[j] of row i. */
static lap_top2 row_top2(lap_solver *s, size_t i)
{
    s->task_row = s->cost + i * s->n;
    lap_team_run(&s->team, top2_task, s);
    lap_top2 t = s->parts[0].top2;
    for (int p = 1; p < s->team.parts; p++)
        lap_top2_merge(&t, &s->parts[p].top2);
    return t;
}

static void scan_task(void *ctx, int part, int parts)
{
    lap_solver *s = ctx;
    size_t lo, hi;
    part_range(s->n, part, parts, &lo, &hi);
    s->kernels->scan(&s->scan_args, lo, hi, &s->parts[part].scan);
}

static lap_scan_result row_scan(lap_solver *s, int32_t i, double offset, int assign_all)
{
    s->scan_args.row = s->cost + (size_t)i * s->n;
    s->scan_args.offset = offset;
    s->scan_args.row_index = i;
    s->scan_args.assign_all = assign_all;
    lap_team_run(&s->team, scan_task, s);
    lap_scan_result r = s->parts[0].scan;
    for (int p = 1; p < s->team.parts; p++)
        lap_scan_merge(&r, &s->parts[p].scan);
    return r;
}

/* ---- phase 1: column reduction ---- */

static void colmin_task(void *ctx, int part, int parts)
{
    lap_solver *s = ctx;
    size_t lo, hi;
    part_range(s->n, part, parts, &lo, &hi);
    s->parts[part].nonfinite = s->kernels->colmin(&s->colmin_args, lo, hi);
}

/* Sets v[j] to the column minimum and assigns each column to its first minimal row when
 * that row has no column yet, as JV does (columns from last to first). Also rejects
 * non-finite costs, because this is the one phase that reads every element. */
static sym_status column_reduction(lap_solver *s, sym_error *err)
{
    size_t n = s->n;
    float *col_min = (float *)s->d; /* d is free until the search phase */
    s->colmin_args = (lap_colmin_args){s->cost, n, (float)s->sign, col_min, s->pred};
    lap_team_run(&s->team, colmin_task, s);
    for (int p = 0; p < s->team.parts; p++) {
        if (s->parts[p].nonfinite)
            return find_nonfinite(s->cost, n, err);
    }

    for (size_t i = 0; i < n; i++)
        s->x[i] = -1;
    for (size_t j = n; j-- > 0;) {
        int32_t i = s->pred[j];
        s->v[j] = (double)col_min[j];
        if (++s->matches[i] == 1) {
            s->x[i] = (int32_t)j;
            s->y[j] = i;
        } else if (s->v[j] < s->v[s->x[i]]) {
            s->y[s->x[i]] = -1;
            s->x[i] = (int32_t)j;
            s->y[j] = i;
        } else {
            s->y[j] = -1;
        }
    }
    return SYM_OK;
}

/* ---- phase 2: reduction transfer ---- */

static void transfer_task(void *ctx, int part, int parts)
{
    lap_solver *s = ctx;
    size_t n = s->n;
    size_t r0 = n * (size_t)part / (size_t)parts;
    size_t r1 = n * (size_t)(part + 1) / (size_t)parts;

    for (size_t i = r0; i < r1; i++) {
        if (s->matches[i] != 1)
            continue;
        lap_top2 t;
        s->kernels->top2(s->cost + i * n, s->v, s->sign, 0, n, &t);
        /* Smallest reduced cost outside the row's own column. */
        s->d[i] = t.j1 == s->x[i] ? t.min2 : t.min1;
    }
}

/* Lowers v[x[i]] of each row that got exactly one column so that the row's own column ties
 * with its second best. All rows read the v of before the phase (Jacobi order), which keeps
 * the invariant because each v only decreases. Collects the rows that got no column. */
static void reduction_transfer(lap_solver *s)
{
    lap_team_run(&s->team, transfer_task, s);
    s->free_count = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->matches[i] == 0)
            s->free_rows[s->free_count++] = (int32_t)i;
        else if (s->matches[i] == 1)
            s->v[s->x[i]] -= s->d[i];
    }
}

/* ---- phase 3: augmenting row reduction ---- */

/* One JV round over the free rows: each takes its best column, pushing out the owner. When
 * the best is strictly better than the second best, v drops so that both tie and the
 * evicted row is handled at once; otherwise the row takes the second best and the evicted
 * row waits for the next round. Returns nonzero when the scan budget ran out. */
static int augmenting_row_reduction(lap_solver *s, size_t *scans_left)
{
    size_t k = 0, pending = s->free_count;
    s->free_count = 0;

    while (k < pending) {
        if (*scans_left == 0) {
            memmove(s->free_rows + s->free_count, s->free_rows + k,
                    (pending - k) * sizeof *s->free_rows);
            s->free_count += pending - k;
            return 1;
        }
        --*scans_left;
        int32_t i = s->free_rows[k++];
        lap_top2 t = row_top2(s, (size_t)i);
        int64_t j = t.j1;
        int32_t evicted = s->y[j];
        int strict = t.min1 < t.min2;

        if (strict)
            s->v[j] -= t.min2 - t.min1;
        else if (evicted >= 0) {
            j = t.j2;
            evicted = s->y[j];
        }
        s->x[i] = (int32_t)j;
        s->y[j] = i;
        if (evicted < 0)
            continue;
        s->x[evicted] = -1;
        if (strict)
            s->free_rows[--k] = evicted;
        else
            s->free_rows[s->free_count++] = evicted;
    }
    return 0;
}

/* ---- phase 4: shortest augmenting paths ---- */

static int64_t find_free_column(const lap_solver *s, double length)
{
    for (size_t j = 0; j < s->n; j++) {
        if (s->y[j] < 0 && s->d[j] == length)
            return (int64_t)j;
    }
    return -1;
}

/* Dijkstra from free row `start` over reduced costs until a free column is the closest
 * column; then lowers v of the columns finished on the way and flips the path. */
static void augment_row(lap_solver *s, int32_t start)
{
    size_t done_count = 0;
    lap_scan_result r = row_scan(s, start, 0.0, 1);
    int64_t end;

    for (;;) {
        if (r.min_free <= r.min) {
            end = find_free_column(s, r.min_free);
            break;
        }
        int64_t j = r.jmin;
        int32_t i = s->y[j];
        s->done[done_count] = (int32_t)j;
        s->done_d[done_count++] = r.min;
        s->d[j] = -HUGE_VAL;
        double offset = s->sign * (double)s->cost[(size_t)i * s->n + (size_t)j] - s->v[j] -
                        r.min;
        r = row_scan(s, i, offset, 0);
    }

    double length = r.min_free;
    for (size_t k = 0; k < done_count; k++)
        s->v[s->done[k]] += s->done_d[k] - length;

    int32_t i;
    do {
        i = s->pred[end];
        s->y[end] = i;
        int32_t next = s->x[i];
        s->x[i] = (int32_t)end;
        end = next;
    } while (i != start);
}

static void solve(lap_solver *s)
{
    size_t scans_left = LAP_ARR_SCAN_LIMIT * s->n;
    s->scan_args = (lap_scan_args){NULL, s->v, s->d, s->pred, s->y, s->sign, 0.0, 0, 0};

    reduction_transfer(s);
    for (int round = 0; round < 2 && s->free_count > 0; round++) {
        if (augmenting_row_reduction(s, &scans_left))
            break;
    }
    for (size_t k = 0; k < s->free_count; k++)
        augment_row(s, s->free_rows[k]);
}

sym_status sym_lap_solve(const float *cost, size_t n, sym_lap_sense sense, int threads,
                         int32_t *row_to_col, double *total, sym_error *err)
{
    sym_status status = check_arguments(cost, n, sense, threads, row_to_col, err);
    if (status != SYM_OK)
        return status;
    if (total != NULL)
        *total = 0.0;
    if (n == 0)
        return SYM_OK;

    lap_solver s;
    status = solver_init(&s, cost, n, sense, threads, err);
    if (status != SYM_OK)
        return status;
    status = column_reduction(&s, err);
    if (status == SYM_OK && n > 1)
        solve(&s);
    if (status == SYM_OK) {
        double sum = 0.0;
        for (size_t i = 0; i < n; i++) {
            row_to_col[i] = s.x[i];
            sum += (double)cost[i * n + (size_t)s.x[i]];
        }
        if (total != NULL)
            *total = sum;
    }
    solver_free(&s);
    return status;
}
