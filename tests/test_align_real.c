/* Alignment on the real fixtures: the code-permuted expert's weights, un-permuted with the
 * inverse of its permutation.json, equal the code expert's bit for bit; FFN activations on
 * the calibration text recover that permutation for every layer; the four fine-tuned
 * experts map at least 95% of their neurons to themselves against the base; and z-scores
 * stored on disk give the same correlation as in memory.
 *
 * With SYMPHONY_ALIGN_SKETCH_TABLE=1 it also prints the sketch agreement table of
 * docs/ALIGNMENT.md. Skips when the fixtures are absent. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/actstore.h"
#include "symphony/align.h"
#include "symphony/forward.h"
#include "symphony/model.h"
#include "testlib.h"

#define LAYERS 5
#define D_FF 172
#define HIDDEN 64
#define SEQ_LEN 128
#define SEQ_PER_DOMAIN 4
#define DOMAINS 4
#define TOKENS (DOMAINS * SEQ_PER_DOMAIN * SEQ_LEN)
#define MAX_CALIB_IDS 60000

static const char *const domains[DOMAINS] = {"stories", "legal", "code", "docs"};

static const char *real;

static sym_model *open_model(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", real, name);
    sym_model *model = NULL;
    sym_error err;
    if (sym_model_open(&model, path, &err) != SYM_OK) {
        fprintf(stderr, "open %s: %s\n", path, err.message);
        test_failures++;
        return NULL;
    }
    return model;
}

static float *alloc_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (p == NULL)
        abort();
    return p;
}

/* Reads the permutation of every layer from permutation.json. */
static int load_permutations(int32_t perm[LAYERS][D_FF])
{
    char path[4096];
    snprintf(path, sizeof path, "%s/code-permuted/permutation.json", real);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    json_t *layers = json_object_get(root, "perm");
    int ok = layers != NULL;
    for (int l = 0; ok && l < LAYERS; l++) {
        char key[16];
        snprintf(key, sizeof key, "%d", l);
        json_t *list = json_object_get(layers, key);
        ok = json_array_size(list) == D_FF;
        for (size_t i = 0; ok && i < D_FF; i++)
            perm[l][i] = (int32_t)json_integer_value(json_array_get(list, i));
    }
    json_decref(root);
    CHECKF(ok, "cannot read %s", path);
    return ok;
}

static void read_role(const sym_model *model, sym_role role, int layer, float *dst)
{
    const sym_tensor_ref *ref = sym_model_tensor(model, role, layer, -1);
    sym_error err;
    CHECK(ref != NULL);
    if (ref != NULL)
        CHECKF(sym_tensor_read_f32(ref, 0, D_FF * HIDDEN, dst, &err) == SYM_OK, "%s",
               err.message);
}

static void test_weights_unpermute(const int32_t perm[LAYERS][D_FF])
{
    sym_model *code = open_model("code"), *permuted = open_model("code-permuted");
    if (code == NULL || permuted == NULL)
        return;
    sym_role roles[3] = {SYM_ROLE_FFN_GATE, SYM_ROLE_FFN_UP, SYM_ROLE_FFN_DOWN};
    float *want = alloc_floats(D_FF * HIDDEN), *got = alloc_floats(D_FF * HIDDEN);
    int32_t inverse[D_FF];
    sym_error err;
    for (int l = 0; l < LAYERS; l++) {
        sym_align_invert_perm(perm[l], D_FF, inverse);
        for (int r = 0; r < 3; r++) {
            read_role(code, roles[r], l, want);
            read_role(permuted, roles[r], l, got);
            CHECKF(memcmp(want, got, D_FF * HIDDEN * 4) != 0, "layer %d role %d unpermuted",
                   l, r);

            /* Un-permute code-permuted with the inverse: the code expert exactly. */
            sym_status status = roles[r] == SYM_ROLE_FFN_DOWN
                                    ? sym_align_permute_cols(got, HIDDEN, D_FF, inverse, &err)
                                    : sym_align_permute_rows(got, D_FF, HIDDEN, inverse, &err);
            CHECK(status == SYM_OK);
            CHECKF(memcmp(want, got, D_FF * HIDDEN * 4) == 0,
                   "layer %d role %d differs after un-permuting", l, r);

            /* Permuting the code expert by perm gives code-permuted exactly. */
            read_role(permuted, roles[r], l, got);
            status = roles[r] == SYM_ROLE_FFN_DOWN
                         ? sym_align_permute_cols(want, HIDDEN, D_FF, perm[l], &err)
                         : sym_align_permute_rows(want, D_FF, HIDDEN, perm[l], &err);
            CHECK(status == SYM_OK);
            CHECKF(memcmp(want, got, D_FF * HIDDEN * 4) == 0,
                   "layer %d role %d differs after permuting", l, r);
        }
    }
    free(want);
    free(got);
    sym_model_close(code);
    sym_model_close(permuted);
}

