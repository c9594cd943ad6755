/* FFN neuron alignment on synthetic data: statistics against a two-pass f64 reference,
 * dead neurons, permuted FFNs computing the same function, recovery of a planted
 * permutation (exact, blocked and sketched), and the sketch's block independence. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/align.h"
#include "testlib.h"

static uint64_t rng_state = 12345;

static uint64_t rng_next(void)
{
    uint64_t x = (rng_state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double rng_uniform(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

static double rng_gauss(void)
{
    double u = rng_uniform() + 0x1.0p-60;
    return sqrt(-2 * log(u)) * cos(2 * M_PI * rng_uniform());
}

static void random_perm(int32_t *perm, size_t n)
{
    for (size_t i = 0; i < n; i++)
        perm[i] = (int32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(rng_next() % (i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static float *alloc_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (p == NULL)
        abort();
    return p;
}

/* Anchor activations with per-neuron offsets and scales, and a source whose neuron
 * perm[i] is an affine copy of anchor neuron i plus noise of the given relative size. */
static void planted_pair(float *a, float *b, size_t tokens, size_t d_ff, const int32_t *perm,
                         double noise)
{
    for (size_t j = 0; j < d_ff; j++) {
        double offset = 3 * rng_gauss(), scale = 0.1 + rng_uniform();
        double b_offset = rng_gauss(), b_scale = 0.5 + rng_uniform();
        for (size_t t = 0; t < tokens; t++) {
            double x = rng_gauss();
            a[t * d_ff + j] = (float)(offset + scale * x);
            b[t * d_ff + (size_t)perm[j]] =
                (float)(b_offset + b_scale * (x + noise * rng_gauss()));
        }
    }
}

static void test_stats_against_two_pass(void)
{
    const size_t tokens = 300, d_ff = 7;
    float *acts = alloc_floats(tokens * d_ff);
    for (size_t t = 0; t < tokens; t++) {
        for (size_t j = 0; j < d_ff; j++) {
            /* Neuron 3 has |mean| / std = 1e5, where E[x^2] - E[x]^2 would cancel. */
            double offset = j == 3 ? 1000 : (double)j - 3;
            double spread = j == 3 ? 0.01 : 1 + (double)j;
            acts[t * d_ff + j] = (float)(offset + spread * rng_gauss());
        }
    }
    sym_act_stats stats;
    sym_error err;
    CHECK(sym_act_stats_init(&stats, d_ff, &err) == SYM_OK);
    CHECK(sym_act_stats_add(&stats, acts, 100, &err) == SYM_OK);
    CHECK(sym_act_stats_add(&stats, acts + 100 * d_ff, tokens - 100, &err) == SYM_OK);
    CHECK(sym_act_stats_finish(&stats, &err) == SYM_OK);
    CHECK(stats.tokens == tokens);
    CHECK(stats.dead == 0);

    for (size_t j = 0; j < d_ff; j++) {
        double mean = 0, var = 0;
        for (size_t t = 0; t < tokens; t++)
            mean += (double)acts[t * d_ff + j];
        mean /= (double)tokens;
        for (size_t t = 0; t < tokens; t++) {
            double d = (double)acts[t * d_ff + j] - mean;
            var += d * d;
        }
        double std = sqrt(var / (double)tokens);
        CHECKF(fabs(stats.mean[j] - mean) <= 1e-12 * (1 + fabs(mean)), "neuron %zu mean %.17g, "
               "two-pass %.17g", j, stats.mean[j], mean);
        CHECKF(fabs(stats.std[j] - std) <= 1e-9 * std, "neuron %zu std %.17g, two-pass %.17g",
               j, stats.std[j], std);
    }
    sym_act_stats_free(&stats);
    free(acts);
}

static void test_stats_rejects_nan(void)
{
    float acts[6] = {1, 2, 3, 4, NAN, 6};
    sym_act_stats stats;
    sym_error err;
    CHECK(sym_act_stats_init(&stats, 3, &err) == SYM_OK);
    CHECK(sym_act_stats_add(&stats, acts, 2, &err) == SYM_ERR_NONFINITE);
    CHECKF(strstr(err.message, "token 1, neuron 1") != NULL, "message: %s", err.message);
    sym_act_stats_free(&stats);
}

