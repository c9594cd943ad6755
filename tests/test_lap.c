/* Linear assignment solver: optimum against brute force (n <= 8) and against a textbook
 * O(n^3) Hungarian method (n up to 300), agreement of the kernel sets and of one and two
 * threads, planted permutations, edge cases and input checks.
 *
 * `test_lap scipy` instead compares optima with scipy's linear_sum_assignment through
 * tests/lap_scipy_check.py (run by tests/t_lap_scipy.sh, which skips without scipy). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lap_internal.h"
#include "symphony/lap.h"
#include "testlib.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_uniform(void)
{
    return (double)(rng_next() >> 11) * 0x1p-53;
}

enum matrix_kind {
    KIND_UNIFORM,
    KIND_INTEGER,
    KIND_SIGNED_LARGE,
    KIND_TINY,
    KIND_COUNT,
    /* Only in the scipy comparison: */
    KIND_TIED = KIND_COUNT,
    KIND_PLANTED,
    KIND_ALL
};

static const char *const kind_names[KIND_ALL] = {"uniform", "integer 0..3", "signed 1e30",
                                                  "1e-30", "tied 0/1", "planted"};

static void fill(float *a, size_t n, enum matrix_kind kind)
{
    for (size_t k = 0; k < n * n; k++) {
        double u = rng_uniform();
        switch (kind) {
        case KIND_UNIFORM: a[k] = (float)u; break;
        case KIND_INTEGER: a[k] = (float)(int)(u * 4.0); break;
        case KIND_SIGNED_LARGE: a[k] = (float)((u - 0.5) * 2e30); break;
        case KIND_TINY: a[k] = (float)(u * 1e-30); break;
        case KIND_TIED: a[k] = u < 0.5 ? 0.0f : 1.0f; break;
        case KIND_PLANTED: a[k] = (float)(u * 0.5); break;
        default: break;
        }
    }
    /* Row i's planted column (i * 7 + 3) mod n forms a permutation when n is not a
     * multiple of 7. Its entry gets 1 on top of noise in [0, 0.5). */
    if (kind == KIND_PLANTED && n % 7 != 0) {
        for (size_t i = 0; i < n; i++)
            a[i * n + (i * 7 + 3) % n] += 1.0f;
    }
}

/* Best total over all n! permutations (Heap's algorithm), summed in row order. */
static double brute_force(const float *a, size_t n, sym_lap_sense sense)
{
    int perm[8], c[8] = {0};
    double best = sense == SYM_LAP_MAXIMIZE ? -HUGE_VAL : HUGE_VAL;
    for (size_t i = 0; i < n; i++)
        perm[i] = (int)i;
    for (size_t k = 0;;) {
        double sum = 0.0;
        for (size_t i = 0; i < n; i++)
            sum += (double)a[i * n + (size_t)perm[i]];
        best = sense == SYM_LAP_MAXIMIZE ? fmax(best, sum) : fmin(best, sum);
        while (k < n && c[k] >= (int)k) {
            c[k] = 0;
            k++;
        }
        if (k >= n)
            return best;
        int swap_with = k % 2 == 0 ? 0 : c[k];
        int tmp = perm[swap_with];
        perm[swap_with] = perm[k];
        perm[k] = tmp;
        c[k]++;
        k = 0;
    }
}

/* Textbook Hungarian method with row and column potentials (1-based arrays), O(n^3),
 * minimising. Returns the optimal total of the signed matrix in row order. */
