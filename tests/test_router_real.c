/* Router training on the real fixture model: hidden states of the base model at one layer
 * for the four domains' calibration tokens, labelled by domain. The router's accuracy on
 * held-out whole sequences is compared with a nearest-class-mean classifier on the same
 * features.
 *
 * NOTE: the features are the residual stream entering the layer, which the forward API
 * exposes. The merge pipeline trains on post_attention_layernorm(h + attention(h)), which
 * it computes itself, and tests/t_merge_pipeline.sh covers that path. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/forward.h"
#include "symphony/model.h"
#include "symphony/router.h"
#include "testlib.h"

#define DOMAINS 4
#define SEQ_LEN 128
#define SEQS_PER_DOMAIN 8
#define LAYER 2
#define TEST_SEQS 2

static const char *const domains[DOMAINS] = {"stories", "legal", "code", "docs"};

/* Reads the first count ids of a whitespace-separated id file. */
static int read_ids(const char *path, int32_t *ids, size_t count)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    size_t n = 0;
    while (n < count && fscanf(f, "%d", &ids[n]) == 1)
        n++;
    fclose(f);
    return n == count;
}

/* Runs layers 0..LAYER-1 over the ids, leaving the residual stream entering LAYER. */
static void hidden_states(sym_forward *fwd, const int32_t *ids, size_t n_seq, float *hidden)
{
    sym_error err;
    CHECKF(sym_forward_embed(fwd, ids, n_seq * SEQ_LEN, hidden, &err) == SYM_OK, "%s",
           err.message);
    for (int l = 0; l < LAYER; l++)
        CHECKF(sym_forward_layer(fwd, l, hidden, n_seq, SEQ_LEN, NULL, &err) == SYM_OK, "%s",
               err.message);
}

/* Accuracy on the held-out tokens of the nearest class mean of the training tokens. */
static double nearest_mean_accuracy(const float *x, const uint32_t *labels, size_t tokens,
                                    size_t hidden, const int *held)
{
    double *means = calloc(DOMAINS * hidden, sizeof *means);
    size_t counts[DOMAINS] = {0}, correct = 0, total = 0;
    for (size_t t = 0; t < tokens; t++) {
        if (held[t])
            continue;
        counts[labels[t]]++;
        for (size_t i = 0; i < hidden; i++)
            means[labels[t] * hidden + i] += (double)x[t * hidden + i];
    }
    for (size_t d = 0; d < DOMAINS; d++)
        for (size_t i = 0; i < hidden; i++)
            means[d * hidden + i] /= (double)counts[d];
    for (size_t t = 0; t < tokens; t++) {
        if (!held[t])
            continue;
        size_t best = 0;
        double best_dist = INFINITY;
        for (size_t d = 0; d < DOMAINS; d++) {
            double dist = 0.0;
            for (size_t i = 0; i < hidden; i++) {
                double diff = (double)x[t * hidden + i] - means[d * hidden + i];
                dist += diff * diff;
            }
            if (dist < best_dist) {
                best_dist = dist;
                best = d;
            }
        }
        correct += best == labels[t];
        total++;
    }
    free(means);
    return (double)correct / (double)total;
}

