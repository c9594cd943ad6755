/* OpenBLAS sgemm throughput at the shapes of one calibration forward pass: T tokens times
 * the transposed weights of q/k/v/o (hidden x hidden), gate/up (hidden -> intermediate)
 * and down (intermediate -> hidden), as the forward pass multiplies them (row-major
 * activations times W^T). Reports GFLOP/s per shape and for the whole layer, the reference
 * for the merge's compute efficiency. With "correlation" after REPEATS it also times the
 * alignment's neuron correlation block, out[I x I] += za^T zb with za, zb [TOKENS x I].
 * With "lens" it times only the logit lens of the router's domain weights: TOKENS rows of
 * normalised states times a block of 512 lm_head rows, transposed.
 *
 * Usage: bench_sgemm TOKENS HIDDEN INTERMEDIATE THREADS [REPEATS [correlation|lens]]
 */
#include <cblas.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *random_matrix(size_t count, unsigned seed)
{
    float *m = malloc(count * sizeof *m);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        seed = seed * 1103515245u + 12345u;
        m[i] = (float)((int)(seed >> 16 & 0x7fff) - 16384) / 16384.0f;
    }
    return m;
}

/* Times c[m x n] = op(a) op(b) + beta c, row-major, where op(a) is [m x k] and op(b)
 * [k x n], a stored transposed when trans_a and b when trans_b; returns the best seconds,
 * or -1 when out of memory. */
static double time_gemm(bool trans_a, bool trans_b, int m, int n, int k, float beta,
                        int repeats)
{
    float *a = random_matrix((size_t)m * (size_t)k, 1);
    float *b = random_matrix((size_t)k * (size_t)n, 2);
    float *c = calloc((size_t)m * (size_t)n, sizeof *c);
    double best = -1.0;
    if (a == NULL || b == NULL || c == NULL) {
        fprintf(stderr, "bench_sgemm: out of memory for %d x %d x %d\n", m, k, n);
    } else {
        for (int r = 0; r < repeats; r++) {
            double t0 = now_seconds();
            cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                        trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a,
                        trans_a ? m : k, b, trans_b ? k : n, beta, c, n);
            double t = now_seconds() - t0;
            if (best < 0.0 || t < best)
                best = t;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* Times the correlation block out[n x n] += za^T zb, za and zb [tokens x n]. */
static double time_correlation(int tokens, int n, int repeats)
{
    return time_gemm(true, false, n, n, tokens, 1.0f, repeats);
}

/* Times out[tokens x n] = x[tokens x k] * W[n x k]^T. */
static double time_shape(int tokens, int k, int n, int repeats)
{
    return time_gemm(false, true, tokens, n, k, 0.0f, repeats);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s TOKENS HIDDEN INTERMEDIATE THREADS "
                "[REPEATS [correlation|lens]]\n",
                argv[0]);
        return 2;
    }
    int tokens = atoi(argv[1]), hidden = atoi(argv[2]), inter = atoi(argv[3]);
    int threads = atoi(argv[4]), repeats = argc > 5 ? atoi(argv[5]) : 3;
    if (tokens <= 0 || hidden <= 0 || inter <= 0 || threads <= 0 || repeats <= 0) {
        fprintf(stderr, "%s: every argument must be a positive integer\n", argv[0]);
        return 2;
    }
    openblas_set_num_threads(threads);
    const struct {
        const char *name;
        int k, n, count; /* count: multiplications of this shape per layer */
    } shapes[] = {
        {"q/k/v/o", hidden, hidden, 4},
        {"gate/up", hidden, inter, 2},
        {"down", inter, hidden, 1},
    };
    bool lens_only = argc > 6 && strcmp(argv[6], "lens") == 0;
    if (!lens_only) {
        double layer_flops = 0.0, layer_seconds = 0.0;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            double seconds = time_shape(tokens, shapes[i].k, shapes[i].n, repeats);
            if (seconds < 0.0)
                return 1;
            double flops = 2.0 * tokens * shapes[i].k * (double)shapes[i].n;
            printf("sgemm %-8s %d x %d x %d, %d thread(s): %.3f s, %.1f GFLOP/s\n",
                   shapes[i].name, tokens, shapes[i].k, shapes[i].n, threads, seconds,
                   flops / seconds / 1e9);
            layer_flops += flops * shapes[i].count;
            layer_seconds += seconds * shapes[i].count;
        }
        printf("sgemm layer: %.1f GFLOP in %.2f s, %.1f GFLOP/s\n", layer_flops / 1e9,
               layer_seconds, layer_flops / layer_seconds / 1e9);
    }
    if (argc > 6 && strcmp(argv[6], "correlation") == 0) {
        double seconds = time_correlation(tokens, inter, repeats);
        if (seconds < 0.0)
            return 1;
        double flops = 2.0 * tokens * (double)inter * inter;
        printf("sgemm correlation %d x %d x %d, %d thread(s): %.3f s, %.1f GFLOP/s\n", inter,
               tokens, inter, threads, seconds, flops / seconds / 1e9);
    }
    if (argc > 6 && strcmp(argv[6], "lens") == 0) {
        int block = 512; /* LENS_BLOCK_ROWS of src/pipeline_lens.c */
        double seconds = time_shape(tokens, hidden, block, repeats);
        if (seconds < 0.0)
            return 1;
        double flops = 2.0 * tokens * (double)hidden * block;
        printf("sgemm lens %d x %d x %d, %d thread(s): %.3f s, %.1f GFLOP/s\n", tokens, hidden,
               block, threads, seconds, flops / seconds / 1e9);
    }
    return 0;
}
