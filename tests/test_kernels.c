/* Elementwise kernels: the scalar reference against independent definitions (exhaustive
 * over 16-bit patterns, double-precision formulas), then every vector variant the CPU has
 * against the scalar reference on many lengths, unaligned pointers and edge inputs. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/kernels.h"
#include "testlib.h"

/* Lengths around the 8- and 16-lane boundaries, plus model-sized rows. */
static const size_t lengths[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33,
                                 63, 64, 65, 100, 127, 1000, 4096, 4099, 11008};
#define LENGTH_COUNT (sizeof lengths / sizeof lengths[0])
#define MAX_LENGTH 11008

/* Guard floats written after each output, which no kernel may change. */
#define GUARD 16
#define GUARD_VALUE 12345.0f

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint32_t random_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

/* Uniform in [-range, range). */
static float random_float(float range)
{
    return ((float)random_u32() / 4294967296.0f * 2.0f - 1.0f) * range;
}

static uint32_t bits_of(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static float float_of(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static uint16_t u16_at(const unsigned char *buffer, size_t i)
{
    uint16_t value;
    memcpy(&value, buffer + 2 * i, sizeof value);
    return value;
}

static void put_u16(unsigned char *buffer, size_t i, uint16_t value)
{
    memcpy(buffer + 2 * i, &value, sizeof value);
}

/* Returns the distance in units in the last place, counting across zero, or 0 for two
 * NaNs. */
static uint32_t ulp_distance(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b) ? 0 : UINT32_MAX;
    int64_t ia = bits_of(a), ib = bits_of(b);
    if (ia & 0x80000000)
        ia = 0x80000000 - ia;
    if (ib & 0x80000000)
        ib = 0x80000000 - ib;
    int64_t d = ia > ib ? ia - ib : ib - ia;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* True when a and b are the same float, or both NaN. */
static int same_float(float a, float b)
{
    return (isnan(a) && isnan(b)) || bits_of(a) == bits_of(b);
}

static int close_rel(double got, double expected, double rel, double abs_floor)
{
    if (isnan(expected))
        return isnan(got);
    if (isinf(expected))
        return got == expected;
    return fabs(got - expected) <= rel * fabs(expected) + abs_floor;
}

static void set_guard(float *buffer, size_t n)
{
    for (size_t i = 0; i < GUARD; i++)
        buffer[n + i] = GUARD_VALUE;
}

static int guard_intact(const float *buffer, size_t n)
{
    for (size_t i = 0; i < GUARD; i++) {
        if (bits_of(buffer[n + i]) != bits_of(GUARD_VALUE))
            return 0;
    }
    return 1;
}

/* ---- Independent definitions for the scalar reference ---- */

/* Decodes a bf16 or f16 pattern with ldexp: exponent_bits, bias and mantissa_bits give
 * the format. */
static double decode_small_float(uint16_t h, int exponent_bits, int mantissa_bits)
{
    int exponent_max = (1 << exponent_bits) - 1;
    int bias = exponent_max / 2;
    double sign = (h >> 15) ? -1.0 : 1.0;
    int exponent = (h >> mantissa_bits) & exponent_max;
    int mantissa = h & ((1 << mantissa_bits) - 1);
    if (exponent == exponent_max)
        return mantissa != 0 ? (double)NAN : sign * (double)INFINITY;
    if (exponent == 0)
        return sign * ldexp(mantissa, 1 - bias - mantissa_bits);
    return sign * ldexp(mantissa + (1 << mantissa_bits), exponent - bias - mantissa_bits);
}

static void check_widening_exhaustive(const sym_kernels *k)
{
    static unsigned char patterns[2 * 65536 + 1];
    static float out_bf16[65536], out_f16[65536];
    /* Start one byte in, so the 16-bit source is misaligned. */
    unsigned char *src = patterns + 1;
    for (uint32_t h = 0; h < 65536; h++)
        put_u16(src, h, (uint16_t)h);
    k->bf16_to_f32(out_bf16, src, 65536);
    k->f16_to_f32(out_f16, src, 65536);

    int bad_bf16 = 0, bad_f16 = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float want_bf16 = (float)decode_small_float((uint16_t)h, 8, 7);
        float want_f16 = (float)decode_small_float((uint16_t)h, 5, 10);
        if (!same_float(out_bf16[h], want_bf16) || !!signbit(out_bf16[h]) != (h >> 15 != 0))
            bad_bf16++;
        if (!same_float(out_f16[h], want_f16) || !!signbit(out_f16[h]) != (h >> 15 != 0))
            bad_f16++;
        /* A NaN keeps its payload bits, made quiet. */
        if (isnan(want_bf16) && bits_of(out_bf16[h]) != h << 16)
            bad_bf16++;
        if (isnan(want_f16) && bits_of(out_f16[h]) != (((h & 0x8000u) << 16) | 0x7fc00000 |
                                                       ((h & 0x3ffu) << 13)))
            bad_f16++;
    }
    CHECKF(bad_bf16 == 0, "%s bf16_to_f32: %d of 65536 patterns wrong", k->name, bad_bf16);
    CHECKF(bad_f16 == 0, "%s f16_to_f32: %d of 65536 patterns wrong", k->name, bad_f16);
}

/* Round to nearest, ties to even, to the 16-bit pattern among below (value lo) and
 * above (value hi) that is nearer to x. */
static uint16_t pick_nearest(double x, uint16_t below, double lo, uint16_t above, double hi)
{
    double d_below = x - lo, d_above = hi - x;
    if (d_below < d_above)
        return below;
    if (d_above < d_below)
        return above;
    return (below & 1) == 0 ? below : above;
}

static uint16_t reference_bf16(float x)
{
    uint32_t bits = bits_of(x);
    uint32_t magnitude = bits & 0x7fffffff;
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    if (magnitude > 0x7f800000)
        return (uint16_t)((bits >> 16) | 0x40);
    uint16_t below = (uint16_t)(magnitude >> 16);
    uint16_t above = (uint16_t)(below + 1);
    double lo = decode_small_float(below, 8, 7);
    /* RNE rounds past the largest finite value as if the exponent range went on. */
    double hi = above == 0x7f80 ? ldexp(1.0, 128) : decode_small_float(above, 8, 7);
    if (lo == fabs((double)x))
        return (uint16_t)(sign | below);
    return (uint16_t)(sign | pick_nearest(fabs((double)x), below, lo, above, hi));
}

static uint16_t reference_f16(float x)
{
    uint32_t bits = bits_of(x);
    uint32_t magnitude = bits & 0x7fffffff;
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    if (magnitude > 0x7f800000)
        return (uint16_t)(sign | 0x7e00 | ((magnitude >> 13) & 0x3ff));
    double a = fabs((double)x);
    if (isinf(a))
        return (uint16_t)(sign | 0x7c00);

    /* Largest finite positive pattern whose value is <= a (values grow with patterns). */
    uint16_t low = 0, high = 0x7bff;
    while (low < high) {
        uint16_t middle = (uint16_t)((low + high + 1) / 2);
        if (decode_small_float(middle, 5, 10) <= a)
            low = middle;
        else
            high = (uint16_t)(middle - 1);
    }
    double lo = decode_small_float(low, 5, 10);
    if (lo == a)
        return (uint16_t)(sign | low);
    double hi = low == 0x7bff ? 65536.0 : decode_small_float((uint16_t)(low + 1), 5, 10);
    return (uint16_t)(sign | pick_nearest(a, low, lo, (uint16_t)(low + 1), hi));
}

/* Inputs for narrowing: each 16-bit value, the exact midpoint to the next one (a tie),
 * one f32 ulp either side of that midpoint, and random bit patterns. */
static size_t narrowing_inputs(float *x, size_t capacity, int f16)
{
    size_t count = 0;
    for (uint32_t h = 0; h < 65536 && count + 4 <= capacity; h++) {
        float value = (float)decode_small_float((uint16_t)h, f16 ? 5 : 8, f16 ? 10 : 7);
        float next = (float)decode_small_float((uint16_t)(h + 1), f16 ? 5 : 8, f16 ? 10 : 7);
        x[count++] = value;
        if (!isfinite(value) || !isfinite(next) || (h & 0x7fff) == 0x7fff)
            continue;
        float middle = (float)(((double)value + (double)next) / 2);
        x[count++] = middle;
        x[count++] = nextafterf(middle, INFINITY);
        x[count++] = nextafterf(middle, -INFINITY);
    }
    while (count < capacity)
        x[count++] = float_of(random_u32());
    return count;
}

#define NARROW_COUNT (4 * 65536 + 200000)

static void check_narrowing_reference(const sym_kernels *k)
{
    float *x = malloc(NARROW_COUNT * sizeof *x);
    unsigned char *out = malloc(2 * NARROW_COUNT + 1);
    CHECK(x != NULL);
    CHECK(out != NULL);
    if (x == NULL || out == NULL)
        goto done;

    size_t n = narrowing_inputs(x, NARROW_COUNT, 0);
    k->f32_to_bf16(out + 1, x, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += u16_at(out + 1, i) != reference_bf16(x[i]);
    CHECKF(bad == 0, "%s f32_to_bf16: %zu of %zu inputs differ from RNE", k->name, bad, n);

    n = narrowing_inputs(x, NARROW_COUNT, 1);
    size_t overflows = k->f32_to_f16(out + 1, x, n);
    size_t expected_overflows = 0;
    bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t want = reference_f16(x[i]);
        bad += u16_at(out + 1, i) != want;
        expected_overflows += (want & 0x7fff) == 0x7c00 && isfinite(x[i]);
    }
    CHECKF(bad == 0, "%s f32_to_f16: %zu of %zu inputs differ from RNE", k->name, bad, n);
    CHECKF(overflows == expected_overflows, "%s f32_to_f16: %zu overflows reported, %zu",
           k->name, overflows, expected_overflows);
    CHECK(expected_overflows > 0);
done:
    free(x);
    free(out);
}

static void check_f16_overflow_boundary(const sym_kernels *k)
{
    const float x[] = {65504.0f, 65519.0f, nextafterf(65520.0f, 0), 65520.0f, -65520.0f,
                       65536.0f, FLT_MAX, INFINITY, -INFINITY, NAN};
    const uint16_t want[] = {0x7bff, 0x7bff, 0x7bff, 0x7c00, 0xfc00,
                             0x7c00, 0x7c00, 0x7c00, 0xfc00, 0x7e00};
    unsigned char out[2 * 10 + 1];
    size_t overflows = k->f32_to_f16(out + 1, x, 10);
    for (size_t i = 0; i < 10; i++)
        CHECKF(u16_at(out + 1, i) == want[i], "%s f32_to_f16(%g) = 0x%04x, expected 0x%04x",
               k->name, (double)x[i], u16_at(out + 1, i), want[i]);
    CHECKF(overflows == 4, "%s: %zu overflows, expected 4 (+-65520, 65536, FLT_MAX)",
           k->name, overflows);
}

static double reference_rms_scale(const float *x, size_t n, float eps)
{
    double sum = 0.0;
    for (size_t i = 0; i < n; i++)
        sum += (double)x[i] * (double)x[i];
    return 1.0 / sqrt(sum / (double)n + (double)eps);
}

static void check_scalar_math(const sym_kernels *k)
{
    static float x[MAX_LENGTH + GUARD], w[MAX_LENGTH], y[MAX_LENGTH + GUARD];
    static float cos_row[MAX_LENGTH], sin_row[MAX_LENGTH];

    for (size_t li = 0; li < LENGTH_COUNT; li++) {
        size_t n = lengths[li];
        for (size_t i = 0; i < n; i++) {
            x[i] = random_float(3.0f);
            w[i] = random_float(2.0f);
        }

        /* RMSNorm against the formula in double. */
        if (n > 0) {
            k->rmsnorm(y, x, w, n, 1e-5f);
            double s = reference_rms_scale(x, n, 1e-5f);
            size_t bad = 0;
            for (size_t i = 0; i < n; i++)
                bad += !close_rel(y[i], (double)w[i] * (double)x[i] * s, 1e-5, 1e-30);
            CHECKF(bad == 0, "scalar rmsnorm n=%zu: %zu elements off", n, bad);
        }

        /* Softmax and log-sum-exp against double sums. */
        for (size_t i = 0; i < n; i++)
            x[i] = random_float(20.0f);
        double m = -INFINITY, sum = 0.0;
        for (size_t i = 0; i < n; i++)
            m = fmax(m, x[i]);
        for (size_t i = 0; i < n; i++)
            sum += exp((double)x[i] - m);
        k->softmax(y, x, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            bad += !close_rel(y[i], exp((double)x[i] - m) / sum, 1e-5, 1e-30);
        CHECKF(bad == 0, "scalar softmax n=%zu: %zu elements off", n, bad);
        double lse = n > 0 ? m + log(sum) : -(double)INFINITY;
        CHECKF(close_rel(k->logsumexp(x, n), lse, 1e-6, 1e-6), "scalar logsumexp n=%zu", n);

        /* SwiGLU against silu in double. */
        for (size_t i = 0; i < n; i++) {
            x[i] = random_float(30.0f);
            w[i] = random_float(4.0f);
        }
        k->swiglu(y, x, w, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            double silu = (double)x[i] / (1.0 + exp(-(double)x[i]));
            bad += !close_rel(y[i], silu * (double)w[i], 1e-6, 1e-37);
        }
        CHECKF(bad == 0, "scalar swiglu n=%zu: %zu elements off", n, bad);

        /* Dot product and sum of squares against long double. */
        long double dot_ref = 0, sq_ref = 0, magnitude = 0;
        for (size_t i = 0; i < n; i++) {
            dot_ref += (long double)x[i] * w[i];
            sq_ref += (long double)x[i] * x[i];
            magnitude += fabsl((long double)x[i] * w[i]);
        }
        CHECKF(fabsl(k->dot(x, w, n) - dot_ref) <= 1e-13L * magnitude, "scalar dot n=%zu", n);
        CHECKF(fabsl(k->sum_squares(x, n) - sq_ref) <= 1e-13L * sq_ref,
               "scalar sum_squares n=%zu", n);

        /* RoPE on a row of head_dim = 2 * (n / 2) against the rotation in double. */
        size_t half = n / 2;
        for (size_t i = 0; i < half; i++) {
            double angle = (double)random_float(50.0f);
            cos_row[i] = (float)cos(angle);
            sin_row[i] = (float)sin(angle);
        }
        memcpy(y, x, n * sizeof *x);
        k->rope(y, cos_row, sin_row, 2 * half);
        bad = 0;
        for (size_t i = 0; i < half; i++) {
            double a = x[i], b = x[i + half], c = cos_row[i], s = sin_row[i];
            double eps = (double)FLT_EPSILON;
            double bound_lo = 2 * eps * (fabs(a * c) + fabs(b * s));
            double bound_hi = 2 * eps * (fabs(b * c) + fabs(a * s));
            bad += fabs((double)y[i] - (a * c - b * s)) > bound_lo;
            bad += fabs((double)y[i + half] - (b * c + a * s)) > bound_hi;
        }
        CHECKF(bad == 0, "scalar rope head_dim=%zu: %zu elements off", 2 * half, bad);
    }
}

/* Returns the maximum ulp error of k->exp against exp in double over 2^20 evenly spaced
 * points of [-104, 89], and the x where it occurs. */
static uint32_t exp_max_ulp(const sym_kernels *k, float *worst_x)
{
    enum { SWEEP = 1 << 20 };
    float *x = malloc(SWEEP * sizeof *x);
    float *y = malloc(SWEEP * sizeof *y);
    uint32_t worst = UINT32_MAX;
    if (x == NULL || y == NULL)
        goto done;
    for (size_t i = 0; i < SWEEP; i++)
        x[i] = -104.0f + 193.0f * (float)i / (float)SWEEP;
    k->exp(y, x, SWEEP);
    worst = 0;
    for (size_t i = 0; i < SWEEP; i++) {
        uint32_t d = ulp_distance(y[i], (float)exp((double)x[i]));
        if (d > worst) {
            worst = d;
            *worst_x = x[i];
        }
    }
done:
    free(x);
    free(y);
    return worst;
}

static void check_exp_specials(const sym_kernels *k)
{
    const float x[] = {-INFINITY, INFINITY, NAN, 0.0f, -0.0f, -1000.0f, 1000.0f,
                       -103.0f, 88.72f, 88.73f, -87.0f, 1e-30f};
    enum { COUNT = sizeof x / sizeof x[0] };
    float y[COUNT];
    k->exp(y, x, COUNT);
    CHECKF(y[0] == 0.0f && !signbit(y[0]), "%s exp(-Inf) = %g", k->name, (double)y[0]);
    CHECKF(y[1] == INFINITY, "%s exp(+Inf) = %g", k->name, (double)y[1]);
    CHECKF(isnan(y[2]), "%s exp(NaN) = %g", k->name, (double)y[2]);
    CHECKF(y[3] == 1.0f && y[4] == 1.0f, "%s exp(+-0)", k->name);
    CHECKF(y[5] == 0.0f, "%s exp(-1000) = %g", k->name, (double)y[5]);
    CHECKF(y[6] == INFINITY, "%s exp(1000) = %g", k->name, (double)y[6]);
    CHECKF(ulp_distance(y[7], (float)exp(-103.0)) <= 1, "%s exp(-103), a denormal", k->name);
    CHECKF(isfinite(y[8]) && ulp_distance(y[8], (float)exp((double)88.72f)) <= 2, "%s exp(88.72)",
           k->name);
    CHECKF(y[9] == INFINITY, "%s exp(88.73) = %g", k->name, (double)y[9]);
    CHECKF(ulp_distance(y[10], (float)exp(-87.0)) <= 2, "%s exp(-87)", k->name);
    CHECKF(y[11] == 1.0f, "%s exp(1e-30)", k->name);
}

/* ---- Vector variants against the scalar reference ---- */

/* Floats that stress conversions and the special-value rules. */
static const float edge_values[] = {
    0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MIN, -FLT_MIN, FLT_TRUE_MIN,
    -FLT_TRUE_MIN, 1e-40f, FLT_MAX, -FLT_MAX, 65504.0f, 65519.0f, 65520.0f, -65520.0f,
    65536.0f, 6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f, 1.00390625f, 1.01171875f,
    -1.00390625f, 3.3961e38f, 1.0f, -1.0f, 0.5f,
};
#define EDGE_COUNT (sizeof edge_values / sizeof edge_values[0])

/* Fills x with random values of magnitude up to range, with every 7th element taken from
 * the edge values when with_edges is set. Includes signaling NaN bit patterns. */
static void fill_row(float *x, size_t n, float range, int with_edges)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = random_float(range);
        if (with_edges && i % 7 == 3)
            x[i] = edge_values[random_u32() % EDGE_COUNT];
        if (with_edges && i % 61 == 5)
            x[i] = float_of(0x7f800001u | (random_u32() & 0x803fffffu)); /* signaling NaN */
    }
}

