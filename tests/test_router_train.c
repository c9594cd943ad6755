/* Router training end to end on synthetic hidden states: Gaussian domain clusters are
 * separated as well as the nearest true mean separates them, the load-balancing term
 * spreads a skewed router, distillation with linear experts recovers a known router, and
 * runs repeat bit for bit. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/router.h"
#include "testlib.h"

static uint64_t rng_state = 0x853c49e6748fea9bu;

static double random_unit(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}

/* Standard normal by Box-Muller. */
static double random_normal(void)
{
    double u = random_unit(), v = random_unit();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(2.0 * M_PI * v);
}

/* Gaussian clusters: token t belongs to domain t % experts, x = mean[domain] + noise. */
typedef struct clusters {
    size_t tokens, experts, hidden;
    float *x, *means;
    uint32_t *labels;
} clusters;

static clusters make_clusters(size_t tokens, size_t experts, size_t hidden, double spread)
{
    clusters c = {tokens, experts, hidden, malloc(tokens * hidden * sizeof(float)),
                  malloc(experts * hidden * sizeof(float)), malloc(tokens * sizeof(uint32_t))};
    for (size_t i = 0; i < experts * hidden; i++)
        c.means[i] = (float)(spread * random_normal() / sqrt((double)hidden));
    for (size_t t = 0; t < tokens; t++) {
        c.labels[t] = (uint32_t)(t % experts);
        for (size_t i = 0; i < hidden; i++)
            c.x[t * hidden + i] = c.means[c.labels[t] * hidden + i] + (float)random_normal();
    }
    return c;
}

static void free_clusters(clusters *c)
{
    free(c->x);
    free(c->means);
    free(c->labels);
}

/* Accuracy of the nearest true mean, the Bayes rule for equal isotropic clusters. */
static double nearest_mean_accuracy(const clusters *c)
{
    size_t correct = 0;
    for (size_t t = 0; t < c->tokens; t++) {
        size_t best = 0;
        double best_dist = INFINITY;
        for (size_t e = 0; e < c->experts; e++) {
            double dist = 0.0;
            for (size_t i = 0; i < c->hidden; i++) {
                double d = (double)c->x[t * c->hidden + i] - (double)c->means[e * c->hidden + i];
                dist += d * d;
            }
            if (dist < best_dist) {
                best_dist = dist;
                best = e;
            }
        }
        correct += best == c->labels[t];
    }
    return (double)correct / (double)c->tokens;
}

static void check_clusters_learned(void)
{
    clusters c = make_clusters(4000, 4, 32, 6.0);
    sym_router_config cfg;
    sym_router_config_init(&cfg, 4, 32);
    cfg.top_k = 1;
    cfg.lr = 0.05;
    cfg.steps = 300;
    cfg.batch_size = 64;
    cfg.seed = 11;
    sym_router_data data = {c.x, c.tokens, c.labels, NULL, NULL};
    float w[4 * 32];
    sym_router_report r;
    sym_error err;
    sym_status status = sym_router_train(&cfg, &data, w, &r, &err);
    CHECKF(status == SYM_OK, "train failed: %s", err.message);

    double bayes = nearest_mean_accuracy(&c);
    printf("clusters: held-out accuracy %.4f (nearest true mean %.4f), loss %.4f -> %.4f, "
           "held-out loss %.4f\n", r.holdout_accuracy, bayes, r.initial_train_loss,
           r.train_loss, r.holdout_loss);
    CHECK(r.holdout_tokens == 400);
    CHECK(r.train_tokens == 3600);
    CHECK(r.steps == 300);
    CHECKF(r.holdout_accuracy >= 0.97, "held-out accuracy %.4f", r.holdout_accuracy);
    CHECKF(r.holdout_accuracy >= bayes - 0.02, "held-out accuracy %.4f, nearest mean %.4f",
           r.holdout_accuracy, bayes);
    CHECKF(r.train_loss < 0.5 * r.initial_train_loss, "loss %.4f -> %.4f",
           r.initial_train_loss, r.train_loss);

    double total = 0.0;
    for (size_t e = 0; e < 4; e++) {
        total += r.expert_load[e];
        CHECKF(fabs(r.expert_load[e] - 0.25) < 0.05, "load of expert %zu: %.4f", e,
               r.expert_load[e]);
    }
    CHECKF(fabs(total - 1.0) < 1e-12, "loads sum to %.15f", total);
    free_clusters(&c);
}

/* Labels independent of x, 70% of them on expert 0: cross-entropy alone keeps every
 * token's top-1 on expert 0, the balance term spreads the top-1 choices. */