static void test_dead_neurons(void)
{
    const size_t tokens = 64, d_ff = 6;
    float *a = alloc_floats(tokens * d_ff), *b = alloc_floats(tokens * d_ff);
    for (size_t t = 0; t < tokens; t++) {
        for (size_t j = 0; j < d_ff; j++) {
            a[t * d_ff + j] = (float)rng_gauss();
            b[t * d_ff + j] = (float)rng_gauss();
        }
        a[t * d_ff + 1] = 0.0f;  /* an all-zero neuron */
        a[t * d_ff + 4] = 3.25f; /* a constant one */
        b[t * d_ff + 2] = -7.5f;
    }
    int32_t perm[6];
    float corr[36];
    sym_align_diag diag;
    sym_align_options options;
    sym_align_options_init(&options);
    sym_error err;
    CHECK(sym_align_layer(a, b, tokens, d_ff, &options, perm, corr, &diag, &err) == SYM_OK);
    size_t nonfinite = 0;
    for (size_t i = 0; i < d_ff * d_ff; i++)
        nonfinite += !isfinite(corr[i]);
    CHECK(nonfinite == 0);
    CHECK(diag.dead_anchor == 2);
    CHECK(diag.dead_source == 1);
    for (size_t j = 0; j < d_ff; j++) {
        CHECK(corr[1 * d_ff + j] == 0.0f);
        CHECK(corr[4 * d_ff + j] == 0.0f);
        CHECK(corr[j * d_ff + 2] == 0.0f);
    }
    CHECK(sym_align_check_perm(perm, d_ff, &err) == SYM_OK);
    CHECK(isfinite(diag.mean_matched_corr));
    free(a);
    free(b);
}

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* y [hidden] = down (silu(gate x) * up x), all f32. */
static void ffn(const float *gate, const float *up, const float *down, const float *x,
                size_t d_ff, size_t hidden, float *h, float *y)
{
    for (size_t i = 0; i < d_ff; i++) {
        float g = 0, u = 0;
        for (size_t k = 0; k < hidden; k++) {
            g += gate[i * hidden + k] * x[k];
            u += up[i * hidden + k] * x[k];
        }
        h[i] = silu(g) * u;
    }
    for (size_t r = 0; r < hidden; r++) {
        float sum = 0;
        for (size_t i = 0; i < d_ff; i++)
            sum += down[r * d_ff + i] * h[i];
        y[r] = sum;
    }
}

/* Largest |y1 - y2| relative to the f32 summation bound d_ff x eps x sum |down h|. */
static double ffn_output_error(const float *down, const float *h, const float *y1,
                               const float *y2, size_t d_ff, size_t hidden)
{
    double worst = 0;
    for (size_t r = 0; r < hidden; r++) {
        double bound = 0;
        for (size_t i = 0; i < d_ff; i++)
            bound += fabs((double)down[r * d_ff + i] * (double)h[i]);
        bound *= 2 * (double)d_ff * (double)FLT_EPSILON;
        double error = fabs((double)y1[r] - (double)y2[r]) / (bound + DBL_MIN);
        worst = error > worst ? error : worst;
    }
    return worst;
}