static void check_conversions(const sym_kernels *v, const sym_kernels *ref, size_t n)
{
    static float x[MAX_LENGTH];
    static unsigned char got16[2 * (MAX_LENGTH + GUARD) + 1], want16[2 * MAX_LENGTH];
    static float got[MAX_LENGTH + GUARD + 1], want[MAX_LENGTH];
    unsigned char *src16 = got16 + 1; /* odd address */

    fill_row(x, n, 70000.0f, 1);
    memset(got16, 0xab, sizeof got16);
    v->f32_to_bf16(src16, x, n);
    ref->f32_to_bf16(want16, x, n);
    CHECKF(memcmp(src16, want16, 2 * n) == 0, "%s f32_to_bf16 n=%zu", v->name, n);
    CHECKF(src16[2 * n] == 0xab, "%s f32_to_bf16 n=%zu wrote past the end", v->name, n);

    /* Widen those bf16 values again, into an f32 buffer off by one float. */
    set_guard(got + 1, n);
    v->bf16_to_f32(got + 1, src16, n);
    ref->bf16_to_f32(want, src16, n);
    CHECKF(memcmp(got + 1, want, n * sizeof *want) == 0, "%s bf16_to_f32 n=%zu", v->name, n);
    CHECKF(guard_intact(got + 1, n), "%s bf16_to_f32 n=%zu wrote past the end", v->name, n);

    memset(got16, 0xab, sizeof got16);
    size_t overflows = v->f32_to_f16(src16, x, n);
    size_t want_overflows = ref->f32_to_f16(want16, x, n);
    CHECKF(memcmp(src16, want16, 2 * n) == 0, "%s f32_to_f16 n=%zu", v->name, n);
    CHECKF(overflows == want_overflows, "%s f32_to_f16 n=%zu: %zu overflows, expected %zu",
           v->name, n, overflows, want_overflows);
    CHECKF(src16[2 * n] == 0xab, "%s f32_to_f16 n=%zu wrote past the end", v->name, n);

    set_guard(got + 1, n);
    v->f16_to_f32(got + 1, src16, n);
    ref->f16_to_f32(want, src16, n);
    CHECKF(memcmp(got + 1, want, n * sizeof *want) == 0, "%s f16_to_f32 n=%zu", v->name, n);
    CHECKF(guard_intact(got + 1, n), "%s f16_to_f32 n=%zu wrote past the end", v->name, n);
}