/* Builds sequences of BOS + SEQ_LEN - 1 calibration ids, seq_per_domain from each domain. */
static int32_t *calibration_ids(size_t seq_per_domain)
{
    int32_t *ids = malloc(DOMAINS * seq_per_domain * SEQ_LEN * sizeof *ids);
    int32_t *domain_ids = malloc(MAX_CALIB_IDS * sizeof *domain_ids);
    if (ids == NULL || domain_ids == NULL)
        abort();
    for (int d = 0; d < DOMAINS; d++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/text/%s/calib.ids", real, domains[d]);
        FILE *f = fopen(path, "r");
        size_t n = 0;
        while (f != NULL && n < MAX_CALIB_IDS && fscanf(f, "%d", &domain_ids[n]) == 1)
            n++;
        if (f != NULL)
            fclose(f);
        if (n < seq_per_domain * (SEQ_LEN - 1))
            test_skip("calibration ids too short");
        for (size_t s = 0; s < seq_per_domain; s++) {
            int32_t *seq = ids + ((size_t)d * seq_per_domain + s) * SEQ_LEN;
            seq[0] = 1;
            memcpy(seq + 1, domain_ids + s * (SEQ_LEN - 1), (SEQ_LEN - 1) * sizeof *seq);
        }
    }
    free(domain_ids);
    return ids;
}

/* Runs a model over the calibration sequences and keeps every layer's FFN activations
 * acts[l] [n_seq x SEQ_LEN, D_FF]. */
static int collect_activations(const char *name, const int32_t *ids, size_t n_seq,
                               float *acts[LAYERS])
{
    sym_model *model = open_model(name);
    if (model == NULL)
        return 0;
    sym_forward_options options;
    sym_forward_options_init(&options);
    options.seq_len = SEQ_LEN;
    options.max_sequences = (int)n_seq;
    sym_forward *forward = NULL;
    sym_error err;
    size_t tokens = n_seq * SEQ_LEN;
    float *hidden = alloc_floats(tokens * HIDDEN);
    sym_status status = sym_forward_create(&forward, model, &options, &err);
    if (status == SYM_OK)
        status = sym_forward_embed(forward, ids, tokens, hidden, &err);
    for (int l = 0; status == SYM_OK && l < LAYERS; l++)
        status = sym_forward_layer(forward, l, hidden, n_seq, SEQ_LEN, acts[l], &err);
    CHECKF(status == SYM_OK, "%s forward: %s", name, err.message);
    sym_forward_free(forward);
    free(hidden);
    sym_model_close(model);
    return status == SYM_OK;
}

static void alloc_layers(float *acts[LAYERS], size_t tokens)
{
    for (int l = 0; l < LAYERS; l++)
        acts[l] = alloc_floats(tokens * D_FF);
}

static void free_layers(float *acts[LAYERS])
{
    for (int l = 0; l < LAYERS; l++)
        free(acts[l]);
}

static size_t count_equal(const int32_t *p, const int32_t *q, size_t n)
{
    size_t equal = 0;
    for (size_t i = 0; i < n; i++)
        equal += p[i] == q[i];
    return equal;
}

/* Aligns source against anchor per layer; returns the permutations in found. */
static void align_model(float *anchor[LAYERS], float *source[LAYERS], size_t tokens,
                        const char *label, int32_t found[LAYERS][D_FF],
                        sym_align_diag diag[LAYERS])
{
    sym_align_options options;
    sym_align_options_init(&options);
    sym_error err;
    for (int l = 0; l < LAYERS; l++) {
        CHECKF(sym_align_layer(anchor[l], source[l], tokens, D_FF, &options, found[l], NULL,
                               &diag[l], &err) == SYM_OK,
               "%s layer %d: %s", label, l, err.message);
        printf("%-22s layer %d: mean matched corr %.4f, identity %.4f, dead %zu/%zu\n", label,
               l, diag[l].mean_matched_corr, diag[l].identity_fraction, diag[l].dead_anchor,
               diag[l].dead_source);
    }
}

