/* Row kernels of the assignment solver: a portable scalar set and AVX2 and AVX-512 sets
 * chosen at run time. All three compute the same values in the same f64 operations (no
 * fused multiply-add), so they return the same minima and the same first columns, which
 * tests/test_lap.c checks. The scan kernels have no data-dependent branch: on random rows
 * a "did anything drop" branch mispredicts often enough to cost more than the stores. */
#include "lap_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define LAP_HAVE_X86 1
#include <immintrin.h>
#else
#define LAP_HAVE_X86 0
#endif

/* Floats ahead of the current column that the row kernels prefetch: one 4 KiB page, so that
 * the next page of the row is on its way before the hardware prefetcher, which stops at
 * page boundaries, would start on it. */
#define PREFETCH_AHEAD 1024

/* (value, column) ordering used by every reduction: ties go to the lower column. */
static int before(double a, int64_t ja, double b, int64_t jb)
{
    if (a != b)
        return a < b;
    return jb < 0 || (ja >= 0 && ja < jb);
}

void lap_top2_merge(lap_top2 *acc, const lap_top2 *other)
{
    double vals[2] = {other->min1, other->min2};
    int64_t cols[2] = {other->j1, other->j2};

    for (int k = 0; k < 2; k++) {
        if (cols[k] < 0)
            continue;
        if (before(vals[k], cols[k], acc->min1, acc->j1)) {
            acc->min2 = acc->min1;
            acc->j2 = acc->j1;
            acc->min1 = vals[k];
            acc->j1 = cols[k];
        } else if (before(vals[k], cols[k], acc->min2, acc->j2)) {
            acc->min2 = vals[k];
            acc->j2 = cols[k];
        }
    }
}

/* ---- scalar kernels ---- */

static int colmin_scalar(const lap_colmin_args *args, size_t lo, size_t hi)
{
    const float sign = args->sign;
    float nonfinite = 0.0f;

    for (size_t j = lo; j < hi; j++) {
        args->col_min[j] = INFINITY;
        args->col_argmin[j] = -1;
    }
    for (size_t i = 0; i < args->n; i++) {
        const float *row = args->cost + i * args->n;
        for (size_t j = lo; j < hi; j++) {
            float c = sign * row[j];
            /* c * 0 is NaN exactly when c is NaN or infinite. */
            nonfinite += c * 0.0f;
            if (c < args->col_min[j]) {
                args->col_min[j] = c;
                args->col_argmin[j] = (int32_t)i;
            }
        }
    }
    return nonfinite != 0.0f;
}

static void top2_scalar(const float *row, const double *v, double sign, size_t lo, size_t hi,
                        lap_top2 *out)
{
    lap_top2 t = {HUGE_VAL, HUGE_VAL, -1, -1};

    for (size_t j = lo; j < hi; j++) {
        double h = sign * (double)row[j] - v[j];
        if (t.j2 >= 0 && !(h < t.min2))
            continue;
        if (t.j1 < 0 || h < t.min1) {
            t.min2 = t.min1;
            t.j2 = t.j1;
            t.min1 = h;
            t.j1 = (int64_t)j;
        } else {
            t.min2 = h;
            t.j2 = (int64_t)j;
        }
    }
    *out = t;
}

static double scan_scalar(const lap_scan_args *args, size_t lo, size_t hi, double *min_h)
{
    double best = HUGE_VAL, lowest = HUGE_VAL;
    double *d = args->d;

    for (size_t j = lo; j < hi; j++) {
        double h = args->sign * (double)args->row[j] - args->v[j] - args->offset;
        if (args->assign_all || h < d[j]) {
            d[j] = h;
            args->pred[j] = args->row_index;
        }
        best = d[j] < best ? d[j] : best;
        lowest = h < lowest ? h : lowest;
    }
    *min_h = lowest;
    return best;
}

static int64_t find_scalar(const double *d, size_t lo, size_t hi, double value)
{
    for (size_t j = lo; j < hi; j++) {
        if (d[j] == value)
            return (int64_t)j;
    }
    return -1;
}

const lap_kernels lap_kernels_scalar = {"scalar", colmin_scalar, top2_scalar, scan_scalar,
                                        find_scalar};

#if LAP_HAVE_X86

/* ---- AVX2 kernels ---- */

#define AVX2 __attribute__((target("avx2")))

