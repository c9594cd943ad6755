/* Phase times of sym_eval_perplexity on the real base model. In every prefetch mode and
 * over several batches the result matches the reference perplexity. The phase times are
 * non-negative, cover the work that ran and add up to no more than the wall time. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "symphony/forward.h"
#include "symphony/tokenizer.h"
#include "testlib.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads results.base.stories.nll_sum from the reference ppl.json; NAN when missing. */
static double reference_nll(const char *real)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/reference/ppl.json", real);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    json_t *nll = json_object_get(
        json_object_get(json_object_get(json_object_get(root, "results"), "base"), "stories"),
        "nll_sum");
    double value = json_is_number(nll) ? json_number_value(nll) : (double)NAN;
    json_decref(root);
    return value;
}

static void check_mode(const sym_model *m, const int32_t *ids, size_t n, double ref_nll,
                       sym_prefetch_mode mode)
{
    const char *name = sym_prefetch_mode_name(mode);
    sym_forward_options opt;
    sym_forward_options_init(&opt);
    opt.prefetch = mode;
    opt.max_sequences = 16; /* several batches, so layer 0 is streamed more than once */
    opt.threads = 2;        /* each thread converts a share of every tensor */
    sym_eval_result r;
    sym_error err;
    double t0 = now_seconds();
    sym_status st = sym_eval_perplexity(m, ids, n, &opt, &r, &err);
    double wall = now_seconds() - t0;
    CHECKF(st == SYM_OK, "%s: %s", name, st == SYM_OK ? "" : err.message);
    if (st != SYM_OK)
        return;
    CHECKF(r.batches > 1, "%s: %llu batches", name, (unsigned long long)r.batches);
    CHECKF(fabs(r.nll_sum - ref_nll) <= 1e-4 * ref_nll, "%s: nll_sum %.6f, reference %.6f",
           name, r.nll_sum, ref_nll);

    const sym_forward_timing *t = &r.timing;
    double phases[] = {t->io_wait, t->convert, t->attention, t->ffn, t->head};
    double sum = 0;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) {
        CHECKF(phases[i] >= 0, "%s: phase %zu took %.9f s", name, i, phases[i]);
        sum += phases[i];
    }
    CHECKF(t->convert > 0, "%s: convert %.9f s", name, t->convert);
    CHECKF(t->attention > 0, "%s: attention %.9f s", name, t->attention);
    CHECKF(t->ffn > 0, "%s: FFN %.9f s", name, t->ffn);
    CHECKF(t->head > 0, "%s: head %.9f s", name, t->head);
    CHECKF(sum <= wall, "%s: phases sum to %.6f s, wall %.6f s", name, sum, wall);
}

int main(void)
{
    const char *real = test_shared_real();
    if (real == NULL)
        test_skip("fixtures not found (set SYMPHONY_SHARED)");
    char path[4096];
    snprintf(path, sizeof path, "%s/base", real);
    sym_error err;
    sym_model *m;
    CHECKF(sym_model_open(&m, path, &err) == SYM_OK, "%s", err.message);
    if (test_failures > 0)
        return test_finish("test_forward_timing");
    snprintf(path, sizeof path, "%s/text/stories/eval.ids", real);
    int32_t *ids = NULL;
    size_t n = 0;
    sym_status st = sym_ids_load(path, (size_t)sym_model_get_config(m)->vocab_size, &ids, &n,
                                 &err);
    CHECKF(st == SYM_OK, "%s", st == SYM_OK ? "" : err.message);
    double ref_nll = reference_nll(real);
    CHECKF(!isnan(ref_nll), "%s/reference/ppl.json: results.base.stories.nll_sum missing", real);
    if (st == SYM_OK && !isnan(ref_nll)) {
        for (int mode = 0; mode < SYM_PREFETCH_MODE_COUNT; mode++)
            check_mode(m, ids, n, ref_nll, (sym_prefetch_mode)mode);
    }
    free(ids);
    sym_model_close(m);
    return test_finish("test_forward_timing");
}
