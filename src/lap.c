/* Exact linear assignment: Jonker-Volgenant (JV) on a dense f32 matrix.
 *
 * Algorithm. The solver follows Jonker and Volgenant, "A shortest augmenting path algorithm
 * for dense and sparse linear assignment problems", Computing 38 (1987): column reduction,
 * reduction transfer, two rounds of augmenting row reduction (ARR), then one Dijkstra search
 * per row that is still free. Column duals v are f64; row duals are implicit
 * (u[i] = c[i][x[i]] - v[x[i]]). Every phase keeps the JV invariant that an assigned row's
 * column attains the minimum of c[i][j] - v[j] over its row, so every reduced cost that
 * the search uses is non-negative, up to rounding.
 *
 * Why JV and not auction: auction with epsilon scaling is exact only when the final epsilon
 * is below (smallest gap between distinct assignment totals) / n, which has no useful bound
 * for f32 data. JV is exact in f64, and its initialisation assigns most rows cheaply. On
 * the 13824 x 13824 benchmark matrices (bench/b_lap.sh), column reduction and reduction
 * transfer left about 37% of the rows free, and ARR brought that to 1-3% with 8n row
 * reads. The searches then scanned about 0.38 million rows (uniform matrix) or 0.84
 * million (noisy planted permutation). Times against scipy are in docs/BENCHMARKS.md.
 *
 * Layout. The matrix is never copied or transposed: maximisation multiplies each element by
 * -1 as it is read, column reduction walks rows and keeps running column minima, and every
 * other phase reads whole rows. A search scans rows densely: a finished column is skipped by
 * marks in v and d (see lap_scan_args) instead of a compacted list, so that the kernels
 * (lap_kernels.c) read each row contiguously with AVX-512 or AVX2. A scan skips each
 * 256-column chunk of a row whose lower bound on the reduced costs puts it beyond the
 * nearest free column (see chunk_is_out_of_reach). On the noisy 13824 matrix that skipped
 * about half of the chunks and cut the solve time by about a fifth.
 *
 * Threads. Column reduction and reduction transfer, which read the whole matrix once, are
 * split across a thread team (lap_team.c). The row operations of ARR and the searches run
 * on the calling thread: splitting each row across two threads was measured at n = 13824
 * and was no faster (one row is about 8 us of memory traffic, close to the cost of handing
 * half of it to another core), and it was several times slower whenever the second core
 * was busy. The team is therefore stopped before ARR, so that no idle worker spins.
 */
#include "symphony/lap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lap_internal.h"

/* Columns per chunk of a row. A search keeps the minimum of d and a lower bound of each
 * row's reduced costs per chunk, to skip chunks that cannot matter and to find the column
 * of the minimum quickly. 256 was faster than 1024 and as fast as 128 at n = 13824. */
#define LAP_CHUNK_COLUMNS 256
/* Columns per task of column reduction, and the fewest columns worth a thread. */
#define LAP_COLMIN_COLUMNS 1024
/* Rows per chunk of reduction transfer. */
#define LAP_CHUNK_ROWS 64
/* Upper bound on the rows scanned by augmenting row reduction, in units of n. The phase
 * only speeds up the searches that follow, so stopping it early is safe. Of the bounds
 * tried on the benchmark matrices (2n to 64n, at n = 4096 and 13824), 8n was the fastest. */
#define LAP_ARR_SCAN_LIMIT 8
#define LAP_MAX_THREADS 64

/* Result of one chunk, padded to its own cache lines. */
typedef struct lap_chunk_result {
    lap_top2 top2;
    double scan_min;
    int scan_min_stale; /* a column was finished since scan_min was computed */
    int nonfinite;
    char pad[64];
} lap_chunk_result;

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
    int32_t *free_cols; /* [n] columns still free */
    size_t free_col_count;
    int32_t *done;      /* [n] columns finished by the current search */
    double *done_d;     /* [n] their path lengths */
    double *done_v;     /* [n] their v before the search */
    size_t chunk_columns;  /* multiple of 16 floats (one cache line) */
    size_t colmin_columns; /* columns per column reduction task, >= chunk_columns */
    size_t column_chunks;
    lap_chunk_result *chunks;
    /* [n][column_chunks] lower bounds of c[i][j] - v[j] over each chunk of each row,
     * -HUGE_VAL until the row is scanned. They stay valid because v never increases. */
    double *chunk_bounds;
    int32_t *done_in_chunk; /* [column_chunks] finished columns of the current search */
    double free_bound;      /* smallest d over free columns during a search */

    /* Arguments of the task being run. */
    const float *task_row;
    lap_scan_args scan_args;
    lap_colmin_args colmin_args;
    int32_t *matches;
    size_t transfer_first_chunk;
} lap_solver;