AVX2 static int colmin_avx2(const lap_colmin_args *args, size_t lo, size_t hi)
{
    const __m256 sign = _mm256_set1_ps(args->sign);
    const __m256 zero = _mm256_setzero_ps();
    __m256 nonfinite = zero;
    size_t vec_hi = lo + (hi - lo) / 8 * 8;
    float tail_nonfinite = 0.0f;

    for (size_t j = lo; j < hi; j++) {
        args->col_min[j] = INFINITY;
        args->col_argmin[j] = -1;
    }
    for (size_t i = 0; i < args->n; i++) {
        const float *row = args->cost + i * args->n;
        const __m256i row_id = _mm256_set1_epi32((int32_t)i);
        for (size_t j = lo; j < vec_hi; j += 8) {
            __m256 c = _mm256_mul_ps(_mm256_loadu_ps(row + j), sign);
            __m256 best = _mm256_loadu_ps(args->col_min + j);
            __m256 lt = _mm256_cmp_ps(c, best, _CMP_LT_OQ);
            __m256i arg = _mm256_loadu_si256((const __m256i *)(args->col_argmin + j));
            nonfinite = _mm256_add_ps(nonfinite, _mm256_mul_ps(c, zero));
            arg = _mm256_blendv_epi8(arg, row_id, _mm256_castps_si256(lt));
            _mm256_storeu_ps(args->col_min + j, _mm256_blendv_ps(best, c, lt));
            _mm256_storeu_si256((__m256i *)(args->col_argmin + j), arg);
        }
        for (size_t j = vec_hi; j < hi; j++) {
            float c = args->sign * row[j];
            tail_nonfinite += c * 0.0f;
            if (c < args->col_min[j]) {
                args->col_min[j] = c;
                args->col_argmin[j] = (int32_t)i;
            }
        }
    }
    __m256 bad = _mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q);
    return _mm256_movemask_ps(bad) != 0 || tail_nonfinite != 0.0f;
}

/* Lowers (*min1, *min2), the two smallest values seen so far counted with multiplicity,
 * by the values of vals[0..count-1]. */
static void top2_values(double *min1, double *min2, const double *vals, int count)
{
    for (int k = 0; k < count; k++) {
        double h = vals[k];
        *min2 = h < *min1 ? *min1 : (h < *min2 ? h : *min2);
        *min1 = h < *min1 ? h : *min1;
    }
}

/* Returns the first j in lo..hi-1, other than skip, whose reduced cost equals value. */
static int64_t find_reduced_scalar(const float *row, const double *v, double sign, size_t lo,
                                   size_t hi, double value, int64_t skip)
{
    for (size_t j = lo; j < hi; j++) {
        if (sign * (double)row[j] - v[j] == value && (int64_t)j != skip)
            return (int64_t)j;
    }
    return -1;
}

/* Fills in the columns of a top-2 result whose values are known, so that the vector
 * kernels need no per-lane column bookkeeping (which costs a hard-to-predict branch). */
static void top2_columns(const float *row, const double *v, double sign, size_t lo,
                         size_t hi, lap_top2 *t,
                         int64_t (*find)(const float *, const double *, double, size_t,
                                         size_t, double, int64_t))
{
    t->j1 = hi > lo ? find(row, v, sign, lo, hi, t->min1, -1) : -1;
    t->j2 = hi - lo > 1 ? find(row, v, sign, lo, hi, t->min2, t->j1) : -1;
    if (t->j2 < 0)
        t->min2 = HUGE_VAL;
}

AVX2 static int64_t find_reduced_avx2(const float *row, const double *v, double sign,
                                      size_t lo, size_t hi, double value, int64_t skip)
{
    const __m256d vsign = _mm256_set1_pd(sign);
    const __m256d target = _mm256_set1_pd(value);
    size_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(row + j));
        __m256d h = _mm256_sub_pd(_mm256_mul_pd(a, vsign), _mm256_loadu_pd(v + j));
        unsigned mask = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(h, target, _CMP_EQ_OQ));
        while (mask != 0) {
            int64_t hit = (int64_t)j + __builtin_ctz(mask);
            if (hit != skip)
                return hit;
            mask &= mask - 1;
        }
    }
    return find_reduced_scalar(row, v, sign, j, hi, value, skip);
}

/* Branch-free per-lane top-2 of the values (min2 = min(min2, max(min1, h))), then a
 * search for the two columns in the row, which is in cache by then. */
