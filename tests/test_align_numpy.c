/* The blocked sgemm correlation against numpy's np.corrcoef on the same activations, written
 * to files and read by $SYMPHONY_PYTHON. np.corrcoef gives NaN for a constant neuron where
 * the alignment defines 0, so the script maps those entries to 0. Skips without numpy. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/align.h"
#include "testlib.h"

#define TOKENS 777
#define D_FF 41

static const char script[] =
    "import sys, numpy as np\n"
    "t, n = int(sys.argv[4]), int(sys.argv[5])\n"
    "a = np.fromfile(sys.argv[1], dtype='<f4').reshape(t, n).astype(np.float64)\n"
    "b = np.fromfile(sys.argv[2], dtype='<f4').reshape(t, n).astype(np.float64)\n"
    "with np.errstate(invalid='ignore', divide='ignore'):\n"
    "    c = np.corrcoef(a.T, b.T)[:n, n:]\n"
    "np.nan_to_num(c, copy=False, nan=0.0)\n"
    "c.astype('<f8').tofile(sys.argv[3])\n";

static void write_floats(const char *path, const float *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, sizeof *data, n, f) != n)
        abort();
    fclose(f);
}

static uint64_t state = 99;

static double gauss(void)
{
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    double u1 = ((double)(state >> 11) + 0.5) * 0x1.0p-53;
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    double u2 = (double)(state >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

int main(void)
{
    const char *python = getenv("SYMPHONY_PYTHON");
    if (python == NULL || python[0] == '\0')
        python = "/usr/bin/python3";
    char command[8192];
    snprintf(command, sizeof command, "%s -c 'import numpy' 2>/dev/null", python);
    if (system(command) != 0)
        test_skip("numpy is not available to $SYMPHONY_PYTHON");

    /* Correlated neurons with large offsets, one dead neuron in each model. */
    float *a = malloc(TOKENS * D_FF * sizeof *a), *b = malloc(TOKENS * D_FF * sizeof *b);
    if (a == NULL || b == NULL)
        abort();
    for (size_t t = 0; t < TOKENS; t++) {
        double shared = gauss();
        for (size_t j = 0; j < D_FF; j++) {
            a[t * D_FF + j] = (float)(50.0 * (double)j + shared + gauss());
            b[t * D_FF + j] = (float)(-3.0 + 0.5 * shared * (double)(j % 7) + gauss());
        }
        a[t * D_FF + 5] = 2.5f;
        b[t * D_FF + 9] = 0.0f;
    }

    const char *dir = test_tmpdir("align-numpy");
    char path_a[1024], path_b[1024], path_c[1024], path_py[1024];
    snprintf(path_a, sizeof path_a, "%s/a.f32", dir);
    snprintf(path_b, sizeof path_b, "%s/b.f32", dir);
    snprintf(path_c, sizeof path_c, "%s/c.f64", dir);
    snprintf(path_py, sizeof path_py, "%s/corr.py", dir);
    write_floats(path_a, a, TOKENS * D_FF);
    write_floats(path_b, b, TOKENS * D_FF);
    FILE *f = fopen(path_py, "w");
    if (f == NULL || fputs(script, f) < 0)
        abort();
    fclose(f);
    snprintf(command, sizeof command, "%s %s %s %s %s %d %d", python, path_py, path_a, path_b,
             path_c, TOKENS, D_FF);
    CHECKF(system(command) == 0, "numpy script failed: %s", command);

    double *want = malloc(D_FF * D_FF * sizeof *want);
    f = fopen(path_c, "rb");
    CHECK(f != NULL && fread(want, sizeof *want, D_FF * D_FF, f) == D_FF * D_FF);
    if (f != NULL)
        fclose(f);

    sym_act_stats stats_a, stats_b;
    sym_error err;
    float corr[D_FF * D_FF];
    CHECK(sym_act_stats_init(&stats_a, D_FF, &err) == SYM_OK);
    CHECK(sym_act_stats_init(&stats_b, D_FF, &err) == SYM_OK);
    CHECK(sym_act_stats_add(&stats_a, a, TOKENS, &err) == SYM_OK);
    CHECK(sym_act_stats_add(&stats_b, b, TOKENS, &err) == SYM_OK);
    CHECK(sym_act_stats_finish(&stats_a, &err) == SYM_OK);
    CHECK(sym_act_stats_finish(&stats_b, &err) == SYM_OK);
    CHECK(stats_a.dead == 1);
    CHECK(stats_b.dead == 1);
    CHECK(sym_align_correlation(a, &stats_a, b, &stats_b, 100, corr, &err) == SYM_OK);

    double worst = 0, largest = 0;
    for (size_t i = 0; i < D_FF * D_FF; i++) {
        double d = fabs((double)corr[i] - want[i]);
        worst = d > worst ? d : worst;
        largest = fabs(want[i]) > largest ? fabs(want[i]) : largest;
    }
    printf("max |C - np.corrcoef| = %.3g over %d x %d (largest |C| %.3f)\n", worst, D_FF, D_FF,
           largest);
    CHECKF(worst <= 1e-5, "max difference from np.corrcoef %g exceeds 1e-5", worst);
    CHECK(largest > 0.3);

    sym_act_stats_free(&stats_a);
    sym_act_stats_free(&stats_b);
    free(a);
    free(b);
    free(want);
    return test_finish("test_align_numpy");
}