static void chunk_range(const lap_solver *s, size_t chunk, size_t *lo, size_t *hi)
{
    *lo = chunk * s->chunk_columns;
    *hi = *lo + s->chunk_columns < s->n ? *lo + s->chunk_columns : s->n;
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
    if (n > SYM_LAP_MAX_N || (n > 0 && n > SIZE_MAX / sizeof(float) / n))
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
    size_t useful = n / LAP_COLMIN_COLUMNS;
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
    free(s->done_v);
    free(s->free_cols);
    free(s->matches);
    free(s->chunks);
    free(s->chunk_bounds);
    free(s->done_in_chunk);
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
    s->done_v = malloc(n * sizeof *s->done_v);
    s->free_cols = malloc(n * sizeof *s->free_cols);
    s->matches = calloc(n, sizeof *s->matches);
    s->chunk_columns = LAP_CHUNK_COLUMNS;
    s->colmin_columns = LAP_COLMIN_COLUMNS;
    while ((n + s->colmin_columns - 1) / s->colmin_columns > LAP_TEAM_MAX_CHUNKS)
        s->colmin_columns *= 2;
    s->column_chunks = (n + s->chunk_columns - 1) / s->chunk_columns;
    s->chunks = calloc(s->column_chunks, sizeof *s->chunks);
    s->chunk_bounds = malloc(n * s->column_chunks * sizeof *s->chunk_bounds);
    s->done_in_chunk = calloc(s->column_chunks, sizeof *s->done_in_chunk);
    if (!s->v || !s->d || !s->x || !s->y || !s->pred || !s->free_rows || !s->done ||
        !s->done_d || !s->done_v || !s->free_cols || !s->matches || !s->chunks ||
        !s->chunk_bounds || !s->done_in_chunk) {
        solver_free(s);
        return sym_error_set(err, SYM_ERR_NOMEM, "assignment: cannot allocate work space "
                             "for n = %zu (about %zu MiB)", n,
                             (n * 64 + n * s->column_chunks * 8) >> 20);
    }
    sym_status status = lap_team_start(&s->team, choose_threads(threads, n), err);
    if (status != SYM_OK)
        solver_free(s);
    return status;
}

/* ---- parallel row operations ---- */

static void top2_task(void *ctx, size_t chunk)
{
    lap_solver *s = ctx;
    size_t lo, hi;
    chunk_range(s, chunk, &lo, &hi);
    s->kernels->top2(s->task_row, s->v, s->sign, lo, hi, &s->chunks[chunk].top2);
}

/* Returns the two smallest c[i][j] - v[j] of row i. */
static lap_top2 row_top2(lap_solver *s, size_t i)
{
    s->task_row = s->cost + i * s->n;
    for (size_t c = 0; c < s->column_chunks; c++)
        top2_task(s, c);
    lap_top2 t = s->chunks[0].top2;
    for (size_t c = 1; c < s->column_chunks; c++)
        lap_top2_merge(&t, &s->chunks[c].top2);
    return t;
}

/* Returns nonzero when no column of the chunk can get a d below free_bound from the row
 * being scanned. Such updates never matter: the search ends at a free column no farther
 * than free_bound, so a column that only they would lower is never finished. The margin
 * covers the rounding of the bound and of the kernel's arithmetic. */
static int chunk_is_out_of_reach(const lap_solver *s, double bound)
{
    double offset = s->scan_args.offset, limit = s->free_bound;
    if (s->scan_args.assign_all || bound == -HUGE_VAL || limit == HUGE_VAL)
        return 0;
    double margin = 1e-12 * (fabs(bound) + fabs(offset) + fabs(limit));
    return bound - offset - limit > margin;
}