AVX2 static void top2_avx2(const float *row, const double *v, double sign, size_t lo,
                           size_t hi, lap_top2 *out)
{
    const __m256d vsign = _mm256_set1_pd(sign);
    __m256d min1 = _mm256_set1_pd(HUGE_VAL), min2 = min1;
    size_t vec_hi = lo + (hi - lo) / 4 * 4;

    for (size_t j = lo; j < vec_hi; j += 4) {
        _mm_prefetch((const char *)(row + j + PREFETCH_AHEAD), _MM_HINT_T0);
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(row + j));
        __m256d h = _mm256_sub_pd(_mm256_mul_pd(a, vsign), _mm256_loadu_pd(v + j));
        min2 = _mm256_min_pd(min2, _mm256_max_pd(min1, h));
        min1 = _mm256_min_pd(min1, h);
    }

    lap_top2 t = {HUGE_VAL, HUGE_VAL, -1, -1};
    double lanes[8];
    _mm256_storeu_pd(lanes, min1);
    _mm256_storeu_pd(lanes + 4, min2);
    top2_values(&t.min1, &t.min2, lanes, 8);
    for (size_t j = vec_hi; j < hi; j++) {
        double h = sign * (double)row[j] - v[j];
        top2_values(&t.min1, &t.min2, &h, 1);
    }
    top2_columns(row, v, sign, lo, hi, &t, find_reduced_avx2);
    *out = t;
}

AVX2 static double hmin_avx2(__m256d x)
{
    double lanes[4];
    _mm256_storeu_pd(lanes, x);
    double m = lanes[0];
    for (int k = 1; k < 4; k++)
        m = lanes[k] < m ? lanes[k] : m;
    return m;
}

AVX2 static double scan_avx2(const lap_scan_args *args, size_t lo, size_t hi, double *min_h)
{
    const __m256d sign = _mm256_set1_pd(args->sign);
    const __m256d offset = _mm256_set1_pd(args->offset);
    const __m256d all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m128i row_id = _mm_set1_epi32(args->row_index);
    __m256d best = _mm256_set1_pd(HUGE_VAL), lowest = best;
    size_t vec_hi = lo + (hi - lo) / 4 * 4;
    double *d = args->d;
    int32_t *pred = args->pred;

    for (size_t j = lo; j < vec_hi; j += 4) {
        _mm_prefetch((const char *)(args->row + j + PREFETCH_AHEAD), _MM_HINT_T0);
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(args->row + j));
        __m256d h = _mm256_sub_pd(_mm256_mul_pd(a, sign), _mm256_loadu_pd(args->v + j));
        h = _mm256_sub_pd(h, offset);
        lowest = _mm256_min_pd(lowest, h);
        __m256d dj = _mm256_loadu_pd(d + j);
        __m256d drop = args->assign_all ? all : _mm256_cmp_pd(h, dj, _CMP_LT_OQ);
        dj = _mm256_blendv_pd(dj, h, drop);
        _mm256_storeu_pd(d + j, dj);
        /* The low 32 bits of each 64-bit lane mask, packed into four 32-bit lanes. */
        __m256i packed = _mm256_permutevar8x32_epi32(_mm256_castpd_si256(drop), pick);
        __m128i p = _mm_loadu_si128((const __m128i *)(pred + j));
        p = _mm_blendv_epi8(p, row_id, _mm256_castsi256_si128(packed));
        _mm_storeu_si128((__m128i *)(pred + j), p);
        best = _mm256_min_pd(best, dj);
    }
    double m = hmin_avx2(best);
    *min_h = hmin_avx2(lowest);
    if (vec_hi < hi) {
        double tail_h;
        double tail = scan_scalar(args, vec_hi, hi, &tail_h);
        m = tail < m ? tail : m;
        *min_h = tail_h < *min_h ? tail_h : *min_h;
    }
    return m;
}

AVX2 static int64_t find_avx2(const double *d, size_t lo, size_t hi, double value)
{
    const __m256d target = _mm256_set1_pd(value);
    size_t j = lo;
    for (; j + 4 <= hi; j += 4) {
        int mask = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(d + j), target,
                                                     _CMP_EQ_OQ));
        if (mask != 0)
            return (int64_t)j + __builtin_ctz((unsigned)mask);
    }
    return find_scalar(d, j, hi, value);
}

const lap_kernels lap_kernels_avx2 = {"avx2", colmin_avx2, top2_avx2, scan_avx2, find_avx2};