static void test_permuted_ffn_same_function(void)
{
    const size_t d_ff = 96, hidden = 32, inputs = 20;
    float *gate = alloc_floats(d_ff * hidden), *up = alloc_floats(d_ff * hidden);
    float *down = alloc_floats(hidden * d_ff);
    float *pgate = alloc_floats(d_ff * hidden), *pup = alloc_floats(d_ff * hidden);
    float *pdown = alloc_floats(hidden * d_ff);
    for (size_t i = 0; i < d_ff * hidden; i++) {
        gate[i] = (float)(0.3 * rng_gauss());
        up[i] = (float)(0.3 * rng_gauss());
        down[i] = (float)(0.3 * rng_gauss());
    }
    memcpy(pgate, gate, d_ff * hidden * sizeof *gate);
    memcpy(pup, up, d_ff * hidden * sizeof *up);
    memcpy(pdown, down, d_ff * hidden * sizeof *down);
    int32_t perm[96], inverse[96];
    random_perm(perm, d_ff);
    sym_error err;
    CHECK(sym_align_permute_rows(pgate, d_ff, hidden, perm, &err) == SYM_OK);
    CHECK(sym_align_permute_rows(pup, d_ff, hidden, perm, &err) == SYM_OK);
    CHECK(sym_align_permute_cols(pdown, hidden, d_ff, perm, &err) == SYM_OK);
    CHECK(memcmp(pgate + 5 * hidden, gate + (size_t)perm[5] * hidden, hidden * 4) == 0);
    CHECK(pdown[3 * d_ff + 7] == down[3 * d_ff + (size_t)perm[7]]);

    float x[32], h[96], ph[96], y[32], py[32];
    double worst = 0;
    for (size_t n = 0; n < inputs; n++) {
        for (size_t k = 0; k < hidden; k++)
            x[k] = (float)rng_gauss();
        ffn(gate, up, down, x, d_ff, hidden, h, y);
        ffn(pgate, pup, pdown, x, d_ff, hidden, ph, py);
        double error = ffn_output_error(down, h, y, py, d_ff, hidden);
        worst = error > worst ? error : worst;
    }
    CHECKF(worst <= 1.0, "permuted FFN output differs by %.3g of the f32 rounding bound",
           worst);

    /* Permuting only gate and up is a different function, which the check above catches. */
    ffn(pgate, pup, down, x, d_ff, hidden, ph, py);
    CHECK(ffn_output_error(down, h, y, py, d_ff, hidden) > 100);

    /* The inverse permutation restores the weights bit for bit. */
    sym_align_invert_perm(perm, d_ff, inverse);
    CHECK(sym_align_permute_rows(pgate, d_ff, hidden, inverse, &err) == SYM_OK);
    CHECK(sym_align_permute_cols(pdown, hidden, d_ff, inverse, &err) == SYM_OK);
    CHECK(memcmp(pgate, gate, d_ff * hidden * sizeof *gate) == 0);
    CHECK(memcmp(pdown, down, d_ff * hidden * sizeof *down) == 0);

    int32_t bad[96];
    memcpy(bad, perm, sizeof bad);
    bad[10] = bad[11];
    CHECK(sym_align_permute_rows(pgate, d_ff, hidden, bad, &err) == SYM_ERR_INVALID);
    CHECKF(strstr(err.message, "repeats") != NULL, "message: %s", err.message);
    bad[11] = 96;
    CHECK(sym_align_check_perm(bad, d_ff, &err) == SYM_ERR_INVALID);
    free(gate);
    free(up);
    free(down);
    free(pgate);
    free(pup);
    free(pdown);
}

static size_t count_equal(const int32_t *p, const int32_t *q, size_t n)
{
    size_t equal = 0;
    for (size_t i = 0; i < n; i++)
        equal += p[i] == q[i];
    return equal;
}

static void test_planted_recovery(void)
{
    const size_t tokens = 1000, d_ff = 200;
    float *a = alloc_floats(tokens * d_ff), *b = alloc_floats(tokens * d_ff);
    int32_t planted[200], found[200], blocked[200], sketched[200];
    random_perm(planted, d_ff);
    planted_pair(a, b, tokens, d_ff, planted, 0.1);

    sym_align_options options;
    sym_align_options_init(&options);
    options.block_tokens = tokens;
    float *corr = alloc_floats(d_ff * d_ff), *corr_blocked = alloc_floats(d_ff * d_ff);
    sym_align_diag diag;
    sym_error err;
    CHECK(sym_align_layer(a, b, tokens, d_ff, &options, found, corr, &diag, &err) == SYM_OK);
    CHECK(count_equal(found, planted, d_ff) == d_ff);
    CHECKF(diag.mean_matched_corr > 0.98, "mean matched correlation %g",
           diag.mean_matched_corr);
    CHECK(diag.dead_anchor == 0);
    size_t fixed_points = 0;
    for (size_t i = 0; i < d_ff; i++)
        fixed_points += planted[i] == (int32_t)i;
    CHECK(diag.identity_count == fixed_points);

    /* Blocks that do not divide the token count give the same matrix to f32 rounding. */
    options.block_tokens = 77;
    CHECK(sym_align_layer(a, b, tokens, d_ff, &options, blocked, corr_blocked, NULL, &err) ==
          SYM_OK);
    double worst = 0;
    for (size_t i = 0; i < d_ff * d_ff; i++) {
        double d = fabs((double)corr[i] - (double)corr_blocked[i]);
        worst = d > worst ? d : worst;
    }
    CHECKF(worst < 1e-5, "blocked correlation differs by %g", worst);
    CHECK(count_equal(blocked, planted, d_ff) == d_ff);

    /* A sketch with k = 512 < tokens still finds the planted permutation. */
    options.sketch_rows = 512;
    CHECK(sym_align_layer(a, b, tokens, d_ff, &options, sketched, NULL, &diag, &err) == SYM_OK);
    CHECKF(count_equal(sketched, planted, d_ff) == d_ff, "sketch k=512: %zu of %zu equal",
           count_equal(sketched, planted, d_ff), d_ff);
    free(a);
    free(b);
    free(corr);
    free(corr_blocked);
}