static double max_load_after_training(double balance, const float *x, const uint32_t *labels,
                                      size_t tokens, size_t hidden, const float *skewed)
{
    sym_router_config cfg;
    sym_router_config_init(&cfg, 4, hidden);
    cfg.top_k = 1;
    cfg.balance = balance;
    cfg.gate_mode = SYM_ROUTER_GATE_ROWS;
    cfg.init_rows = skewed;
    cfg.lr = 0.02;
    cfg.steps = 400;
    cfg.batch_size = 128;
    sym_router_data data = {x, tokens, labels, NULL, NULL};
    float w[4 * 16];
    sym_router_report r;
    sym_error err;
    CHECKF(sym_router_train(&cfg, &data, w, &r, &err) == SYM_OK, "%s", err.message);
    double max_load = 0.0;
    for (int e = 0; e < 4; e++)
        max_load = r.expert_load[e] > max_load ? r.expert_load[e] : max_load;
    printf("balance %.2f: load %.3f %.3f %.3f %.3f\n", balance, r.expert_load[0],
           r.expert_load[1], r.expert_load[2], r.expert_load[3]);
    return max_load;
}

static void check_balance_spreads_load(void)
{
    enum { TOKENS = 2000, HIDDEN = 16 };
    float *x = malloc(TOKENS * HIDDEN * sizeof *x);
    uint32_t *labels = malloc(TOKENS * sizeof *labels);
    for (size_t t = 0; t < TOKENS; t++) {
        x[t * HIDDEN] = 1.0f; /* a constant feature, so a row can carry a bias */
        for (size_t i = 1; i < HIDDEN; i++)
            x[t * HIDDEN + i] = (float)random_normal();
        labels[t] = random_unit() < 0.7 ? 0 : 1 + (uint32_t)(random_unit() * 3.0);
    }
    float skewed[4 * HIDDEN] = {0};
    skewed[0] = 4.0f; /* expert 0 wins every token */

    double without = max_load_after_training(0.0, x, labels, TOKENS, HIDDEN, skewed);
    double with = max_load_after_training(4.0, x, labels, TOKENS, HIDDEN, skewed);
    CHECKF(without > 0.9, "without the balance term, max load %.3f", without);
    CHECKF(with < 0.4, "with the balance term, max load %.3f (ideal 0.25)", with);
    free(x);
    free(labels);
}

/* Cosine of the angle between rows e of a and b after removing the mean row from each,
 * because softmax ignores a shift common to all logits. */
static double centred_row_cosine(const float *a, const float *b, size_t n, size_t h, size_t e)
{
    double dot = 0.0, na = 0.0, nb = 0.0;
    for (size_t i = 0; i < h; i++) {
        double ma = 0.0, mb = 0.0;
        for (size_t k = 0; k < n; k++) {
            ma += (double)a[k * h + i] / (double)n;
            mb += (double)b[k * h + i] / (double)n;
        }
        double da = (double)a[e * h + i] - ma, db = (double)b[e * h + i] - mb;
        dot += da * db;
        na += da * da;
        nb += db * db;
    }
    return dot / sqrt(na * nb);
}

/* Linear experts y_e(x) = A_e x; labels from a known router's top-1. */
static void check_distill_recovers_router(void)
{
    enum { N = 4, H = 16, T = 3000 };
    float *x = malloc((size_t)T * H * sizeof *x);
    float *y = malloc((size_t)T * N * H * sizeof *y);
    float *a = malloc((size_t)N * H * H * sizeof *a);
    uint32_t *labels = malloc(T * sizeof *labels);
    float known[N * H];
    for (size_t i = 0; i < N * H; i++)
        known[i] = (float)random_normal();
    for (size_t i = 0; i < (size_t)N * H * H; i++)
        a[i] = (float)(random_normal() / sqrt((double)H));

    for (size_t t = 0; t < T; t++) {
        float *xt = x + t * H;
        for (size_t i = 0; i < H; i++)
            xt[i] = (float)random_normal();
        uint32_t best = 0;
        double best_logit = -INFINITY;
        for (uint32_t e = 0; e < N; e++) {
            double z = 0.0;
            for (size_t i = 0; i < H; i++)
                z += (double)known[e * H + i] * (double)xt[i];
            if (z > best_logit) {
                best_logit = z;
                best = e;
            }
            for (size_t o = 0; o < H; o++) {
                double sum = 0.0;
                for (size_t i = 0; i < H; i++)
                    sum += (double)a[(e * H + o) * H + i] * (double)xt[i];
                y[(t * N + e) * H + o] = (float)sum;
            }
        }
        labels[t] = best;
    }

    sym_router_config cfg;
    sym_router_config_init(&cfg, N, H);
    cfg.objective = SYM_ROUTER_DISTILL;
    cfg.lr = 0.05;
    cfg.steps = 600;
    cfg.batch_size = 128;
    cfg.threads = 2;
    sym_router_dense dense = {y, N, H};
    sym_router_data data = {x, T, labels, sym_router_dense_experts, &dense};
    float w[N * H];
    sym_router_report r;
    sym_error err;
    CHECKF(sym_router_train(&cfg, &data, w, &r, &err) == SYM_OK, "%s", err.message);
    printf("distill: held-out accuracy %.4f, loss %.4f -> %.4f, held-out loss %.4f\n",
           r.holdout_accuracy, r.initial_train_loss, r.train_loss, r.holdout_loss);
    CHECKF(r.holdout_accuracy >= 0.9, "held-out agreement with the known router %.4f",
           r.holdout_accuracy);
    CHECKF(r.train_loss < 0.5 * r.initial_train_loss, "loss %.4f -> %.4f",
           r.initial_train_loss, r.train_loss);
    for (size_t e = 0; e < N; e++) {
        double cosine = centred_row_cosine(w, known, N, H, e);
        printf("distill: row %zu cosine with the known router %.4f\n", e, cosine);
        CHECKF(cosine > 0.9, "row %zu cosine %.4f", e, cosine);
    }
    free(x);
    free(y);
    free(a);
    free(labels);
}

