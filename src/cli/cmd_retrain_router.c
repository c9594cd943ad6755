/* symphony-stream retrain-router: train a merged model's routers again from its caches. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "symphony/retrain.h"

static void print_help(void)
{
    printf("usage: " CLI_NAME " retrain-router [OPTIONS] OUT_DIR\n"
           "\n"
           "Train every layer's router of OUT_DIR, the output of a merge with calibration,\n"
           "again from the router inputs, token labels and settings cached in\n"
           "OUT_DIR/symphony-work, with the experts read from OUT_DIR itself. No source\n"
           "model is read. The router tensors are rewritten in place, with the checksum\n"
           "manifest and merge-report.json. Options not given keep the merge's settings,\n"
           "which reproduce its routers byte for byte.\n"
           "\n"
           "Options:\n"
           "      --router-objective OBJ  distill, distill-topk or classify\n"
           "      --router-steps N        optimiser steps per router\n"
           "      --router-lr X           router learning rate\n"
           "      --router-domain-weights W\n"
           "                              lens (the weights the merge recorded per layer)\n"
           "                              or uniform\n"
           "      --seed S                seed of the held-out split, batches and random rows\n"
           "      --threads N             worker threads (default: the merge's)\n"
           "  -q, --quiet                 print errors only\n"
           "  -h, --help                  print this help and exit\n"
           "\n"
           "Exit status: 0 success, 1 failure (OUT_DIR is unchanged when training fails),\n"
           "2 usage error.\n");
}

enum { OPT_OBJECTIVE = 256, OPT_DOMAIN_WEIGHTS, OPT_STEPS, OPT_LR, OPT_SEED, OPT_THREADS };

static int parse_option(int opt, const char *value, sym_retrain_options *o)
{
    long long v;
    switch (opt) {
    case OPT_OBJECTIVE:
        o->has_objective = true;
        if (!sym_router_objective_parse(value, &o->objective))
            return cli_usage_error("retrain-router", "--router-objective '%s' is not distill, "
                                   "distill-topk or classify", value);
        return 0;
    case OPT_DOMAIN_WEIGHTS:
        o->has_domain_weights = true;
        if (!sym_domain_weights_from_name(value, &o->domain_weights))
            return cli_usage_error("retrain-router", "--router-domain-weights '%s' is not "
                                   "lens or uniform", value);
        return 0;
    case OPT_STEPS:
        if (!cli_parse_int(value, 0, 100000000, &v))
            return cli_usage_error("retrain-router", "--router-steps '%s' is not a count in "
                                   "[0, 100000000]", value);
        o->has_steps = true;
        o->steps = v;
        return 0;
    case OPT_LR:
        if (!cli_parse_double(value, &o->lr) || !(o->lr > 0))
            return cli_usage_error("retrain-router", "--router-lr '%s' is not a positive "
                                   "number", value);
        o->has_lr = true;
        return 0;
    case OPT_SEED:
        if (!cli_parse_int(value, 0, INT64_MAX, &v))
            return cli_usage_error("retrain-router", "--seed '%s' is not a non-negative "
                                   "integer", value);
        o->has_seed = true;
        o->seed = (uint64_t)v;
        return 0;
    case OPT_THREADS:
        if (!cli_parse_int(value, 1, 4096, &v))
            return cli_usage_error("retrain-router", "--threads '%s' is not in [1, 4096]",
                                   value);
        o->threads = (int)v;
        return 0;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, sym_retrain_options *o)
{
    static const struct option options[] = {
        {"router-objective", required_argument, NULL, OPT_OBJECTIVE},
        {"router-domain-weights", required_argument, NULL, OPT_DOMAIN_WEIGHTS},
        {"router-steps", required_argument, NULL, OPT_STEPS},
        {"router-lr", required_argument, NULL, OPT_LR},
        {"seed", required_argument, NULL, OPT_SEED},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "qh", options, NULL)) != -1) {
        if (opt == 'h') {
            print_help();
            return -1;
        }
        if (opt == 'q') {
            cli_verbosity = 0;
            continue;
        }
        if (opt == '?')
            return cli_usage_error("retrain-router", "unknown option '%s'", argv[optind - 1]);
        int rc = parse_option(opt, optarg, o);
        if (rc != 0)
            return rc;
    }
    if (argc - optind != 1)
        return cli_usage_error("retrain-router", "expected OUT_DIR, got %d argument(s)",
                               argc - optind);
    return 0;
}

static void print_layer(void *context, int layer, int n_layers, const sym_router_report *r)
{
    (void)context;
    if (cli_verbosity == 0)
        return;
    printf("router %d of %d: loss %.6g -> %.6g, held-out accuracy %.1f%%\n", layer + 1,
           n_layers, r->initial_train_loss, r->train_loss, 100.0 * r->holdout_accuracy);
}

int cmd_retrain_router(int argc, char **argv)
{
    sym_retrain_options o = {.layer_done = print_layer};
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? CLI_EXIT_OK : rc;
    const char *dir = argv[optind];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    sym_error err;
    if (sym_retrain_router(dir, &o, &err) != SYM_OK)
        return cli_fail_error(&err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (cli_verbosity > 0)
        printf("retrained the routers of %s in %.1f s\n", dir,
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    return CLI_EXIT_OK;
}
