/* Forward pass against the reference logits and greedy ids of the real fixtures. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/forward.h"
#include "testlib.h"

#define MAX_IDS 128

static size_t read_ids(const char *path, int32_t *ids, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    long v;
    if (f == NULL)
        return 0;
    while (n < cap && fscanf(f, "%ld", &v) == 1)
        ids[n++] = (int32_t)v;
    fclose(f);
    return n;
}

static float *read_f32(const char *path, size_t count)
{
    FILE *f = fopen(path, "rb");
    float *p = malloc(count * sizeof *p);
    size_t got = f != NULL && p != NULL ? fread(p, sizeof *p, count, f) : 0;
    if (f != NULL)
        fclose(f);
    if (got != count) {
        free(p);
        return NULL;
    }
    return p;
}

static sym_model *open_model(const char *real, const char *name)
{
    char dir[4096];
    sym_error err;
    sym_model *m;
    snprintf(dir, sizeof dir, "%s/%s", real, name);
    if (sym_model_open(&m, dir, &err) != SYM_OK) {
        fprintf(stderr, "%s\n", err.message);
        return NULL;
    }
    return m;
}

/* Max |ours - reference| over the logits of the greedy ids. */
static double logits_error(const sym_model *m, const int32_t *ids, size_t n, const float *ref,
                           sym_prefetch_mode mode, float *logits)
{
    sym_forward_options opt;
    sym_error err;
    sym_forward_options_init(&opt);
    opt.prefetch = mode;
    if (sym_forward_sequence_logits(m, ids, n, &opt, logits, &err) != SYM_OK) {
        fprintf(stderr, "%s\n", err.message);
        return INFINITY;
    }
    double max = 0;
    for (size_t i = 0; i < n * 512; i++)
        max = fmax(max, fabs((double)logits[i] - (double)ref[i]));
    return max;
}

static void test_logits(const char *real, const char *model, const char *ref_name,
                        const int32_t *ids, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/reference/%s", real, ref_name);
    float *ref = read_f32(path, n * 512);
    float *logits = malloc(n * 512 * sizeof *logits);
    float *first = malloc(n * 512 * sizeof *first);
    sym_model *m = open_model(real, model);
    CHECKF(ref != NULL && m != NULL, "%s, %s", path, model);
    if (ref != NULL && m != NULL) {
        double e = logits_error(m, ids, n, ref, SYM_PREFETCH_READ, first);
        printf("%s: max |logit - reference| = %.3g\n", model, e);
        CHECKF(e <= 1e-4, "%s: %g", model, e);
        /* Every prefetch mode converts the same bytes: identical logits. */
        for (int mode = SYM_PREFETCH_ADVISE; mode < SYM_PREFETCH_MODE_COUNT; mode++) {
            logits_error(m, ids, n, ref, (sym_prefetch_mode)mode, logits);
            CHECKF(memcmp(first, logits, n * 512 * sizeof *logits) == 0, "mode %s",
                   sym_prefetch_mode_name((sym_prefetch_mode)mode));
        }
    }
    sym_model_close(m);
    free(ref);
    free(logits);
    free(first);
}

static void test_greedy(const char *real, const int32_t *ids, size_t n)
{
    sym_model *m = open_model(real, "base");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    sym_forward_options opt;
    sym_generate_options gen = {n - 5, 0.0, 0, 2};
    int32_t out[MAX_IDS];
    size_t n_out = 0;
    sym_error err;
    sym_forward_options_init(&opt);
    /* The prompt is BOS + "Once upon a time", the first 5 ids. */
    sym_status st = sym_generate(m, ids, 5, &gen, &opt, out, &n_out, &err);
    CHECKF(st == SYM_OK, "%s", err.message);
    CHECKF(n_out == n - 5, "%zu new ids", n_out);
    for (size_t i = 0; i < n_out && i + 5 < n; i++)
        CHECKF(out[i] == ids[i + 5], "position %zu: %d, expected %d", i + 5, out[i], ids[i + 5]);
    sym_model_close(m);
}

static float *read_tensor(const sym_model *m, sym_role role, int layer)
{
    const sym_tensor_ref *r = sym_model_tensor(m, role, layer, -1);
    float *p = malloc(r->info->numel * sizeof *p);
    sym_error err;
    if (sym_tensor_read_f32(r, 0, r->info->numel, p, &err) != SYM_OK) {
        free(p);
        return NULL;
    }
    return p;
}

/* Checks the captured activations a of layer 4 by an identity: with h_mid = h_out - W_d a
 * (the residual stream before the FFN), a must equal silu(W_g x) * (W_u x) for
 * x = post_norm(h_mid). Returns the largest |difference|, in plain double loops. */