int main(void)
{
    const char *real = test_shared_real();
    if (real == NULL)
        test_skip("fixtures/real not found (set SYMPHONY_SHARED)");

    char path[4096];
    snprintf(path, sizeof path, "%s/base", real);
    sym_model *model;
    sym_error err;
    if (sym_model_open(&model, path, &err) != SYM_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    size_t hidden = (size_t)sym_model_get_config(model)->hidden_size;
    sym_forward_options options;
    sym_forward_options_init(&options);
    options.seq_len = SEQ_LEN;
    options.max_sequences = SEQS_PER_DOMAIN;
    sym_forward *fwd;
    CHECKF(sym_forward_create(&fwd, model, &options, &err) == SYM_OK, "%s", err.message);

    size_t per_domain = SEQS_PER_DOMAIN * SEQ_LEN, tokens = DOMAINS * per_domain;
    float *x = malloc(tokens * hidden * sizeof *x);
    uint32_t *labels = malloc(tokens * sizeof *labels);
    int32_t ids[SEQS_PER_DOMAIN * SEQ_LEN];
    for (size_t d = 0; d < DOMAINS; d++) {
        snprintf(path, sizeof path, "%s/text/%s/calib.ids", real, domains[d]);
        CHECKF(read_ids(path, ids, per_domain), "cannot read %zu ids from %s", per_domain,
               path);
        hidden_states(fwd, ids, SEQS_PER_DOMAIN, x + d * per_domain * hidden);
        for (size_t t = 0; t < per_domain; t++)
            labels[d * per_domain + t] = (uint32_t)d;
    }

    /* Both classifiers are tested on the last TEST_SEQS whole sequences of each domain.
     * The trainer gets the other sequences and holds out its own share of them. */
    size_t test_tokens = TEST_SEQS * SEQ_LEN, train_per_domain = per_domain - test_tokens;
    int *held = calloc(tokens, sizeof *held);
    float *train_x = malloc(DOMAINS * train_per_domain * hidden * sizeof *train_x);
    uint32_t *train_labels = malloc(DOMAINS * train_per_domain * sizeof *train_labels);
    for (size_t d = 0; d < DOMAINS; d++) {
        memcpy(train_x + d * train_per_domain * hidden, x + d * per_domain * hidden,
               train_per_domain * hidden * sizeof *x);
        for (size_t t = 0; t < per_domain; t++) {
            held[d * per_domain + t] = t >= train_per_domain;
            if (t < train_per_domain)
                train_labels[d * train_per_domain + t] = (uint32_t)d;
        }
    }

    sym_router_config cfg;
    sym_router_config_init(&cfg, DOMAINS, hidden);
    cfg.top_k = 1;
    cfg.lr = 0.01;
    cfg.steps = 400;
    cfg.batch_size = 128;
    cfg.seed = 3;
    sym_router_data data = {train_x, DOMAINS * train_per_domain, train_labels, NULL, NULL};
    float *w = malloc(DOMAINS * hidden * sizeof *w);
    sym_router_report r;
    CHECKF(sym_router_train(&cfg, &data, w, &r, &err) == SYM_OK, "%s", err.message);

    size_t correct = 0, total = 0;
    for (size_t t = 0; t < tokens; t++) {
        if (!held[t])
            continue;
        uint32_t expert;
        float weight;
        CHECK(sym_router_route(w, DOMAINS, hidden, x + t * hidden, 1, &expert, &weight,
                               &err) == SYM_OK);
        correct += expert == labels[t];
        total++;
    }
    double router_accuracy = (double)correct / (double)total;
    double mean_accuracy = nearest_mean_accuracy(x, labels, tokens, hidden, held);
    printf("layer %d input, %zu training tokens: trainer held-out accuracy %.4f "
           "(%zu tokens), loss %.4f -> %.4f, held-out loss %.4f\n", LAYER,
           DOMAINS * train_per_domain, r.holdout_accuracy, r.holdout_tokens,
           r.initial_train_loss, r.train_loss, r.holdout_loss);
    printf("held-out sequences (%zu tokens): router accuracy %.4f, nearest class mean %.4f, "
           "chance 0.25\n", total, router_accuracy, mean_accuracy);
    printf("load: %.3f %.3f %.3f %.3f\n", r.expert_load[0], r.expert_load[1],
           r.expert_load[2], r.expert_load[3]);
    CHECKF(router_accuracy > 0.5, "router accuracy %.4f", router_accuracy);
    CHECKF(router_accuracy >= mean_accuracy - 0.05, "router %.4f, nearest class mean %.4f",
           router_accuracy, mean_accuracy);
    free(train_x);
    free(train_labels);
    free(held);
    free(w);
    free(x);
    free(labels);
    sym_forward_free(fwd);
    sym_model_close(model);
    return test_finish("test_router_real");
}