static void test_recover_permutation(float *base[LAYERS], const int32_t *ids,
                                     const int32_t perm[LAYERS][D_FF])
{
    float *permuted[LAYERS], *code[LAYERS];
    alloc_layers(permuted, TOKENS);
    alloc_layers(code, TOKENS);
    int32_t found[LAYERS][D_FF], inverse[LAYERS][D_FF];
    sym_align_diag diag[LAYERS];

    /* code-permuted's neuron i is the code expert's neuron perm[i], so the permutation that
     * brings it back into the anchor's order is the inverse of perm. */
    for (int l = 0; l < LAYERS; l++)
        sym_align_invert_perm(perm[l], D_FF, inverse[l]);
    if (collect_activations("code-permuted", ids, TOKENS / SEQ_LEN, permuted) &&
        collect_activations("code", ids, TOKENS / SEQ_LEN, code)) {
        align_model(code, permuted, TOKENS, "code vs code-permuted", found, diag);
        for (int l = 0; l < LAYERS; l++)
            CHECKF(count_equal(found[l], inverse[l], D_FF) == D_FF,
                   "code layer %d: %zu of %d", l, count_equal(found[l], inverse[l], D_FF), D_FF);

        align_model(base, permuted, TOKENS, "base vs code-permuted", found, diag);
        for (int l = 0; l < LAYERS; l++)
            CHECKF(count_equal(found[l], inverse[l], D_FF) == D_FF,
                   "base layer %d: %zu of %d", l, count_equal(found[l], inverse[l], D_FF), D_FF);
    }
    free_layers(permuted);
    free_layers(code);
}

static void test_experts_near_identity(float *base[LAYERS], const int32_t *ids)
{
    float *expert[LAYERS];
    alloc_layers(expert, TOKENS);
    int32_t found[LAYERS][D_FF];
    sym_align_diag diag[LAYERS];
    for (int d = 0; d < DOMAINS; d++) {
        if (!collect_activations(domains[d], ids, TOKENS / SEQ_LEN, expert))
            continue;
        char label[64];
        snprintf(label, sizeof label, "base vs %s", domains[d]);
        align_model(base, expert, TOKENS, label, found, diag);
        for (int l = 0; l < LAYERS; l++)
            CHECKF(diag[l].identity_fraction >= 0.95, "%s layer %d: identity %.4f", label, l,
                   diag[l].identity_fraction);
    }
    free_layers(expert);
}

/* Stores the z-scores of two models' layer, reads them back and compares Ya^T Yb / T with
 * the in-memory correlation. */
static void test_store_real_zscores(float *anchor, float *source)
{
    const char *dir = test_tmpdir("align-real");
    sym_act_stats stats[2];
    float *acts[2] = {anchor, source};
    sym_actstore_record stored[2];
    sym_error err;
    for (int m = 0; m < 2; m++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/layer2-source%d.acts", dir, m);
        CHECK(sym_act_stats_init(&stats[m], D_FF, &err) == SYM_OK);
        CHECK(sym_act_stats_add(&stats[m], acts[m], TOKENS, &err) == SYM_OK);
        CHECK(sym_act_stats_finish(&stats[m], &err) == SYM_OK);
        float *z = alloc_floats(TOKENS * D_FF);
        sym_act_zscore(&stats[m], acts[m], TOKENS, z);
        sym_actstore_record record = {
            .kind = SYM_ACTSTORE_ZSCORES, .layer = 2, .source = (uint32_t)m, .d_ff = D_FF,
            .tokens = TOKENS, .rows = TOKENS, .mean = stats[m].mean, .std = stats[m].std,
            .matrix = z,
        };
        CHECK(sym_actstore_write(path, &record, 3, &err) == SYM_OK);
        free(z);
        CHECKF(sym_actstore_read(path, 0, &stored[m], &err) == SYM_OK, "%s", err.message);
    }

    float *direct = alloc_floats(D_FF * D_FF), *from_files = alloc_floats(D_FF * D_FF);
    CHECK(sym_align_correlation(anchor, &stats[0], source, &stats[1], 256, direct, &err) ==
          SYM_OK);
    memset(from_files, 0, D_FF * D_FF * sizeof *from_files);
    if (stored[0].matrix != NULL && stored[1].matrix != NULL) {
        sym_align_corr_add(from_files, D_FF, stored[0].matrix, stored[1].matrix, TOKENS);
        sym_align_corr_scale(from_files, D_FF, stored[0].tokens);
    }
    double worst = 0;
    for (size_t i = 0; i < D_FF * D_FF; i++) {
        double d = fabs((double)direct[i] - (double)from_files[i]);
        worst = d > worst ? d : worst;
    }
    CHECKF(worst < 1e-5, "correlation from stored z-scores differs by %g", worst);
    for (int m = 0; m < 2; m++) {
        sym_actstore_record_free(&stored[m]);
        sym_act_stats_free(&stats[m]);
    }
    free(direct);
    free(from_files);
}

