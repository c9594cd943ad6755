/* Fusion arithmetic against identities and brute force: multi-SLERP equals SLERP for two
 * sources, the Gram-matrix fold equals SLERP applied to explicit vectors, SLERP keeps unit
 * vectors on the sphere, and f32 -> bf16/f16 rounds to the nearest value, ties to even. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "symphony/fusion.h"
#include "testlib.h"

#define LEN 257

static uint64_t rng_state = 12345;

static double next_uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}

static void fill(float *x, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((2.0 * next_uniform() - 1.0) * scale);
}

static void gram_of(const float *const *xs, size_t n, double *gram)
{
    memset(gram, 0, n * n * sizeof *gram);
    sym_fusion_gram_add(xs, n, LEN, gram);
}

/* SLERP of explicit double vectors, straight from the definition. */
static void slerp_vectors(const double *a, const double *b, double t, double *out)
{
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < LEN; i++) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    double c = dot / sqrt(na * nb);
    double theta = acos(c);
    for (size_t i = 0; i < LEN; i++)
        out[i] = c > SYM_SLERP_DOT_THRESHOLD
                     ? (1 - t) * a[i] + t * b[i]
                     : (sin((1 - t) * theta) * a[i] + sin(t * theta) * b[i]) / sin(theta);
}

static void test_multi_equals_slerp_for_two(void)
{
    float a[LEN], b[LEN];
    const float *xs[2] = {a, b};
    for (int trial = 0; trial < 20; trial++) {
        fill(a, LEN, 1.0);
        fill(b, LEN, 0.5 + trial);
        double gram[4], w0 = 0.05 * trial, t = 1.0 - w0;
        gram_of(xs, 2, gram);
        double weights[2] = {w0, t}, multi[2], pair[2];
        sym_multi_slerp_coefficients(gram, weights, 2, multi);
        sym_slerp_coefficients(gram, t, pair);
        CHECKF(multi[0] == pair[0] && multi[1] == pair[1], "trial %d: (%g, %g) vs (%g, %g)",
               trial, multi[0], multi[1], pair[0], pair[1]);
    }
}

static void test_fold_matches_explicit_vectors(void)
{
    float x[3][LEN];
    const float *xs[3] = {x[0], x[1], x[2]};
    for (int i = 0; i < 3; i++)
        fill(x[i], LEN, 1.0 + i);
    double gram[9], weights[3] = {0.2, 0.3, 0.5}, coef[3];
    gram_of(xs, 3, gram);
    sym_multi_slerp_coefficients(gram, weights, 3, coef);

    double v[3][LEN], r2[LEN], r3[LEN];
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < LEN; j++)
            v[i][j] = x[i][j];
    slerp_vectors(v[0], v[1], 0.3 / 0.5, r2);
    slerp_vectors(r2, v[2], 0.5 / 1.0, r3);
    double worst = 0;
    for (size_t j = 0; j < LEN; j++) {
        double got = coef[0] * v[0][j] + coef[1] * v[1][j] + coef[2] * v[2][j];
        worst = fmax(worst, fabs(got - r3[j]));
    }
    CHECKF(worst < 1e-12, "fold differs from nested SLERP by %g", worst);
}

static void test_parallel_is_weighted_mean(void)
{
    float a[LEN], b[LEN], c[LEN];
    fill(a, LEN, 1.0);
    for (size_t j = 0; j < LEN; j++) {
        b[j] = 2.0f * a[j];
        c[j] = 0.5f * a[j];
    }
    const float *xs[3] = {a, b, c};
    double gram[9], weights[3] = {0.5, 0.25, 0.25}, coef[3];
    gram_of(xs, 3, gram);
    sym_multi_slerp_coefficients(gram, weights, 3, coef);
    for (int i = 0; i < 3; i++)
        CHECKF(fabs(coef[i] - weights[i]) < 1e-15, "coef[%d] = %g", i, coef[i]);
}

static void test_slerp_stays_on_sphere(void)
{
    float a[LEN], b[LEN];
    fill(a, LEN, 1.0);
    fill(b, LEN, 1.0);
    double na = 0, nb = 0;
    for (size_t j = 0; j < LEN; j++) {
        na += (double)a[j] * (double)a[j];
        nb += (double)b[j] * (double)b[j];
    }
    for (size_t j = 0; j < LEN; j++) {
        a[j] = (float)((double)a[j] / sqrt(na));
        b[j] = (float)((double)b[j] / sqrt(nb));
    }
    const float *xs[2] = {a, b};
    double gram[4];
    gram_of(xs, 2, gram);
    for (double t = 0.0; t <= 1.0; t += 0.125) {
        double coef[2];
        sym_slerp_coefficients(gram, t, coef);
        double norm2 = coef[0] * coef[0] * gram[0] + 2 * coef[0] * coef[1] * gram[1] +
                       coef[1] * coef[1] * gram[3];
        CHECKF(fabs(norm2 - 1.0) < 1e-6, "t = %g: |slerp|^2 = %.9f", t, norm2);
    }
}

