/* OpenBLAS sgemm throughput at the shapes of one decoder layer of the forward pass, for
 * comparing the pass's compute phases against the BLAS it calls.
 *
 * Every product is out[tokens, n] = x[tokens, k] W^T with W [n, k] row-major, the call the
 * forward pass makes. The attention phase has Q, K, V and O; the FFN phase has gate, up and
 * down. Each phase's products run back to back with fresh buffers and are repeated until
 * SECONDS have passed; the best repetition counts.
 *
 * Usage: bench_forward TOKENS HIDDEN FFN Q_DIM KV_DIM THREADS [SECONDS]
 * Output: one line per phase, "phase NAME flops F seconds S gflops G".
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct shape {
    size_t n, k;
} shape;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *random_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (p == NULL) {
        fprintf(stderr, "bench_forward: out of memory for %zu floats\n", n);
        exit(1);
    }
    uint32_t state = 12345;
    for (size_t i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        p[i] = (float)(state >> 8) / 16777216.0f - 0.5f;
    }
    return p;
}

/* Times one pass over the shapes of a phase; returns seconds. */
static double run_phase(const shape *shapes, size_t count, size_t tokens, float **w, float *x,
                        float *out)
{
    double t0 = now_seconds();
    for (size_t i = 0; i < count; i++) {
        int n = (int)shapes[i].n, k = (int)shapes[i].k;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tokens, n, k, 1.0f, x, k,
                    w[i], k, 0.0f, out, n);
    }
    return now_seconds() - t0;
}

static void bench_phase(const char *name, const shape *shapes, size_t count, size_t tokens,
                        double min_seconds)
{
    float *w[8];
    size_t max_k = 0, max_n = 0;
    double flops = 0;
    for (size_t i = 0; i < count; i++) {
        w[i] = random_floats(shapes[i].n * shapes[i].k);
        max_k = shapes[i].k > max_k ? shapes[i].k : max_k;
        max_n = shapes[i].n > max_n ? shapes[i].n : max_n;
        flops += 2.0 * (double)tokens * (double)shapes[i].n * (double)shapes[i].k;
    }
    float *x = random_floats(tokens * max_k);
    float *out = random_floats(tokens * max_n);
    double best = run_phase(shapes, count, tokens, w, x, out); /* warm-up */
    double spent = 0;
    while (spent < min_seconds) {
        double s = run_phase(shapes, count, tokens, w, x, out);
        best = s < best ? s : best;
        spent += s;
    }
    printf("phase %s flops %.6g seconds %.6f gflops %.2f\n", name, flops, best,
           flops / best * 1e-9);
    for (size_t i = 0; i < count; i++)
        free(w[i]);
    free(x);
    free(out);
}

int main(int argc, char **argv)
{
    if (argc < 7 || argc > 8) {
        fprintf(stderr, "usage: bench_forward TOKENS HIDDEN FFN Q_DIM KV_DIM THREADS "
                        "[SECONDS]\n");
        return 2;
    }
    size_t v[6];
    for (int i = 0; i < 6; i++) {
        char *end;
        unsigned long long x = strtoull(argv[i + 1], &end, 10);
        if (*end != '\0' || x == 0) {
            fprintf(stderr, "bench_forward: invalid argument '%s'; expected a positive "
                            "integer\n", argv[i + 1]);
            return 2;
        }
        v[i] = (size_t)x;
    }
    double seconds = argc == 8 ? atof(argv[7]) : 2.0;
    size_t tokens = v[0], d = v[1], f = v[2], qd = v[3], kvd = v[4];
    openblas_set_num_threads((int)v[5]);
    shape attention[] = {{qd, d}, {kvd, d}, {kvd, d}, {d, qd}};
    shape ffn[] = {{f, d}, {f, d}, {d, f}};
    bench_phase("attention", attention, 4, tokens, seconds);
    bench_phase("ffn", ffn, 3, tokens, seconds);
    return 0;
}
