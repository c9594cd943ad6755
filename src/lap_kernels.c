/* Row kernels of the assignment solver: a portable scalar set and an AVX2 set chosen at run
 * time. Both compute the same values in the same f64 arithmetic, so that they return the
 * same minima and the same first columns (tests/test_lap.c compares them). */
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

void lap_scan_merge(lap_scan_result *acc, const lap_scan_result *right)
{
    if (right->jmin >= 0 && (acc->jmin < 0 || right->min < acc->min)) {
        acc->min = right->min;
        acc->jmin = right->jmin;
    }
    if (right->min_free < acc->min_free)
        acc->min_free = right->min_free;
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

static void scan_scalar(const lap_scan_args *args, size_t lo, size_t hi, lap_scan_result *out)
{
    lap_scan_result r = {HUGE_VAL, -1, HUGE_VAL};
    double *d = args->d;

    for (size_t j = lo; j < hi; j++) {
        double dj = d[j];
        if (!args->assign_all && dj == -HUGE_VAL)
            continue;
        double h = args->sign * (double)args->row[j] - args->v[j] - args->offset;
        if (args->assign_all || h < dj) {
            dj = h;
            d[j] = h;
            args->pred[j] = args->row_index;
        }
        if (r.jmin < 0 || dj < r.min) {
            r.min = dj;
            r.jmin = (int64_t)j;
        }
        if (args->col_to_row[j] < 0 && dj < r.min_free)
            r.min_free = dj;
    }
    *out = r;
}

const lap_kernels lap_kernels_scalar = {"scalar", colmin_scalar, top2_scalar, scan_scalar};

/* ---- AVX2 kernels ---- */

#if LAP_HAVE_X86

#define AVX2 __attribute__((target("avx2")))

/* Lane-wise (value, column) minimum with columns stored as doubles (exact below 2^53). */
typedef struct lanes_min {
    __m256d value;
    __m256d col;
} lanes_min;

AVX2 static void lanes_reduce(const lanes_min *m, double *value, int64_t *col)
{
    double vals[4], cols[4];
    _mm256_storeu_pd(vals, m->value);
    _mm256_storeu_pd(cols, m->col);
    for (int k = 0; k < 4; k++) {
        int64_t c = (int64_t)cols[k];
        if (c >= 0 && before(vals[k], c, *value, *col)) {
            *value = vals[k];
            *col = c;
        }
    }
}

AVX2 static int colmin_avx2(const lap_colmin_args *args, size_t lo, size_t hi)
{
    const __m256 sign = _mm256_set1_ps(args->sign);
    const __m256 zero = _mm256_setzero_ps();
    __m256 nonfinite = zero;
    size_t vec_hi = lo + (hi - lo) / 8 * 8;

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
            nonfinite = _mm256_add_ps(nonfinite, _mm256_mul_ps(c, zero));
            if (_mm256_movemask_ps(lt) == 0)
                continue;
            __m256i arg = _mm256_loadu_si256((const __m256i *)(args->col_argmin + j));
            arg = _mm256_blendv_epi8(arg, row_id, _mm256_castps_si256(lt));
            _mm256_storeu_ps(args->col_min + j, _mm256_blendv_ps(best, c, lt));
            _mm256_storeu_si256((__m256i *)(args->col_argmin + j), arg);
        }
        for (size_t j = vec_hi; j < hi; j++) {
            float c = args->sign * row[j];
            nonfinite = _mm256_add_ps(nonfinite, _mm256_set1_ps(c * 0.0f));
            if (c < args->col_min[j]) {
                args->col_min[j] = c;
                args->col_argmin[j] = (int32_t)i;
            }
        }
    }
    __m256 bad = _mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q);
    return _mm256_movemask_ps(bad) != 0;
}

AVX2 static void top2_avx2(const float *row, const double *v, double sign, size_t lo,
                           size_t hi, lap_top2 *out)
{
    const __m256d vsign = _mm256_set1_pd(sign);
    const __m256d four = _mm256_set1_pd(4.0);
    __m256d min1 = _mm256_set1_pd(HUGE_VAL), min2 = min1;
    __m256d col1 = _mm256_set1_pd(-1.0), col2 = col1;
    __m256d col = _mm256_setr_pd((double)lo, (double)lo + 1, (double)lo + 2, (double)lo + 3);
    size_t vec_hi = lo + (hi - lo) / 4 * 4;

    for (size_t j = lo; j < vec_hi; j += 4) {
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(row + j));
        __m256d h = _mm256_sub_pd(_mm256_mul_pd(a, vsign), _mm256_loadu_pd(v + j));
        __m256d lt2 = _mm256_cmp_pd(h, min2, _CMP_LT_OQ);
        if (_mm256_movemask_pd(lt2) != 0) {
            __m256d lt1 = _mm256_cmp_pd(h, min1, _CMP_LT_OQ);
            min2 = _mm256_blendv_pd(min2, h, lt2);
            col2 = _mm256_blendv_pd(col2, col, lt2);
            min2 = _mm256_blendv_pd(min2, min1, lt1);
            col2 = _mm256_blendv_pd(col2, col1, lt1);
            min1 = _mm256_blendv_pd(min1, h, lt1);
            col1 = _mm256_blendv_pd(col1, col, lt1);
        }
        col = _mm256_add_pd(col, four);
    }

    /* A lane's first entry stays +infinity with column -1 only when the lane saw nothing. */
    lap_top2 t = {HUGE_VAL, HUGE_VAL, -1, -1};
    double v1[4], c1[4], v2[4], c2[4];
    _mm256_storeu_pd(v1, min1);
    _mm256_storeu_pd(c1, col1);
    _mm256_storeu_pd(v2, min2);
    _mm256_storeu_pd(c2, col2);
    for (int k = 0; k < 4; k++) {
        lap_top2 lane = {v1[k], v2[k], (int64_t)c1[k], (int64_t)c2[k]};
        lap_top2_merge(&t, &lane);
    }
    if (vec_hi < hi) {
        lap_top2 tail;
        top2_scalar(row, v, sign, vec_hi, hi, &tail);
        lap_top2_merge(&t, &tail);
    }
    *out = t;
}