/* ---- AVX-512 kernels (F and VL) ---- */

#define AVX512 __attribute__((target("avx512f,avx512vl")))

AVX512 static int colmin_avx512(const lap_colmin_args *args, size_t lo, size_t hi)
{
    const __m512 sign = _mm512_set1_ps(args->sign);
    const __m512 zero = _mm512_setzero_ps();
    __m512 nonfinite = zero;
    size_t vec_hi = lo + (hi - lo) / 16 * 16;
    float tail_nonfinite = 0.0f;

    for (size_t j = lo; j < hi; j++) {
        args->col_min[j] = INFINITY;
        args->col_argmin[j] = -1;
    }
    for (size_t i = 0; i < args->n; i++) {
        const float *row = args->cost + i * args->n;
        const __m512i row_id = _mm512_set1_epi32((int32_t)i);
        for (size_t j = lo; j < vec_hi; j += 16) {
            __m512 c = _mm512_mul_ps(_mm512_loadu_ps(row + j), sign);
            __mmask16 lt = _mm512_cmp_ps_mask(c, _mm512_loadu_ps(args->col_min + j),
                                              _CMP_LT_OQ);
            nonfinite = _mm512_add_ps(nonfinite, _mm512_mul_ps(c, zero));
            _mm512_mask_storeu_ps(args->col_min + j, lt, c);
            _mm512_mask_storeu_epi32(args->col_argmin + j, lt, row_id);
        }
        for (size_t j = vec_hi; j < hi; j++) {
            float c = args->sign * row[j];
            tail_nonfinite += c * 0.0f;
            if (c < args->col_min[j]) {
                args->col_min[j] = c;
                args->col_argmin[j] = (int32_t)i;
            }
        }
    }
    __mmask16 bad = _mm512_cmp_ps_mask(nonfinite, nonfinite, _CMP_UNORD_Q);
    return bad != 0 || tail_nonfinite != 0.0f;
}

/* Updates eight columns from j on and lowers *best by their d after the update and
 * *lowest by their h. */
AVX512 static void scan8_avx512(const lap_scan_args *args, size_t j, __m512d sign,
                                __m512d offset, __m256i row_id, __mmask8 all, __m512d *best,
                                __m512d *lowest)
{
    __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(args->row + j));
    __m512d h = _mm512_sub_pd(_mm512_mul_pd(a, sign), _mm512_loadu_pd(args->v + j));
    h = _mm512_sub_pd(h, offset);
    __m512d dj = _mm512_loadu_pd(args->d + j);
    __mmask8 drop = _mm512_cmp_pd_mask(h, dj, _CMP_LT_OQ) | all;
    _mm512_mask_storeu_pd(args->d + j, drop, h);
    _mm256_mask_storeu_epi32(args->pred + j, drop, row_id);
    *best = _mm512_min_pd(*best, _mm512_mask_blend_pd(drop, dj, h));
    *lowest = _mm512_min_pd(*lowest, h);
}

AVX512 static double scan_avx512(const lap_scan_args *args, size_t lo, size_t hi,
                                 double *min_h)
{
    const __m512d sign = _mm512_set1_pd(args->sign);
    const __m512d offset = _mm512_set1_pd(args->offset);
    const __m256i row_id = _mm256_set1_epi32(args->row_index);
    const __mmask8 all = args->assign_all ? 0xff : 0;
    __m512d best0 = _mm512_set1_pd(HUGE_VAL), best1 = best0, lowest0 = best0,
            lowest1 = best0;
    size_t vec_hi = lo + (hi - lo) / 16 * 16;

    /* Two accumulators, so that consecutive minimum operations do not wait on each other. */
    for (size_t j = lo; j < vec_hi; j += 16) {
        _mm_prefetch((const char *)(args->row + j + PREFETCH_AHEAD), _MM_HINT_T0);
        scan8_avx512(args, j, sign, offset, row_id, all, &best0, &lowest0);
        scan8_avx512(args, j + 8, sign, offset, row_id, all, &best1, &lowest1);
    }
    double m = _mm512_reduce_min_pd(_mm512_min_pd(best0, best1));
    *min_h = _mm512_reduce_min_pd(_mm512_min_pd(lowest0, lowest1));
    if (vec_hi < hi) {
        double tail_h;
        double tail = scan_scalar(args, vec_hi, hi, &tail_h);
        m = tail < m ? tail : m;
        *min_h = tail_h < *min_h ? tail_h : *min_h;
    }
    return m;
}