static float from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Nearest representable value among lo and hi (adjacent), ties to the even pattern. */
static uint32_t nearest(double x, double lo, double hi, uint32_t lo_bits)
{
    double dl = x - lo, dh = hi - x;
    if (dl < dh)
        return lo_bits;
    if (dh < dl)
        return lo_bits + 1;
    return (lo_bits & 1u) ? lo_bits + 1 : lo_bits;
}

static void test_bf16_round_to_nearest_even(void)
{
    for (int i = 0; i < 200000; i++) {
        uint32_t bits = (uint32_t)(next_uniform() * 4294967296.0);
        if (i < 4)
            bits = (uint32_t[]){0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x00008000u}[i];
        float f = from_bits(bits);
        if (!isfinite(f))
            continue;
        uint8_t out[2];
        uint64_t overflow = 0;
        sym_convert_f32(&f, 1, SYM_DTYPE_BF16, out, &overflow, NULL);
        uint32_t got = (uint32_t)(out[0] | out[1] << 8);
        uint32_t abs_bits = bits & 0x7fffffffu;
        uint32_t lo = abs_bits >> 16;
        double lo_value = (double)from_bits(lo << 16);
        double hi_value = lo == 0x7f7fu ? (double)INFINITY : (double)from_bits((lo + 1) << 16);
        if (lo == 0x7f7fu && abs_bits > 0x7f7f7fffu)
            hi_value = ldexp(1.0, 128); /* the next step after the largest bf16 */
        uint32_t want = nearest(fabs((double)f), lo_value, hi_value, lo) | ((bits >> 16) & 0x8000u);
        CHECKF(got == want, "bits %08x: bf16 %04x, expected %04x", bits, got, want);
        if (got != want)
            return;
    }
    float specials[3] = {NAN, INFINITY, -INFINITY};
    uint8_t out[6];
    uint64_t overflow = 0;
    sym_convert_f32(specials, 3, SYM_DTYPE_BF16, out, &overflow, NULL);
    uint16_t nan_bits = (uint16_t)(out[0] | out[1] << 8);
    CHECK((nan_bits & 0x7f80u) == 0x7f80u); /* NaN stays NaN */
    CHECK((nan_bits & 0x007fu) != 0);
    CHECK(out[2] == 0x80);
    CHECK(out[3] == 0x7f);
    CHECK(out[4] == 0x80);
    CHECK(out[5] == 0xff);
}

static double f16_value(uint32_t h)
{
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    return e == 0 ? ldexp(m, -24) : ldexp(1024 + m, (int)e - 25);
}

static void test_f16_round_to_nearest_even(void)
{
    for (int i = 0; i < 200000; i++) {
        double x = ldexp(next_uniform(), -26 + (int)(next_uniform() * 42)); /* < 65536 */
        float f = (float)x;
        uint8_t out[2];
        uint64_t overflow = 0;
        sym_convert_f32(&f, 1, SYM_DTYPE_F16, out, &overflow, NULL);
        uint32_t got = (uint32_t)(out[0] | out[1] << 8);
        uint32_t lo = 0;
        for (uint32_t step = 0x4000; step > 0; step >>= 1)
            if (lo + step < 0x7c00u && f16_value(lo + step) <= (double)f)
                lo += step;
        double hi = lo + 1 == 0x7c00u ? 65536.0 : f16_value(lo + 1);
        uint32_t want = nearest((double)f, f16_value(lo), hi, lo);
        CHECKF(got == want, "%.9g: f16 %04x, expected %04x", (double)f, got, want);
        CHECKF(overflow == (want == 0x7c00u), "%.9g: overflow count %llu", (double)f,
               (unsigned long long)overflow);
        if (got != want)
            return;
    }
    float edge[2] = {65504.0f, 65520.0f};
    uint8_t out[4];
    uint64_t overflow = 0;
    sym_convert_f32(edge, 2, SYM_DTYPE_F16, out, &overflow, NULL);
    CHECK(out[0] == 0xff); /* 65504 is the largest f16 */
    CHECK(out[1] == 0x7b);
    CHECK(out[2] == 0x00); /* 65520 rounds to Inf */
    CHECK(out[3] == 0x7c);
    CHECK(overflow == 1);
}

int main(void)
{
    test_multi_equals_slerp_for_two();
    test_fold_matches_explicit_vectors();
    test_parallel_is_weighted_mean();
    test_slerp_stays_on_sphere();
    test_bf16_round_to_nearest_even();
    test_f16_round_to_nearest_even();
    return test_finish("test_fusion");
}