static double hungarian_reference(const float *a, size_t n, sym_lap_sense sense)
{
    double sign = sense == SYM_LAP_MAXIMIZE ? -1.0 : 1.0;
    double *u = calloc(n + 1, sizeof *u), *v = calloc(n + 1, sizeof *v);
    double *minv = malloc((n + 1) * sizeof *minv);
    size_t *p = calloc(n + 1, sizeof *p), *way = calloc(n + 1, sizeof *way);
    char *used = malloc(n + 1);

    for (size_t i = 1; i <= n; i++) {
        size_t j0 = 0;
        p[0] = i;
        for (size_t j = 0; j <= n; j++) {
            minv[j] = HUGE_VAL;
            used[j] = 0;
        }
        do {
            used[j0] = 1;
            size_t i0 = p[j0], j1 = 0;
            double delta = HUGE_VAL;
            for (size_t j = 1; j <= n; j++) {
                if (used[j])
                    continue;
                double cur = sign * (double)a[(i0 - 1) * n + j - 1] - u[i0] - v[j];
                if (cur < minv[j]) {
                    minv[j] = cur;
                    way[j] = j0;
                }
                if (minv[j] < delta) {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for (size_t j = 0; j <= n; j++) {
                if (used[j]) {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (p[j0] != 0);
        do {
            size_t j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0 != 0);
    }

    double *row_value = calloc(n, sizeof *row_value);
    for (size_t j = 1; j <= n; j++)
        row_value[p[j] - 1] = (double)a[(p[j] - 1) * n + j - 1];
    double total = 0.0;
    for (size_t i = 0; i < n; i++)
        total += row_value[i];
    free(row_value);
    free(u);
    free(v);
    free(minv);
    free(p);
    free(way);
    free(used);
    return total;
}

/* Checks that rc is a permutation and that total is its row-order sum. */
static int check_solution(const float *a, size_t n, const int32_t *rc, double total)
{
    char *seen = calloc(n + 1, 1);
    double sum = 0.0;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        if (rc[i] < 0 || (size_t)rc[i] >= n || seen[rc[i]]) {
            ok = 0;
            break;
        }
        seen[rc[i]] = 1;
        sum += (double)a[i * n + (size_t)rc[i]];
    }
    free(seen);
    CHECKF(ok, "n = %zu: row_to_col is not a permutation", n);
    CHECKF(!ok || sum == total, "n = %zu: total %.17g, sum of chosen entries %.17g", n,
           total, sum);
    return ok;
}

static int close_enough(double got, double want, double scale)
{
    return fabs(got - want) <= 1e-9 * scale + 1e-300;
}

static double abs_sum(const float *a, size_t n)
{
    double s = 0.0;
    for (size_t k = 0; k < n * n; k++)
        s = fmax(s, fabs((double)a[k]));
    return s * (double)n;
}

static void test_brute_force(void)
{
    float a[64];
    int32_t rc[8];
    int solved = 0;
    for (int kind = 0; kind < KIND_COUNT; kind++) {
        for (size_t n = 1; n <= 8; n++) {
            int trials = n <= 6 ? 200 : 25;
            for (int t = 0; t < trials; t++) {
                fill(a, n, (enum matrix_kind)kind);
                for (int sense = 0; sense < 2; sense++) {
                    double total = 0.0, want = brute_force(a, n, (sym_lap_sense)sense);
                    sym_error err;
                    sym_status st = sym_lap_solve(a, n, (sym_lap_sense)sense, 1, rc,
                                                  &total, &err);
                    CHECKF(st == SYM_OK, "%s", err.message);
                    check_solution(a, n, rc, total);
                    CHECKF(close_enough(total, want, abs_sum(a, n)),
                           "%s n = %zu sense %d trial %d: total %.17g, brute force %.17g",
                           kind_names[kind], n, sense, t, total, want);
                    solved++;
                }
            }
        }
    }
    printf("brute force: %d problems\n", solved);
}

static void test_against_hungarian(void)
{
    static const size_t sizes[] = {9, 31, 100, 300};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        size_t n = sizes[s];
        float *a = malloc(n * n * sizeof *a);
        int32_t *rc = malloc(n * sizeof *rc);
        for (int kind = 0; kind < KIND_COUNT; kind++) {
            fill(a, n, (enum matrix_kind)kind);
            for (int sense = 0; sense < 2; sense++) {
                double total = 0.0;
                double want = hungarian_reference(a, n, (sym_lap_sense)sense);
                sym_error err;
                CHECKF(sym_lap_solve(a, n, (sym_lap_sense)sense, 1, rc, &total, &err) ==
                       SYM_OK, "%s", err.message);
                check_solution(a, n, rc, total);
                CHECKF(close_enough(total, want, abs_sum(a, n)),
                       "%s n = %zu sense %d: total %.17g, Hungarian %.17g",
                       kind_names[kind], n, sense, total, want);
            }
        }
        free(a);
        free(rc);
    }
}

/* The kernel sets compute the same f64 values and break ties the same way, and threads
 * split rows at fixed columns, so every kernel and thread count returns the same
 * assignment. A kernel set that the CPU lacks falls back to a lesser one. */
static void test_kernels_and_threads_agree(void)
{
    static const char *const caps[] = {"scalar", "avx2", "avx512"};
    size_t n = 2500;
    float *a = malloc(n * n * sizeof *a);
    int32_t *base = malloc(n * sizeof *base), *rc = malloc(n * sizeof *rc);
    fill(a, n, KIND_INTEGER);
    for (size_t k = 0; k < n * n; k += 7)
        a[k] = (float)rng_uniform();

    double base_total = 0.0;
    sym_error err;
    setenv("SYMPHONY_LAP_KERNEL", "scalar", 1);
    CHECK(sym_lap_solve(a, n, SYM_LAP_MAXIMIZE, 1, base, &base_total, &err) == SYM_OK);
    for (int cap = 0; cap < 3; cap++) {
        setenv("SYMPHONY_LAP_KERNEL", caps[cap], 1);
        for (int threads = 1; threads <= 2; threads++) {
            double total = 0.0;
            CHECK(sym_lap_solve(a, n, SYM_LAP_MAXIMIZE, threads, rc, &total, &err) ==
                  SYM_OK);
            CHECKF(total == base_total, "%s, %d threads: total %.17g, scalar %.17g",
                   lap_kernels_best()->name, threads, total, base_total);
            CHECKF(memcmp(rc, base, n * sizeof *rc) == 0,
                   "%s, %d threads: assignment differs from the scalar one",
                   lap_kernels_best()->name, threads);
        }
    }
    unsetenv("SYMPHONY_LAP_KERNEL");
    printf("kernels: best available is %s\n", lap_kernels_best()->name);
    free(a);
    free(base);
    free(rc);
}

/* A permutation hidden under noise that is smaller than its margin must come back exactly,
 * for both senses and with two threads. */
static void test_planted_permutation(void)
{
    size_t n = 2000;
    float *a = malloc(n * n * sizeof *a);
    int32_t *perm = malloc(n * sizeof *perm), *rc = malloc(n * sizeof *rc);
    for (size_t i = 0; i < n; i++)
        perm[i] = (int32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t k = (size_t)(rng_next() % (i + 1));
        int32_t tmp = perm[i];
        perm[i] = perm[k];
        perm[k] = tmp;
    }
    for (int sense = 0; sense < 2; sense++) {
        float signal = sense == SYM_LAP_MAXIMIZE ? 1.0f : -1.0f;
        for (size_t k = 0; k < n * n; k++)
            a[k] = (float)(rng_uniform() * 0.4 - 0.2);
        for (size_t i = 0; i < n; i++)
            a[i * n + (size_t)perm[i]] += signal;
        sym_error err;
        double total = 0.0;
        CHECK(sym_lap_solve(a, n, (sym_lap_sense)sense, 2, rc, &total, &err) == SYM_OK);
        size_t wrong = 0;
        for (size_t i = 0; i < n; i++)
            wrong += rc[i] != perm[i];
        CHECKF(wrong == 0, "sense %d: %zu of %zu rows missed the planted column", sense,
               wrong, n);
    }
    free(a);
    free(perm);
    free(rc);
}

static void test_constant_and_tiny(void)
{
    size_t n = 700;
    float *a = malloc(n * n * sizeof *a);
    int32_t *rc = malloc(n * sizeof *rc);
    sym_error err;
    double total = -1.0;

    for (size_t k = 0; k < n * n; k++)
        a[k] = -2.5f;
    CHECK(sym_lap_solve(a, n, SYM_LAP_MINIMIZE, 2, rc, &total, &err) == SYM_OK);
    check_solution(a, n, rc, total);
    CHECKF(total == -2.5 * (double)n, "constant matrix: total %.17g", total);

    total = -1.0;
    CHECK(sym_lap_solve(a, 0, SYM_LAP_MAXIMIZE, 0, NULL, &total, &err) == SYM_OK);
    CHECK(total == 0.0);

    a[0] = 1e30f;
    CHECK(sym_lap_solve(a, 1, SYM_LAP_MAXIMIZE, 0, rc, &total, &err) == SYM_OK);
    CHECK(rc[0] == 0);
    CHECK(total == (double)1e30f);
    free(a);
    free(rc);
}

static void expect_nonfinite(float bad, size_t row, size_t col, const char *word)
{
    size_t n = 1100;
    float *a = malloc(n * n * sizeof *a);
    int32_t *rc = malloc(n * sizeof *rc);
    fill(a, n, KIND_UNIFORM);
    a[row * n + col] = bad;
    a[(n - 1) * n + n - 1] = bad;

    char want[128];
    snprintf(want, sizeof want, "%s at row %zu, column %zu", word, row, col);
    for (int threads = 1; threads <= 2; threads++) {
        sym_error err;
        sym_status st = sym_lap_solve(a, n, SYM_LAP_MAXIMIZE, threads, rc, NULL, &err);
        CHECKF(st == SYM_ERR_NONFINITE, "%s: status %d", word, (int)st);
        CHECKF(strstr(err.message, want) != NULL, "message '%s' lacks '%s'", err.message,
               want);
    }
    free(a);
    free(rc);
}

static void test_invalid_input(void)
{
    float a[4] = {1, 2, 3, 4};
    int32_t rc[2];
    sym_error err;

    expect_nonfinite(NAN, 17, 1023, "NaN");
    expect_nonfinite(INFINITY, 3, 4, "infinity");
    expect_nonfinite(-INFINITY, 1099, 0, "infinity");

    CHECK(sym_lap_solve(NULL, 2, SYM_LAP_MINIMIZE, 1, rc, NULL, &err) == SYM_ERR_INVALID);
    CHECK(sym_lap_solve(a, 2, SYM_LAP_MINIMIZE, 1, NULL, NULL, &err) == SYM_ERR_INVALID);
    CHECK(sym_lap_solve(a, 2, (sym_lap_sense)7, 1, rc, NULL, &err) == SYM_ERR_INVALID);
    CHECK(strstr(err.message, "unknown sense 7") != NULL);
    CHECK(sym_lap_solve(a, 2, SYM_LAP_MINIMIZE, -1, rc, NULL, &err) == SYM_ERR_INVALID);
    CHECK(sym_lap_solve(a, (size_t)1 << 40, SYM_LAP_MINIMIZE, 1, rc, NULL, &err) ==
          SYM_ERR_LIMIT);
}

/* Writes each problem to a raw f32 file, solves all of them with one run of
 * lap_scipy_check.py and compares the totals within 1e-6 relative. */
static int compare_with_scipy(void)
{
    static const size_t sizes[] = {1, 2, 5, 64, 257, 1000, 2048};
    enum { SIZES = sizeof sizes / sizeof *sizes, PROBLEMS = SIZES * KIND_ALL * 2 };
    const char *dir = test_tmpdir("lap-scipy");
    const char *python = getenv("SYMPHONY_PYTHON");
    static double totals[PROBLEMS], scales[PROBLEMS];
    static char files[PROBLEMS][512], labels[PROBLEMS][96];
    size_t cmd_cap = 64 + PROBLEMS * 600, count = 0;
    char *cmd = malloc(cmd_cap);
    size_t used = (size_t)snprintf(cmd, cmd_cap, "%s %s/tests/lap_scipy_check.py",
                                   python != NULL ? python : "/usr/bin/python3", test_top());

    for (size_t s = 0; s < SIZES; s++) {
        size_t n = sizes[s];
        float *a = malloc(n * n * sizeof *a);
        int32_t *rc = malloc(n * sizeof *rc);
        for (int kind = 0; kind < KIND_ALL; kind++) {
            fill(a, n, (enum matrix_kind)kind);
            for (int sense = 0; sense < 2; sense++, count++) {
                sym_error err;
                CHECKF(sym_lap_solve(a, n, (sym_lap_sense)sense, 0, rc, &totals[count],
                                     &err) == SYM_OK, "%s", err.message);
                scales[count] = abs_sum(a, n) / (double)n;
                snprintf(labels[count], sizeof labels[count], "%s n = %zu %s",
                         kind_names[kind], n, sense ? "max" : "min");
                if (kind == KIND_PLANTED && sense == SYM_LAP_MAXIMIZE && n % 7 != 0) {
                    size_t missed = 0;
                    for (size_t i = 0; i < n; i++)
                        missed += (size_t)rc[i] != (i * 7 + 3) % n;
                    CHECKF(missed == 0, "%s: %zu rows missed the planted column",
                           labels[count], missed);
                }
                snprintf(files[count], sizeof files[count], "%s/m%zu.f32", dir, count);
                FILE *f = fopen(files[count], "wb");
                CHECK(f != NULL && fwrite(a, sizeof *a, n * n, f) == n * n);
                if (f != NULL)
                    fclose(f);
                used += (size_t)snprintf(cmd + used, cmd_cap - used, " %s %zu %s",
                                         files[count], n, sense ? "max" : "min");
            }
        }
        free(a);
        free(rc);
    }

    FILE *out = popen(cmd, "r");
    CHECKF(out != NULL, "cannot run '%s'", cmd);
    size_t compared = 0;
    for (char line[128]; out != NULL && compared < count && fgets(line, sizeof line, out);) {
        double want = strtod(line, NULL), got = totals[compared];
        double scale = fmax(fabs(want), scales[compared]);
        CHECKF(fabs(got - want) <= 1e-6 * scale, "%s: total %.17g, scipy %.17g",
               labels[compared], got, want);
        compared++;
    }
    CHECKF(out != NULL && pclose(out) == 0, "'%s' failed", cmd);
    CHECKF(compared == count, "scipy returned %zu totals for %zu problems", compared, count);
    for (size_t k = 0; k < count; k++)
        remove(files[k]);
    rmdir(dir);
    free(cmd);
    printf("scipy: %zu problems compared\n", compared);
    return test_finish("test_lap scipy");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "scipy") == 0)
        return compare_with_scipy();
    test_brute_force();
    test_against_hungarian();
    test_kernels_and_threads_agree();
    test_planted_permutation();
    test_constant_and_tiny();
    test_invalid_input();
    return test_finish("test_lap");
}