static void test_identity_source(void)
{
    const size_t tokens = 400, d_ff = 64;
    float *a = alloc_floats(tokens * d_ff), *b = alloc_floats(tokens * d_ff);
    int32_t identity[64], found[64];
    for (size_t i = 0; i < d_ff; i++)
        identity[i] = (int32_t)i;
    planted_pair(a, b, tokens, d_ff, identity, 0.3);
    sym_align_options options;
    sym_align_options_init(&options);
    sym_align_diag diag;
    sym_error err;
    CHECK(sym_align_layer(a, b, tokens, d_ff, &options, found, NULL, &diag, &err) == SYM_OK);
    CHECK(diag.identity_count == d_ff);
    CHECK(diag.identity_fraction == 1.0);
    free(a);
    free(b);
}

static void test_sketch_block_independent(void)
{
    const size_t tokens = 300, d_ff = 5, k = 16;
    float *z = alloc_floats(tokens * d_ff);
    for (size_t i = 0; i < tokens * d_ff; i++)
        z[i] = (float)rng_gauss();
    sym_sketch whole, pieces;
    sym_error err;
    CHECK(sym_sketch_init(&whole, k, d_ff, 9, &err) == SYM_OK);
    CHECK(sym_sketch_init(&pieces, k, d_ff, 9, &err) == SYM_OK);
    CHECK(sym_sketch_add(&whole, z, tokens, &err) == SYM_OK);
    CHECK(sym_sketch_add(&pieces, z, 1, &err) == SYM_OK);
    CHECK(sym_sketch_add(&pieces, z + d_ff, 260, &err) == SYM_OK);
    CHECK(sym_sketch_add(&pieces, z + 261 * d_ff, tokens - 261, &err) == SYM_OK);
    CHECK(pieces.tokens == tokens);
    double worst = 0;
    for (size_t i = 0; i < k * d_ff; i++) {
        double d = fabs((double)whole.rows[i] - (double)pieces.rows[i]);
        worst = d > worst ? d : worst;
    }
    CHECKF(worst < 1e-4, "sketch rows differ by %g between block layouts", worst);

    /* Each entry of S is +-1/sqrt(k): Y's row r for a one-hot z picks S[r][t]. */
    sym_sketch one;
    float unit[5] = {1, 0, 0, 0, 0};
    CHECK(sym_sketch_init(&one, k, d_ff, 9, &err) == SYM_OK);
    CHECK(sym_sketch_add(&one, unit, 1, &err) == SYM_OK);
    for (size_t r = 0; r < k; r++)
        CHECK(fabs(fabs((double)one.rows[r * d_ff]) - 0.25) < 1e-7);
    sym_sketch_free(&whole);
    sym_sketch_free(&pieces);
    sym_sketch_free(&one);
    free(z);
}

int main(void)
{
    test_stats_against_two_pass();
    test_stats_rejects_nan();
    test_dead_neurons();
    test_permuted_ffn_same_function();
    test_planted_recovery();
    test_identity_source();
    test_sketch_block_independent();
    return test_finish("test_align");
}