static void check_widening_matches(const sym_kernels *v, const sym_kernels *ref)
{
    static unsigned char src[2 * 65536 + 1];
    static float got[65536], want[65536];
    for (uint32_t h = 0; h < 65536; h++)
        put_u16(src + 1, h, (uint16_t)h);
    v->bf16_to_f32(got, src + 1, 65536);
    ref->bf16_to_f32(want, src + 1, 65536);
    CHECKF(memcmp(got, want, sizeof got) == 0, "%s bf16_to_f32 on all patterns", v->name);
    v->f16_to_f32(got, src + 1, 65536);
    ref->f16_to_f32(want, src + 1, 65536);
    CHECKF(memcmp(got, want, sizeof got) == 0, "%s f16_to_f32 on all patterns", v->name);
}

static void check_rmsnorm(const sym_kernels *v, const sym_kernels *ref, size_t n)
{
    static float x[MAX_LENGTH + 1], w[MAX_LENGTH + 1], got[MAX_LENGTH + GUARD + 1];
    static float again[MAX_LENGTH + 1], want[MAX_LENGTH];
    if (n == 0)
        return;
    fill_row(x + 1, n, 5.0f, 0);
    fill_row(w + 1, n, 2.0f, 0);
    x[1] = 1e-40f; /* a denormal input */
    set_guard(got + 1, n);
    v->rmsnorm(got + 1, x + 1, w + 1, n, 1e-6f);
    v->rmsnorm(again + 1, x + 1, w + 1, n, 1e-6f);
    ref->rmsnorm(want, x + 1, w + 1, n, 1e-6f);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !close_rel(got[1 + i], want[i], 2e-6, 1e-38);
    CHECKF(bad == 0, "%s rmsnorm n=%zu: %zu elements off by > 2e-6 relative", v->name, n, bad);
    CHECKF(memcmp(got + 1, again + 1, n * sizeof *got) == 0, "%s rmsnorm n=%zu repeat",
           v->name, n);
    CHECKF(guard_intact(got + 1, n), "%s rmsnorm n=%zu wrote past the end", v->name, n);

    /* In place gives the same bits. */
    v->rmsnorm(x + 1, x + 1, w + 1, n, 1e-6f);
    CHECKF(memcmp(x + 1, again + 1, n * sizeof *x) == 0, "%s rmsnorm n=%zu in place",
           v->name, n);
}