static void train_small(const clusters *c, unsigned threads, uint64_t seed, float *w)
{
    sym_router_config cfg;
    sym_router_config_init(&cfg, c->experts, c->hidden);
    cfg.gate_mode = SYM_ROUTER_GATE_RANDOM;
    cfg.steps = 50;
    cfg.batch_size = 32;
    cfg.lr = 0.01;
    cfg.threads = threads;
    cfg.seed = seed;
    sym_router_data data = {c->x, c->tokens, c->labels, NULL, NULL};
    sym_error err;
    CHECKF(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_OK, "%s", err.message);
}

static void check_deterministic(void)
{
    clusters c = make_clusters(500, 3, 20, 3.0);
    float a[60], b[60], d[60], s[60];
    train_small(&c, 1, 5, a);
    train_small(&c, 1, 5, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    train_small(&c, 3, 5, a);
    train_small(&c, 3, 5, b);
    CHECK(memcmp(a, b, sizeof a) == 0);
    train_small(&c, 1, 6, d);
    CHECK(memcmp(a, d, sizeof a) != 0);
    /* A different thread count changes only the summation order of the gradient. */
    train_small(&c, 1, 5, s);
    for (int i = 0; i < 60; i++)
        CHECKF(fabsf(a[i] - s[i]) < 1e-3f, "threads 3 vs 1 weight %d: %g %g", i, (double)a[i],
               (double)s[i]);
    free_clusters(&c);
}

static sym_status failing_experts(void *context, const uint32_t *tokens, size_t count,
                                  float *out, sym_error *err)
{
    (void)context, (void)tokens, (void)count, (void)out;
    return sym_error_set(err, SYM_ERR_IO, "layer 3 expert cache: read failed");
}

static void check_errors(void)
{
    clusters c = make_clusters(50, 2, 4, 3.0);
    sym_router_config cfg;
    sym_router_config_init(&cfg, 2, 4);
    sym_router_data data = {c.x, c.tokens, c.labels, NULL, NULL};
    float w[8];
    sym_error err;

    cfg.objective = SYM_ROUTER_DISTILL;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_INVALID);
    data.expert_outputs = failing_experts;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_IO);
    CHECKF(strstr(err.message, "read failed") != NULL, "message: %s", err.message);

    sym_router_config_init(&cfg, 2, 4);
    data.expert_outputs = NULL;
    cfg.lr = 0.0;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_INVALID);
    cfg.lr = 1e-3;
    cfg.top_k = 3;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_INVALID);
    cfg.top_k = 1;
    cfg.holdout_fraction = 1.0;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_INVALID);
    cfg.holdout_fraction = 0.1;
    cfg.gate_mode = SYM_ROUTER_GATE_ROWS;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_INVALID);

    /* Zero steps leave the given rows untouched. */
    const float rows[8] = {1, 2, 3, 4, -1, -2, -3, -4};
    cfg.init_rows = rows;
    cfg.steps = 0;
    sym_router_report r;
    CHECK(sym_router_train(&cfg, &data, w, &r, &err) == SYM_OK);
    CHECK(memcmp(w, rows, sizeof rows) == 0);
    CHECK(r.holdout_tokens == 5);
    CHECK(r.train_loss == r.initial_train_loss);

    /* A NaN hidden state makes the loss NaN, which stops training. */
    c.x[3] = NAN;
    cfg.steps = 100;
    cfg.holdout_fraction = 0.0;
    CHECK(sym_router_train(&cfg, &data, w, NULL, &err) == SYM_ERR_NONFINITE);
    free_clusters(&c);
}

static void check_route(void)
{
    const float w[3 * 2] = {1, 0, 0, 1, 0.5f, 0.5f};
    const float x[2] = {2, 1};
    uint32_t experts[2];
    float weights[2];
    sym_error err;
    CHECK(sym_router_route(w, 3, 2, x, 2, experts, weights, &err) == SYM_OK);
    /* logits 2, 1, 1.5: top-2 are experts 0 and 2, weights softmax over (2, 1.5). */
    CHECK(experts[0] == 0);
    CHECK(experts[1] == 2);
    double want = 1.0 / (1.0 + exp(-0.5));
    CHECKF(fabs((double)weights[0] - want) < 1e-6, "weight %g vs %g", (double)weights[0], want);
    CHECKF(fabs((double)weights[1] - (1.0 - want)) < 1e-6, "weight %g", (double)weights[1]);
    CHECK(sym_router_route(w, 3, 2, x, 4, experts, weights, &err) == SYM_ERR_INVALID);
}

int main(void)
{
    check_clusters_learned();
    check_balance_spreads_load();
    check_distill_recovers_router();
    check_deterministic();
    check_errors();
    check_route();
    return test_finish("test_router_train");
}