/* Prints, per sketch size k, the fraction of permutation entries equal to the exact
 * assignment's, for base against code-permuted and against legal, over all layers. */
static void print_sketch_table(void)
{
    const size_t seq_per_domain = 16, n_seq = DOMAINS * seq_per_domain;
    const size_t tokens = n_seq * SEQ_LEN;
    const size_t ks[] = {8, 16, 32, 64, 128, 256, 512, 1024, 4096};
    const char *sources[2] = {"code-permuted", "legal"};
    int32_t *ids = calibration_ids(seq_per_domain);
    float *anchor[LAYERS], *source[LAYERS];
    alloc_layers(anchor, tokens);
    alloc_layers(source, tokens);
    collect_activations("base", ids, n_seq, anchor);
    printf("\n%zu calibration tokens, d_ff %d, %d layers, seeds 1 to 3\n", tokens, D_FF,
           LAYERS);
    printf("| source | k | agreement (mean) | agreement (worst layer and seed) |\n");
    for (int s = 0; s < 2; s++) {
        collect_activations(sources[s], ids, n_seq, source);
        int32_t exact[LAYERS][D_FF], sketched[D_FF];
        sym_align_options options;
        sym_align_options_init(&options);
        sym_error err;
        for (int l = 0; l < LAYERS; l++)
            CHECK(sym_align_layer(anchor[l], source[l], tokens, D_FF, &options, exact[l], NULL,
                                  NULL, &err) == SYM_OK);
        for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
            double sum = 0, worst = 1;
            for (uint64_t seed = 1; seed <= 3; seed++) {
                options.sketch_rows = ks[i];
                options.sketch_seed = seed;
                for (int l = 0; l < LAYERS; l++) {
                    CHECK(sym_align_layer(anchor[l], source[l], tokens, D_FF, &options,
                                          sketched, NULL, NULL, &err) == SYM_OK);
                    double agree = (double)count_equal(sketched, exact[l], D_FF) / D_FF;
                    sum += agree;
                    worst = agree < worst ? agree : worst;
                }
            }
            printf("| %s | %zu | %.4f | %.4f |\n", sources[s], ks[i], sum / (3 * LAYERS),
                   worst);
        }
    }
    free_layers(anchor);
    free_layers(source);
    free(ids);
}

int main(void)
{
    real = test_shared_real();
    if (real == NULL)
        test_skip("real fixtures not found (set SYMPHONY_SHARED)");
    int32_t perm[LAYERS][D_FF];
    if (!load_permutations(perm))
        return test_finish("test_align_real");
    test_weights_unpermute(perm);

    int32_t *ids = calibration_ids(SEQ_PER_DOMAIN);
    float *base[LAYERS];
    alloc_layers(base, TOKENS);
    if (collect_activations("base", ids, TOKENS / SEQ_LEN, base)) {
        test_recover_permutation(base, ids, perm);
        test_experts_near_identity(base, ids);
        test_store_real_zscores(base[2], base[3]);
    }
    free_layers(base);
    free(ids);
    const char *table = getenv("SYMPHONY_ALIGN_SKETCH_TABLE");
    if (table != NULL && strcmp(table, "1") == 0)
        print_sketch_table();
    return test_finish("test_align_real");
}