static void check_swiglu(const sym_kernels *v, const sym_kernels *ref, size_t n)
{
    static float g[MAX_LENGTH + 1], u[MAX_LENGTH + 1], got[MAX_LENGTH + GUARD + 1];
    static float want[MAX_LENGTH];
    fill_row(g + 1, n, 40.0f, 1);
    fill_row(u + 1, n, 4.0f, 0);
    set_guard(got + 1, n);
    v->swiglu(got + 1, g + 1, u + 1, n);
    ref->swiglu(want, g + 1, u + 1, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += !close_rel(got[1 + i], want[i], 1e-6, 1e-37);
    CHECKF(bad == 0, "%s swiglu n=%zu: %zu elements off by > 1e-6 relative", v->name, n, bad);
    CHECKF(guard_intact(got + 1, n), "%s swiglu n=%zu wrote past the end", v->name, n);
}

static void check_swiglu_specials(const sym_kernels *k)
{
    const float g[] = {-100.0f, 100.0f, -INFINITY, -INFINITY, INFINITY, NAN, -88.0f, 0.0f,
                       -90.0f};
    const float u[] = {3.0f, 3.0f, 2.0f, INFINITY, 2.0f, 1.0f, 1.0f, 5.0f, 1.0f};
    enum { COUNT = sizeof g / sizeof g[0] };
    float out[COUNT];
    k->swiglu(out, g, u, COUNT);
    CHECKF(isfinite(out[0]) && fabsf(out[0]) < 1e-30f, "%s swiglu(-100) = %g", k->name,
           (double)out[0]);
    CHECKF(out[1] == 300.0f, "%s swiglu(100) * 3 = %g", k->name, (double)out[1]);
    CHECKF(out[2] == 0.0f, "%s swiglu(-Inf) * 2 = %g", k->name, (double)out[2]);
    CHECKF(isnan(out[3]), "%s swiglu(-Inf) * Inf = %g, expected 0 * Inf", k->name,
           (double)out[3]);
    CHECKF(out[4] == INFINITY, "%s swiglu(+Inf) = %g", k->name, (double)out[4]);
    CHECKF(isnan(out[5]), "%s swiglu(NaN) = %g", k->name, (double)out[5]);
    CHECKF(close_rel(out[6], -88.0 / (1.0 + exp(88.0)), 1e-6, 0), "%s swiglu(-88) = %g",
           k->name, (double)out[6]);
    CHECKF(out[7] == 0.0f, "%s swiglu(0) = %g", k->name, (double)out[7]);
    CHECKF(out[8] == 0.0f && !isnan(out[8]), "%s swiglu(-90) = %g", k->name, (double)out[8]);
}

static void check_softmax(const sym_kernels *v, const sym_kernels *ref, size_t n)
{
    static float x[MAX_LENGTH + 1], got[MAX_LENGTH + GUARD + 1], want[MAX_LENGTH];
    fill_row(x + 1, n, 30.0f, 0);
    if (n > 2)
        x[2] = -INFINITY; /* a masked position */
    set_guard(got + 1, n);
    v->softmax(got + 1, x + 1, n);
    ref->softmax(want, x + 1, n);
    size_t bad = 0;
    double total = 0.0;
    for (size_t i = 0; i < n; i++) {
        bad += !close_rel(got[1 + i], want[i], 1e-5, 1e-37);
        total += (double)got[1 + i];
    }
    CHECKF(bad == 0, "%s softmax n=%zu: %zu elements off by > 1e-5 relative", v->name, n, bad);
    CHECKF(n == 0 || fabs(total - 1.0) < 1e-5, "%s softmax n=%zu sums to %.9g", v->name, n,
           total);
    CHECKF(guard_intact(got + 1, n), "%s softmax n=%zu wrote past the end", v->name, n);

    float lse = v->logsumexp(x + 1, n), lse_want = ref->logsumexp(x + 1, n);
    CHECKF(close_rel(lse, lse_want, 1e-6, 1e-6), "%s logsumexp n=%zu: %.9g, expected %.9g",
           v->name, n, (double)lse, (double)lse_want);

    /* In place. */
    memcpy(want, got + 1, n * sizeof *want);
    v->softmax(x + 1, x + 1, n);
    CHECKF(memcmp(x + 1, want, n * sizeof *want) == 0, "%s softmax n=%zu in place", v->name,
           n);
}

static void check_softmax_specials(const sym_kernels *k)
{
    float row[19], out[19];
    for (size_t i = 0; i < 19; i++)
        row[i] = -INFINITY;
    CHECKF(k->logsumexp(row, 19) == -INFINITY, "%s logsumexp of -Inf row", k->name);
    CHECKF(k->logsumexp(row, 0) == -INFINITY, "%s logsumexp of empty row", k->name);
    row[17] = 2.0f;
    k->softmax(out, row, 19);
    CHECKF(out[17] == 1.0f && out[0] == 0.0f && out[18] == 0.0f,
           "%s softmax with one finite element", k->name);
    CHECKF(k->logsumexp(row, 19) == 2.0f, "%s logsumexp with one finite element", k->name);
    row[3] = INFINITY;
    CHECKF(k->logsumexp(row, 19) == INFINITY, "%s logsumexp with +Inf", k->name);
    k->softmax(out, row, 19);
    CHECKF(isnan(out[3]), "%s softmax with +Inf gives NaN", k->name);
    row[5] = NAN;
    CHECKF(isnan(k->logsumexp(row, 19)), "%s logsumexp with NaN and +Inf", k->name);
    row[3] = 1.0f;
    CHECKF(isnan(k->logsumexp(row, 19)), "%s logsumexp with NaN", k->name);
    k->softmax(out, row, 19);
    CHECKF(isnan(out[0]) && isnan(out[17]), "%s softmax with NaN", k->name);

    /* Large logits: exp of x - max never overflows. */
    for (size_t i = 0; i < 19; i++)
        row[i] = 1e30f + (float)i * 1e23f;
    CHECKF(isfinite(k->logsumexp(row, 19)), "%s logsumexp of large logits", k->name);
}

static void check_rope(const sym_kernels *v, const sym_kernels *ref, size_t n)
{
    static float x[MAX_LENGTH + GUARD + 1], want[MAX_LENGTH];
    static float cos_row[MAX_LENGTH], sin_row[MAX_LENGTH];
    size_t head_dim = n & ~(size_t)1;
    for (size_t i = 0; i < head_dim / 2; i++) {
        double angle = (double)random_float(100.0f);
        cos_row[i] = (float)cos(angle);
        sin_row[i] = (float)sin(angle);
    }
    fill_row(x + 1, head_dim, 10.0f, 0);
    set_guard(x + 1, head_dim);
    memcpy(want, x + 1, head_dim * sizeof *want);
    v->rope(x + 1, cos_row, sin_row, head_dim);
    ref->rope(want, cos_row, sin_row, head_dim);
    CHECKF(memcmp(x + 1, want, head_dim * sizeof *want) == 0, "%s rope head_dim=%zu",
           v->name, head_dim);
    CHECKF(guard_intact(x + 1, head_dim), "%s rope head_dim=%zu wrote past the end", v->name,
           head_dim);
}

static void check_vector_helpers(const sym_kernels *v, const sym_kernels *ref, size_t n)
{
    static float a[MAX_LENGTH + 1], b[MAX_LENGTH + 1];
    static float got[MAX_LENGTH + GUARD + 1], want[MAX_LENGTH];
    fill_row(a + 1, n, 8.0f, 0);
    fill_row(b + 1, n, 8.0f, 0);

    double magnitude = 0.0, squares = 0.0;
    for (size_t i = 0; i < n; i++) {
        magnitude += fabs((double)a[1 + i] * (double)b[1 + i]);
        squares += (double)a[1 + i] * (double)a[1 + i];
    }
    double d = v->dot(a + 1, b + 1, n), d_want = ref->dot(a + 1, b + 1, n);
    CHECKF(fabs(d - d_want) <= 1e-13 * magnitude, "%s dot n=%zu: %.17g, expected %.17g",
           v->name, n, d, d_want);
    double s = v->sum_squares(a + 1, n), s_want = ref->sum_squares(a + 1, n);
    CHECKF(fabs(s - s_want) <= 1e-13 * squares, "%s sum_squares n=%zu", v->name, n);

    memcpy(got + 1, b + 1, n * sizeof *b);
    memcpy(want, b + 1, n * sizeof *b);
    set_guard(got + 1, n);
    v->axpy(got + 1, -0.37f, a + 1, n);
    ref->axpy(want, -0.37f, a + 1, n);
    CHECKF(memcmp(got + 1, want, n * sizeof *want) == 0, "%s axpy n=%zu", v->name, n);
    v->scale(got + 1, 1.7f, n);
    ref->scale(want, 1.7f, n);
    CHECKF(memcmp(got + 1, want, n * sizeof *want) == 0, "%s scale n=%zu", v->name, n);
    v->add(got + 1, a + 1, n);
    ref->add(want, a + 1, n);
    CHECKF(memcmp(got + 1, want, n * sizeof *want) == 0, "%s add n=%zu", v->name, n);
    CHECKF(guard_intact(got + 1, n), "%s axpy/scale/add n=%zu wrote past the end", v->name, n);
}

static void check_variant(const sym_kernels *v, const sym_kernels *ref)
{
    check_widening_matches(v, ref);
    check_narrowing_reference(v);
    check_f16_overflow_boundary(v);
    check_exp_specials(v);
    check_swiglu_specials(v);
    check_softmax_specials(v);
    for (size_t li = 0; li < LENGTH_COUNT; li++) {
        size_t n = lengths[li];
        check_conversions(v, ref, n);
        check_rmsnorm(v, ref, n);
        check_swiglu(v, ref, n);
        check_softmax(v, ref, n);
        check_rope(v, ref, n);
        check_vector_helpers(v, ref, n);
    }

    float worst_x = 0.0f;
    uint32_t worst = exp_max_ulp(v, &worst_x);
    printf("%s: exp max error %u ulp (at x = %.9g)\n", v->name, worst, (double)worst_x);
    CHECKF(worst <= 2, "%s exp: %u ulp at x = %.9g, expected <= 2", v->name, worst,
           (double)worst_x);
}

/* ---- Dispatch ---- */

static void check_dispatch(void)
{
    sym_error err;
    sym_simd_variant chosen;
    CHECK(sym_simd_choose("scalar", &chosen, &err) == SYM_OK);
    CHECK(chosen == SYM_SIMD_SCALAR);

    CHECK(sym_simd_choose("sse9", &chosen, &err) == SYM_ERR_INVALID);
    CHECKF(strstr(err.message, "SYMPHONY_SIMD='sse9'") != NULL, "message: %s", err.message);
    CHECKF(strstr(err.message, "avx512") != NULL, "message: %s", err.message);

    /* Unset picks the widest variant sym_kernels_get accepts. */
    CHECK(sym_simd_choose(NULL, &chosen, &err) == SYM_OK);
    sym_simd_variant widest = SYM_SIMD_SCALAR;
    for (int v = SYM_SIMD_AVX512; v > SYM_SIMD_SCALAR; v--) {
        const sym_kernels *k;
        if (sym_kernels_get((sym_simd_variant)v, &k, &err) == SYM_OK) {
            widest = (sym_simd_variant)v;
            break;
        }
    }
    CHECK(chosen == widest);
    CHECK(sym_simd_choose("", &chosen, &err) == SYM_OK);
    CHECK(chosen == widest);

    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
        const char *name = sym_simd_variant_str((sym_simd_variant)v);
        const sym_kernels *k;
        sym_status got = sym_simd_choose(name, &chosen, &err);
        sym_status direct = sym_kernels_get((sym_simd_variant)v, &k, &err);
        CHECKF(got == direct, "%s: choose and get disagree", name);
        if (got == SYM_OK) {
            CHECK(chosen == (sym_simd_variant)v);
            CHECK(k->variant == chosen);
            CHECK(strcmp(k->name, name) == 0);
        } else {
            CHECKF(got == SYM_ERR_UNSUPPORTED, "%s: %s", name, err.message);
            CHECKF(strstr(err.message, name) != NULL, "%s: %s", name, err.message);
        }
    }
    CHECK(strcmp(sym_simd_variant_str(SYM_SIMD_VARIANT_COUNT), "unknown") == 0);

    /* The process-wide choice follows SYMPHONY_SIMD at first use, then stays. */
    setenv("SYMPHONY_SIMD", "scalar", 1);
    const sym_kernels *selected = NULL;
    CHECK(sym_kernels_select(&selected, &err) == SYM_OK);
    CHECK(selected != NULL);
    CHECK(selected == NULL || selected->variant == SYM_SIMD_SCALAR);
    setenv("SYMPHONY_SIMD", "nonsense", 1);
    CHECK(sym_kernels_select(&selected, &err) == SYM_OK);
    CHECK(strcmp(sym_kernels_variant_name(), "scalar") == 0);
    unsetenv("SYMPHONY_SIMD");
}

int main(void)
{
    const sym_kernels *scalar;
    sym_error err;
    if (sym_kernels_get(SYM_SIMD_SCALAR, &scalar, &err) != SYM_OK) {
        fprintf(stderr, "scalar kernels unavailable: %s\n", err.message);
        return 1;
    }

    check_dispatch();
    check_widening_exhaustive(scalar);
    check_narrowing_reference(scalar);
    check_f16_overflow_boundary(scalar);
    check_scalar_math(scalar);
    check_exp_specials(scalar);
    check_swiglu_specials(scalar);
    check_softmax_specials(scalar);

    int tested = 0, skipped = 0;
    for (int v = SYM_SIMD_SCALAR + 1; v < SYM_SIMD_VARIANT_COUNT; v++) {
        const sym_kernels *k;
        if (sym_kernels_get((sym_simd_variant)v, &k, &err) != SYM_OK) {
            printf("skipped: %s\n", err.message);
            skipped++;
            continue;
        }
        check_variant(k, scalar);
        tested++;
    }
    printf("vector variants: %d tested against scalar, %d skipped\n", tested, skipped);
    return test_finish("test_kernels");
}