static void scan_task(void *ctx, size_t chunk)
{
    lap_solver *s = ctx;
    double *bound = &s->chunk_bounds[(size_t)s->scan_args.row_index * s->column_chunks + chunk];
    if (!s->chunks[chunk].scan_min_stale && chunk_is_out_of_reach(s, *bound))
        return; /* d is unchanged, so is the chunk's minimum */

    size_t lo, hi;
    chunk_range(s, chunk, &lo, &hi);
    double min_h;
    s->chunks[chunk].scan_min = s->kernels->scan(&s->scan_args, lo, hi, &min_h);
    s->chunks[chunk].scan_min_stale = 0;
    /* A finished column reads as +infinity, so the minimum bounds the others only. */
    if (s->done_in_chunk[chunk] == 0)
        *bound = min_h + s->scan_args.offset;
}

/* Scans row i (see lap_scan_args) and returns the smallest d over unfinished columns. */
static double row_scan(lap_solver *s, int32_t i, double offset, int assign_all)
{
    s->scan_args.row = s->cost + (size_t)i * s->n;
    s->scan_args.offset = offset;
    s->scan_args.row_index = i;
    s->scan_args.assign_all = assign_all;
    for (size_t c = 0; c < s->column_chunks; c++)
        scan_task(s, c);
    double m = s->chunks[0].scan_min;
    for (size_t c = 1; c < s->column_chunks; c++)
        m = s->chunks[c].scan_min < m ? s->chunks[c].scan_min : m;
    return m;
}

/* ---- phase 1: column reduction ---- */

static void colmin_task(void *ctx, size_t chunk)
{
    lap_solver *s = ctx;
    size_t lo = chunk * s->colmin_columns;
    size_t hi = lo + s->colmin_columns < s->n ? lo + s->colmin_columns : s->n;
    s->chunks[chunk].nonfinite = s->kernels->colmin(&s->colmin_args, lo, hi);
}

/* Sets v[j] to the column minimum and assigns each column to its first minimal row when
 * that row has no column yet, as JV does (columns from last to first). Also rejects
 * non-finite costs, because this is the one phase that reads every element. */
static sym_status column_reduction(lap_solver *s, sym_error *err)
{
    size_t n = s->n;
    float *col_min = (float *)s->d; /* d is free until the search phase */
    s->colmin_args = (lap_colmin_args){s->cost, n, (float)s->sign, col_min, s->pred};
    /* No more tasks than chunks, because colmin_columns >= chunk_columns. */
    size_t tasks = (n + s->colmin_columns - 1) / s->colmin_columns;
    lap_team_run(&s->team, colmin_task, s, tasks);
    for (size_t c = 0; c < tasks; c++) {
        if (s->chunks[c].nonfinite)
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

static void transfer_task(void *ctx, size_t chunk)
{
    lap_solver *s = ctx;
    size_t n = s->n;
    size_t r0 = (s->transfer_first_chunk + chunk) * LAP_CHUNK_ROWS;
    size_t r1 = r0 + LAP_CHUNK_ROWS < n ? r0 + LAP_CHUNK_ROWS : n;

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
    size_t chunks = (s->n + LAP_CHUNK_ROWS - 1) / LAP_CHUNK_ROWS;
    for (size_t first = 0; first < chunks; first += LAP_TEAM_MAX_CHUNKS) {
        s->transfer_first_chunk = first;
        size_t count = chunks - first;
        lap_team_run(&s->team, transfer_task, s,
                     count < LAP_TEAM_MAX_CHUNKS ? count : LAP_TEAM_MAX_CHUNKS);
    }
    s->free_count = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->matches[i] == 0)
            s->free_rows[s->free_count++] = (int32_t)i;
        else if (s->matches[i] == 1)
            s->v[s->x[i]] -= s->d[i];
    }
}

/* ---- phase 3: augmenting row reduction ---- */

/* Runs one JV round over the free rows: each takes its best column and evicts the owner.
 * When the best is strictly better than the second best, v of the best drops until both
 * tie, and the evicted row is handled next. Otherwise the row takes the second best and the
 * evicted row waits for the next round. Returns nonzero when the scan budget ran out. */
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