AVX2 static __m128i narrow_mask(__m256d mask)
{
    const __m256i pick = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i packed = _mm256_permutevar8x32_epi32(_mm256_castpd_si256(mask), pick);
    return _mm256_castsi256_si128(packed);
}

AVX2 static void scan_avx2(const lap_scan_args *args, size_t lo, size_t hi,
                           lap_scan_result *out)
{
    const __m256d sign = _mm256_set1_pd(args->sign);
    const __m256d offset = _mm256_set1_pd(args->offset);
    const __m256d inf = _mm256_set1_pd(HUGE_VAL);
    const __m256d neg_inf = _mm256_set1_pd(-HUGE_VAL);
    const __m256d four = _mm256_set1_pd(4.0);
    const __m256d all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
    const __m256i zero = _mm256_setzero_si256();
    const __m128i row_id = _mm_set1_epi32(args->row_index);
    lanes_min best = {inf, _mm256_set1_pd(-1.0)};
    __m256d best_free = inf;
    __m256d col = _mm256_setr_pd((double)lo, (double)lo + 1, (double)lo + 2, (double)lo + 3);
    size_t vec_hi = lo + (hi - lo) / 4 * 4;
    double *d = args->d;

    for (size_t j = lo; j < vec_hi; j += 4) {
        __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(args->row + j));
        __m256d h = _mm256_sub_pd(_mm256_mul_pd(a, sign), _mm256_loadu_pd(args->v + j));
        h = _mm256_sub_pd(h, offset);
        __m256d dj = _mm256_loadu_pd(d + j);
        __m256d update = args->assign_all ? all : _mm256_cmp_pd(h, dj, _CMP_LT_OQ);
        if (_mm256_movemask_pd(update) != 0) {
            dj = _mm256_blendv_pd(dj, h, update);
            _mm256_storeu_pd(d + j, dj);
            _mm_maskstore_epi32(args->pred + j, narrow_mask(update), row_id);
        }
        __m256d key = _mm256_blendv_pd(dj, inf, _mm256_cmp_pd(dj, neg_inf, _CMP_EQ_OQ));
        __m256d lt = _mm256_cmp_pd(key, best.value, _CMP_LT_OQ);
        best.value = _mm256_blendv_pd(best.value, key, lt);
        best.col = _mm256_blendv_pd(best.col, col, lt);
        __m128i owner = _mm_loadu_si128((const __m128i *)(args->col_to_row + j));
        __m256i is_free = _mm256_cmpgt_epi64(zero, _mm256_cvtepi32_epi64(owner));
        best_free = _mm256_min_pd(best_free,
                                  _mm256_blendv_pd(inf, key, _mm256_castsi256_pd(is_free)));
        col = _mm256_add_pd(col, four);
    }

    lap_scan_result r = {HUGE_VAL, -1, HUGE_VAL};
    lanes_reduce(&best, &r.min, &r.jmin);
    double frees[4];
    _mm256_storeu_pd(frees, best_free);
    for (int k = 0; k < 4; k++)
        r.min_free = frees[k] < r.min_free ? frees[k] : r.min_free;
    if (vec_hi < hi) {
        lap_scan_result tail;
        scan_scalar(args, vec_hi, hi, &tail);
        lap_scan_merge(&r, &tail);
    }
    *out = r;
}

const lap_kernels lap_kernels_avx2 = {"avx2", colmin_avx2, top2_avx2, scan_avx2};

int lap_kernels_have_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

#else

const lap_kernels lap_kernels_avx2 = {"scalar", colmin_scalar, top2_scalar, scan_scalar};

int lap_kernels_have_avx2(void)
{
    return 0;
}

#endif

const lap_kernels *lap_kernels_best(void)
{
    const char *choice = getenv("SYMPHONY_LAP_KERNEL");
    if (choice != NULL && strcmp(choice, "scalar") == 0)
        return &lap_kernels_scalar;
    return lap_kernels_have_avx2() ? &lap_kernels_avx2 : &lap_kernels_scalar;
}