static double ffn_identity(const sym_model *m, const float *h_out,
                           const float *a, size_t n)
{
    float *wg = read_tensor(m, SYM_ROLE_FFN_GATE, 4), *wu = read_tensor(m, SYM_ROLE_FFN_UP, 4);
    float *wd = read_tensor(m, SYM_ROLE_FFN_DOWN, 4), *wn = read_tensor(m, SYM_ROLE_POST_NORM, 4);
    double max = 0;
    for (size_t t = 0; t < n && wg && wu && wd && wn; t++) {
        double mid[64], x[64], ss = 0;
        for (size_t i = 0; i < 64; i++) {
            double down = 0;
            for (size_t j = 0; j < 172; j++)
                down += (double)wd[i * 172 + j] * (double)a[t * 172 + j];
            mid[i] = (double)h_out[t * 64 + i] - down;
            ss += mid[i] * mid[i];
        }
        for (size_t i = 0; i < 64; i++)
            x[i] = (double)wn[i] * mid[i] / sqrt(ss / 64 + 1e-5);
        for (size_t j = 0; j < 172; j++) {
            double g = 0, u = 0;
            for (size_t i = 0; i < 64; i++) {
                g += (double)wg[j * 64 + i] * x[i];
                u += (double)wu[j * 64 + i] * x[i];
            }
            max = fmax(max, fabs(g / (1 + exp(-g)) * u - (double)a[t * 172 + j]));
        }
    }
    free(wg);
    free(wu);
    free(wd);
    free(wn);
    return max;
}

/* The layer API, run by hand, gives the same logits as the whole-sequence path, and the
 * captured FFN activations reproduce the FFN output through down_proj. */
static void test_layer_api(const char *real, const int32_t *ids, size_t n)
{
    sym_model *m = open_model(real, "base");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    sym_forward_options opt;
    sym_forward *fw;
    sym_error err;
    sym_forward_options_init(&opt);
    opt.seq_len = (int)n;
    float *hidden = malloc(n * 64 * sizeof(float));
    float *act = malloc(n * 172 * sizeof(float));
    float *logits = malloc(n * 512 * sizeof(float));
    float *whole = malloc(n * 512 * sizeof(float));
    CHECK(sym_forward_create(&fw, m, &opt, &err) == SYM_OK);
    CHECK(sym_forward_embed(fw, ids, n, hidden, &err) == SYM_OK);
    for (int l = 0; l < 5; l++)
        CHECK(sym_forward_layer(fw, l, hidden, 1, n, l == 4 ? act : NULL, &err) == SYM_OK);
    CHECK(ffn_identity(m, hidden, act, n) < 1e-4);
    CHECK(sym_forward_logits(fw, hidden, n, logits, &err) == SYM_OK);
    CHECK(sym_forward_sequence_logits(m, ids, n, &opt, whole, &err) == SYM_OK);
    CHECK(memcmp(logits, whole, n * 512 * sizeof(float)) == 0);

    sym_forward_free(fw);
    free(hidden);
    free(act);
    free(logits);
    free(whole);
    sym_model_close(m);
}

static void test_memory_limit(const char *real)
{
    sym_model *m = open_model(real, "base");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    sym_forward_options opt;
    sym_forward *fw = NULL;
    sym_error err;
    sym_forward_options_init(&opt);
    opt.memory_limit = 64 * 1024;
    sym_status st = sym_forward_create(&fw, m, &opt, &err);
    CHECKF(st == SYM_ERR_LIMIT, "status %d", (int)st);
    CHECKF(strstr(err.message, "needs") != NULL, "%s", err.message);
    CHECK(fw == NULL);

    opt.memory_limit = 8u << 20;
    opt.max_sequences = 1000;
    st = sym_forward_create(&fw, m, &opt, &err);
    CHECKF(st == SYM_OK, "%s", err.message);
    if (st == SYM_OK) {
        CHECK(sym_forward_plan_bytes(fw) <= opt.memory_limit);
        CHECK(sym_forward_batch_sequences(fw) >= 1 && sym_forward_batch_sequences(fw) < 1000);
    }
    sym_forward_free(fw);
    sym_model_close(m);
}

int main(void)
{
    const char *real = test_shared_real();
    if (real == NULL)
        test_skip("fixtures not found (set SYMPHONY_SHARED)");
    char path[4096];
    int32_t ids[MAX_IDS];
    snprintf(path, sizeof path, "%s/reference/greedy.ids", real);
    size_t n = read_ids(path, ids, MAX_IDS);
    CHECKF(n == 65, "%s: %zu ids", path, n);
    if (n != 65)
        return test_finish("test_forward");

    test_logits(real, "base", "logits-base-llama2c.f32", ids, n);
    test_logits(real, "moe-mergekit-hidden", "logits-moe-mergekit-hidden.f32", ids, n);
    test_greedy(real, ids, n);
    test_layer_api(real, ids, n);
    test_memory_limit(real);
    return test_finish("test_forward");
}