/* Returns the position in free_cols of the first free column at distance `length`, or -1,
 * and updates free_bound. The list is short during the search phase: one entry per row
 * still free. */
static int64_t find_free_column(lap_solver *s, double length)
{
    int64_t found = -1;
    double bound = HUGE_VAL;
    for (size_t k = 0; k < s->free_col_count; k++) {
        int32_t j = s->free_cols[k];
        bound = s->d[j] < bound ? s->d[j] : bound;
        if (s->d[j] == length && (found < 0 || j < s->free_cols[found]))
            found = (int64_t)k;
    }
    s->free_bound = bound;
    return found;
}

/* Returns the first column at distance `length`, using the chunk minima of the last scan
 * to skip chunks that cannot hold it. */
static int64_t find_column(const lap_solver *s, double length)
{
    for (size_t c = 0; c < s->column_chunks; c++) {
        if (s->chunks[c].scan_min != length)
            continue;
        size_t lo, hi;
        chunk_range(s, c, &lo, &hi);
        int64_t j = s->kernels->find(s->d, lo, hi, length);
        if (j >= 0)
            return j;
    }
    return -1;
}

/* Marks column j finished at distance `length` (see lap_scan_args) and returns the offset
 * that scanning its row needs: the reduced cost of the row's own column, minus length. */
static double finish_column(lap_solver *s, size_t done_count, int32_t j, double length)
{
    int32_t i = s->y[j];
    double offset = s->sign * (double)s->cost[(size_t)i * s->n + (size_t)j] - s->v[j] -
                    length;
    s->done[done_count] = j;
    s->done_d[done_count] = length;
    s->done_v[done_count] = s->v[j];
    s->v[j] = -HUGE_VAL;
    s->d[j] = HUGE_VAL;

    /* The next scan must not skip the chunk, so that it recomputes the chunk's minimum. */
    size_t chunk = (size_t)j / s->chunk_columns;
    s->chunks[chunk].scan_min_stale = 1;
    s->done_in_chunk[chunk]++;
    return offset;
}

/* Runs Dijkstra from free row `start` over reduced costs until a free column is the
 * closest unfinished column, with free columns winning ties. Then lowers v of each finished
 * column by its distance short of the path length, and flips the path. */
static void augment_row(lap_solver *s, int32_t start)
{
    size_t done_count = 0;
    s->free_bound = HUGE_VAL;
    double length = row_scan(s, start, 0.0, 1);
    int64_t end_pos;

    while ((end_pos = find_free_column(s, length)) < 0) {
        int32_t j = (int32_t)find_column(s, length);
        double offset = finish_column(s, done_count++, j, length);
        length = row_scan(s, s->y[j], offset, 0);
    }

    for (size_t k = 0; k < done_count; k++) {
        s->v[s->done[k]] = s->done_v[k] + (s->done_d[k] - length);
        s->done_in_chunk[(size_t)s->done[k] / s->chunk_columns] = 0;
    }

    int32_t end = s->free_cols[end_pos];
    s->free_cols[end_pos] = s->free_cols[--s->free_col_count];
    int32_t i;
    do {
        i = s->pred[end];
        s->y[end] = i;
        int32_t next = s->x[i];
        s->x[i] = end;
        end = next;
    } while (i != start);
}

static void collect_free_columns(lap_solver *s)
{
    s->free_col_count = 0;
    for (size_t j = 0; j < s->n; j++) {
        if (s->y[j] < 0)
            s->free_cols[s->free_col_count++] = (int32_t)j;
    }
}

static void solve(lap_solver *s)
{
    size_t scans_left = LAP_ARR_SCAN_LIMIT * s->n;
    s->scan_args = (lap_scan_args){NULL, s->v, s->d, s->pred, s->sign, 0.0, 0, 0};

    reduction_transfer(s);
    lap_team_stop(&s->team);
    for (int round = 0; round < 2 && s->free_count > 0; round++) {
        if (augmenting_row_reduction(s, &scans_left))
            break;
    }
    for (size_t k = 0; k < s->n * s->column_chunks; k++)
        s->chunk_bounds[k] = -HUGE_VAL;
    collect_free_columns(s);
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
