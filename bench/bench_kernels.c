/* Throughput of every elementwise kernel in every variant this CPU has, at the row sizes
 * of Llama 2 7B (4096 hidden, 11008 intermediate), reported as GB/s and as the ratio to
 * the scalar variant measured in the same run.
 *
 * Usage: bench_kernels [SECONDS]  (minimum time per measurement, default 0.2)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "symphony/kernels.h"

/* Buffers shared by every kernel, each with room for the largest size. */
typedef struct bench_buffers {
    float *a, *b, *out, *cos_row, *sin_row;
    unsigned char *half; /* 16-bit values, bf16 or f16 as the kernel reads them */
} bench_buffers;

static volatile double sink;

/* One kernel: its name, the bytes it reads and writes per element, and one call. */
typedef struct bench_kernel {
    const char *name;
    double bytes_per_element;
    void (*run)(const sym_kernels *k, bench_buffers *buf, size_t n);
} bench_kernel;

static void run_bf16_to_f32(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->bf16_to_f32(buf->out, buf->half, n);
}

static void run_f16_to_f32(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->f16_to_f32(buf->out, buf->half, n);
}

static void run_f32_to_bf16(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->f32_to_bf16(buf->half, buf->a, n);
}

static void run_f32_to_f16(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    sink = (double)k->f32_to_f16(buf->half, buf->a, n);
}

static void run_rmsnorm(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->rmsnorm(buf->out, buf->a, buf->b, n, 1e-5f);
}

static void run_swiglu(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->swiglu(buf->out, buf->a, buf->b, n);
}

static void run_exp(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->exp(buf->out, buf->a, n);
}

static void run_softmax(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->softmax(buf->out, buf->a, n);
}

static void run_logsumexp(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    sink = (double)k->logsumexp(buf->a, n);
}

static void run_rope(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->rope(buf->out, buf->cos_row, buf->sin_row, n);
}

static void run_dot(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    sink = k->dot(buf->a, buf->b, n);
}

static void run_sum_squares(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    sink = k->sum_squares(buf->a, n);
}

static void run_axpy(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->axpy(buf->out, 1e-3f, buf->a, n);
}

static void run_scale(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->scale(buf->out, 1.0f, n);
}

static void run_add(const sym_kernels *k, bench_buffers *buf, size_t n)
{
    k->add(buf->out, buf->a, n);
}

/* Bytes per element count every input and output stream (rope: x in and out, plus cos and
 * sin for half the elements). */
static const bench_kernel kernels[] = {
    {"bf16_to_f32", 6, run_bf16_to_f32}, {"f16_to_f32", 6, run_f16_to_f32},
    {"f32_to_bf16", 6, run_f32_to_bf16}, {"f32_to_f16", 6, run_f32_to_f16},
    {"rmsnorm", 12, run_rmsnorm},        {"swiglu", 12, run_swiglu},
    {"exp", 8, run_exp},                 {"softmax", 8, run_softmax},
    {"logsumexp", 4, run_logsumexp},     {"rope", 12, run_rope},
    {"dot", 8, run_dot},                 {"sum_squares", 4, run_sum_squares},
    {"axpy", 12, run_axpy},              {"scale", 8, run_scale},
    {"add", 12, run_add},
};
#define KERNEL_COUNT (sizeof kernels / sizeof kernels[0])

static const size_t sizes[] = {4096, 11008};
#define SIZE_COUNT (sizeof sizes / sizeof sizes[0])
#define MAX_SIZE 11008

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Returns calls per second of one kernel, timed over at least min_seconds. */
static double measure(const bench_kernel *kernel, const sym_kernels *k, bench_buffers *buf,
                      size_t n, double min_seconds)
{
    for (int i = 0; i < 10; i++) /* warm caches and clocks */
        kernel->run(k, buf, n);
    long calls = 0, batch = 16;
    double start = now_seconds(), elapsed = 0.0;
    while (elapsed < min_seconds) {
        for (long i = 0; i < batch; i++)
            kernel->run(k, buf, n);
        calls += batch;
        batch *= 2;
        elapsed = now_seconds() - start;
    }
    return (double)calls / elapsed;
}

static int fill_buffers(bench_buffers *buf, const sym_kernels *scalar)
{
    buf->a = malloc(MAX_SIZE * sizeof(float));
    buf->b = malloc(MAX_SIZE * sizeof(float));
    buf->out = malloc(MAX_SIZE * sizeof(float));
    buf->cos_row = malloc(MAX_SIZE * sizeof(float));
    buf->sin_row = malloc(MAX_SIZE * sizeof(float));
    buf->half = malloc(MAX_SIZE * 2);
    if (!buf->a || !buf->b || !buf->out || !buf->cos_row || !buf->sin_row || !buf->half)
        return -1;
    uint32_t state = 12345;
    for (size_t i = 0; i < MAX_SIZE; i++) {
        state = state * 1664525u + 1013904223u;
        buf->a[i] = (float)(state >> 8) / 16777216.0f * 8.0f - 4.0f;
        buf->b[i] = buf->a[(i * 7) % MAX_SIZE] * 0.5f;
        buf->out[i] = buf->a[i];
        buf->cos_row[i] = 0.8f;
        buf->sin_row[i] = 0.6f;
    }
    /* Values in [-4, 4] are normal numbers in both bf16 and f16. */
    scalar->f32_to_bf16(buf->half, buf->a, MAX_SIZE);
    return 0;
}

int main(int argc, char **argv)
{
    double min_seconds = argc > 1 ? atof(argv[1]) : 0.2;
    const sym_kernels *variants[SYM_SIMD_VARIANT_COUNT] = {0};
    sym_error err;
    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
        if (sym_kernels_get((sym_simd_variant)v, &variants[v], &err) != SYM_OK) {
            variants[v] = NULL;
            printf("skipped: %s\n", err.message);
        }
    }
    bench_buffers buf;
    if (variants[SYM_SIMD_SCALAR] == NULL || fill_buffers(&buf, variants[0]) != 0) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }

    printf("%-12s %6s", "kernel", "n");
    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++)
        if (variants[v] != NULL)
            printf(" %9s GB/s %6s", variants[v]->name, "ratio");
    printf("\n");
    for (size_t ki = 0; ki < KERNEL_COUNT; ki++) {
        for (size_t si = 0; si < SIZE_COUNT; si++) {
            size_t n = sizes[si];
            double scalar_rate = 0.0;
            printf("%-12s %6zu", kernels[ki].name, n);
            for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
                if (variants[v] == NULL)
                    continue;
                double rate = measure(&kernels[ki], variants[v], &buf, n, min_seconds);
                if (v == SYM_SIMD_SCALAR)
                    scalar_rate = rate;
                double gbps = rate * (double)n * kernels[ki].bytes_per_element * 1e-9;
                printf(" %14.2f %6.2f", gbps, rate / scalar_rate);
            }
            printf("\n");
        }
    }
    return 0;
}
