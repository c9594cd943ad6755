/* RoPE inverse frequencies with rope_scaling linear and llama3, against an independent
 * numpy implementation of transformers' formulas run at test time (tests/rope_reference.py). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/forward.h"
#include "testlib.h"

typedef struct rope_case {
    const char *name;
    double theta;
    int head_dim;
    const char *type;
    double factor, low, high, original;
} rope_case;

static void check_case(const rope_case *c, const char *python, const char *dir)
{
    sym_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.rope_theta = c->theta;
    cfg.head_dim = c->head_dim;
    snprintf(cfg.rope_scaling.type, sizeof cfg.rope_scaling.type, "%s", c->type);
    cfg.rope_scaling.factor = c->factor;
    cfg.rope_scaling.low_freq_factor = c->low;
    cfg.rope_scaling.high_freq_factor = c->high;
    cfg.rope_scaling.original_max_position_embeddings = c->original;

    float ours[512];
    sym_error err;
    sym_status s = sym_rope_inv_freq(&cfg, ours, &err);
    CHECKF(s == SYM_OK, "%s: %s", c->name, err.message);
    if (s != SYM_OK)
        return;

    char out[1024], cmd[4096];
    snprintf(out, sizeof out, "%s/%s.txt", dir, c->name);
    snprintf(cmd, sizeof cmd, "%s %s/tests/rope_reference.py %.17g %d '%s' %.17g %.17g %.17g %.17g > %s",
             python, test_top(), c->theta, c->head_dim, c->type, c->factor, c->low, c->high,
             c->original, out);
    CHECKF(system(cmd) == 0, "%s: reference script failed", c->name);
    FILE *f = fopen(out, "r");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    int n = 0;
    double ref;
    while (fscanf(f, "%lf", &ref) == 1 && n < c->head_dim / 2) {
        double diff = (double)ours[n] - ref;
        double tol = 2e-7 * (ref < 0 ? -ref : ref);
        CHECKF(diff <= tol && diff >= -tol, "%s: inv_freq[%d] = %.9g, reference %.9g", c->name,
               n, (double)ours[n], ref);
        n++;
    }
    fclose(f);
    CHECKF(n == c->head_dim / 2, "%s: reference printed %d values, expected %d", c->name, n,
           c->head_dim / 2);
}

int main(void)
{
    const char *python = getenv("SYMPHONY_PYTHON");
    if (python == NULL || system("\"${SYMPHONY_PYTHON:-python3}\" -c 'import numpy' 2>/dev/null") != 0)
        test_skip("python3 with numpy is needed for the reference");
    const rope_case cases[] = {
        {"none", 10000.0, 128, "", 1, 1, 4, 0},
        {"linear", 10000.0, 128, "linear", 4.0, 1, 4, 0},
        /* Llama 3.1's published rope_scaling. */
        {"llama3", 500000.0, 128, "llama3", 8.0, 1.0, 4.0, 8192.0},
        {"llama3-small", 10000.0, 64, "llama3", 2.0, 1.0, 2.0, 256.0},
    };
    const char *dir = test_tmpdir("rope");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i], python, dir);

    /* Unsupported types and bad factors are rejected with a message naming them. */
    sym_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.rope_theta = 1e4;
    cfg.head_dim = 8;
    snprintf(cfg.rope_scaling.type, sizeof cfg.rope_scaling.type, "yarn");
    cfg.rope_scaling.factor = 2;
    float buf[4];
    sym_error err;
    CHECK(sym_rope_inv_freq(&cfg, buf, &err) == SYM_ERR_UNSUPPORTED);
    CHECK(strstr(err.message, "'yarn'") != NULL);
    snprintf(cfg.rope_scaling.type, sizeof cfg.rope_scaling.type, "linear");
    cfg.rope_scaling.factor = 0;
    CHECK(sym_rope_inv_freq(&cfg, buf, &err) == SYM_ERR_INVALID);
    return test_finish("test_rope_scaling");
}
