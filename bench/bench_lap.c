/* Times sym_lap_solve on an n x n raw f32 matrix read from a file.
 *
 *   bench_lap FILE N [min|max] [THREADS]
 *
 * Prints "seconds=S total=T" on one line: S is the wall time of the solve alone (the file is
 * read before the clock starts) and T the optimal total in f64. The matrix is asked to be
 * placed in transparent huge pages, as a caller that builds a large matrix would do. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/mman.h>

#include "symphony/lap.h"

#define HUGE_PAGE ((size_t)2 << 20)

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *read_matrix(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "bench_lap: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t bytes = (n * n * sizeof(float) + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    float *a = aligned_alloc(HUGE_PAGE, bytes);
    if (a != NULL)
        madvise(a, bytes, MADV_HUGEPAGE); /* advice only: the solve works either way */
    size_t got = a != NULL ? fread(a, sizeof *a, n * n, f) : 0;
    fclose(f);
    if (got != n * n) {
        fprintf(stderr, "bench_lap: '%s' contains %zu floats, expected %zu (n = %zu)\n", path,
                got, n * n, n);
        free(a);
        return NULL;
    }
    return a;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 5) {
        fprintf(stderr, "usage: bench_lap FILE N [min|max] [THREADS]\n");
        return 2;
    }
    size_t n = strtoul(argv[2], NULL, 10);
    sym_lap_sense sense = SYM_LAP_MAXIMIZE;
    if (argc >= 4 && strcmp(argv[3], "min") == 0)
        sense = SYM_LAP_MINIMIZE;
    int threads = argc >= 5 ? atoi(argv[4]) : 0;

    float *a = read_matrix(argv[1], n);
    int32_t *row_to_col = malloc(n * sizeof *row_to_col);
    if (a == NULL || row_to_col == NULL)
        return 1;

    sym_error err;
    double total = 0.0;
    double start = now_seconds();
    sym_status status = sym_lap_solve(a, n, sense, threads, row_to_col, &total, &err);
    double seconds = now_seconds() - start;
    if (status != SYM_OK) {
        fprintf(stderr, "bench_lap: %s\n", err.message);
        return 1;
    }
    printf("seconds=%.3f total=%.17g\n", seconds, total);
    free(a);
    free(row_to_col);
    return 0;
}