AVX512 static int64_t find_reduced_avx512(const float *row, const double *v, double sign,
                                        size_t lo, size_t hi, double value, int64_t skip)
{
    const __m512d vsign = _mm512_set1_pd(sign);
    const __m512d target = _mm512_set1_pd(value);
    size_t j = lo;
    for (; j + 8 <= hi; j += 8) {
        __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(row + j));
        __m512d h = _mm512_sub_pd(_mm512_mul_pd(a, vsign), _mm512_loadu_pd(v + j));
        unsigned mask = _mm512_cmp_pd_mask(h, target, _CMP_EQ_OQ);
        while (mask != 0) {
            int64_t hit = (int64_t)j + __builtin_ctz(mask);
            if (hit != skip)
                return hit;
            mask &= mask - 1;
        }
    }
    return find_reduced_scalar(row, v, sign, j, hi, value, skip);
}

AVX512 static void top2_avx512(const float *row, const double *v, double sign, size_t lo,
                               size_t hi, lap_top2 *out)
{
    const __m512d vsign = _mm512_set1_pd(sign);
    __m512d min1a = _mm512_set1_pd(HUGE_VAL), min2a = min1a, min1b = min1a, min2b = min1a;
    size_t vec_hi = lo + (hi - lo) / 16 * 16;

    /* Two sets of lanes, so that consecutive minimum operations do not wait on each other. */
    for (size_t j = lo; j < vec_hi; j += 16) {
        _mm_prefetch((const char *)(row + j + PREFETCH_AHEAD), _MM_HINT_T0);
        __m512d a0 = _mm512_cvtps_pd(_mm256_loadu_ps(row + j));
        __m512d a1 = _mm512_cvtps_pd(_mm256_loadu_ps(row + j + 8));
        __m512d h0 = _mm512_sub_pd(_mm512_mul_pd(a0, vsign), _mm512_loadu_pd(v + j));
        __m512d h1 = _mm512_sub_pd(_mm512_mul_pd(a1, vsign), _mm512_loadu_pd(v + j + 8));
        min2a = _mm512_min_pd(min2a, _mm512_max_pd(min1a, h0));
        min1a = _mm512_min_pd(min1a, h0);
        min2b = _mm512_min_pd(min2b, _mm512_max_pd(min1b, h1));
        min1b = _mm512_min_pd(min1b, h1);
    }

    lap_top2 t = {HUGE_VAL, HUGE_VAL, -1, -1};
    double lanes[32];
    _mm512_storeu_pd(lanes, min1a);
    _mm512_storeu_pd(lanes + 8, min2a);
    _mm512_storeu_pd(lanes + 16, min1b);
    _mm512_storeu_pd(lanes + 24, min2b);
    top2_values(&t.min1, &t.min2, lanes, 32);
    for (size_t j = vec_hi; j < hi; j++) {
        double h = sign * (double)row[j] - v[j];
        top2_values(&t.min1, &t.min2, &h, 1);
    }
    top2_columns(row, v, sign, lo, hi, &t, find_reduced_avx512);
    *out = t;
}

const lap_kernels lap_kernels_avx512 = {"avx512", colmin_avx512, top2_avx512, scan_avx512,
                                        find_avx2};

static int cpu_supports(const char *isa)
{
    __builtin_cpu_init();
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
    return __builtin_cpu_supports("avx2");
}

#else

const lap_kernels lap_kernels_avx2 = {"scalar", colmin_scalar, top2_scalar, scan_scalar,
                                      find_scalar};
const lap_kernels lap_kernels_avx512 = {"scalar", colmin_scalar, top2_scalar, scan_scalar,
                                        find_scalar};

static int cpu_supports(const char *isa)
{
    (void)isa;
    return 0;
}

#endif

const lap_kernels *lap_kernels_best(void)
{
    const char *cap = getenv("SYMPHONY_LAP_KERNEL");
    int allow_avx512 = cap == NULL || strcmp(cap, "avx512") == 0;
    int allow_avx2 = allow_avx512 || strcmp(cap, "avx2") == 0;

    if (allow_avx512 && cpu_supports("avx512"))
        return &lap_kernels_avx512;
    if (allow_avx2 && cpu_supports("avx2"))
        return &lap_kernels_avx2;
    return &lap_kernels_scalar;
}
