/* symphony-stream merge: build a Mixtral-style MoE from a merge config. */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "symphony/merge.h"
#include "symphony/mergecfg.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int signo)
{
    (void)signo;
    interrupted = 1;
}

static void print_help(void)
{
    printf("usage: " CLI_NAME " merge [OPTIONS] CONFIG OUTPUT_DIR\n"
           "\n"
           "Merge the dense models named in CONFIG (a mergekit-moe YAML file, optionally\n"
           "with a symphony: section) into a Mixtral-style MoE in OUTPUT_DIR. The output is\n"
           "built in OUTPUT_DIR.partial and renamed when complete; rerunning the same\n"
           "command after an interruption resumes it.\n"
           "\n"
           "Options (each overrides the config):\n"
           "      --calibration-tokens N  calibration tokens in all, split equally between\n"
           "                              the experts' domains (0: no alignment, no router\n"
           "                              training)\n"
           "      --router-objective OBJ  distill (default) or classify\n"
           "      --router-steps N        optimiser steps per router\n"
           "      --router-lr X           router learning rate\n"
           "      --seed N                seed of the random router rows\n"
           "      --dtype TYPE            output dtype: bfloat16, float16 or float32\n"
           "      --memory-limit SIZE     refuse a plan needing more working memory\n"
           "                              (e.g. 4G; default: no limit)\n"
           "      --shard-size SIZE       tensor bytes per output shard (default 5G)\n"
           "      --threads N             worker threads (default 1); part of the resume\n"
           "                              fingerprint\n"
           "      --force                 replace an existing OUTPUT_DIR\n"
           "      --restart               discard an interrupted merge and start over\n"
           "  -q, --quiet                 print errors only\n"
           "  -h, --help                  print this help and exit\n"
           "\n"
           "Exit status: 0 success (also when the merge had already completed), 1 failure,\n"
           "2 usage error, 130 interrupted (rerun the command to resume).\n");
}

/* Settings from the command line; negative means "not given". */
typedef struct merge_args {
    long long calibration_tokens;
    long long router_steps;
    double router_lr;
    const char *router_objective;
    long long seed;
    const char *dtype;
    sym_merge_options opts;
} merge_args;

enum {
    OPT_CALIBRATION = 256,
    OPT_SEED,
    OPT_DTYPE,
    OPT_MEMORY,
    OPT_SHARD,
    OPT_THREADS,
    OPT_FORCE,
    OPT_RESTART,
    OPT_ROUTER_OBJECTIVE,
    OPT_ROUTER_STEPS,
    OPT_ROUTER_LR,
};

static int parse_option(int opt, const char *value, merge_args *a)
{
    switch (opt) {
    case OPT_CALIBRATION:
        if (!cli_parse_int(value, 0, LLONG_MAX / 2, &a->calibration_tokens))
            return cli_usage_error("merge", "--calibration-tokens '%s' is not a count", value);
        return 0;
    case OPT_SEED:
        if (!cli_parse_int(value, 0, LLONG_MAX, &a->seed))
            return cli_usage_error("merge", "--seed '%s' is not a non-negative integer", value);
        return 0;
    case OPT_DTYPE:
        a->dtype = value;
        return 0;
    case OPT_MEMORY:
        if (!cli_parse_size(value, &a->opts.memory_limit))
            return cli_usage_error("merge", "--memory-limit '%s' is not a size", value);
        return 0;
    case OPT_SHARD:
        if (!cli_parse_size(value, &a->opts.shard_size) || a->opts.shard_size == 0)
            return cli_usage_error("merge", "--shard-size '%s' is not a positive size", value);
        return 0;
    case OPT_THREADS: {
        long long threads;
        if (!cli_parse_int(value, 1, 4096, &threads))
            return cli_usage_error("merge", "--threads '%s' is not in [1, 4096]", value);
        a->opts.threads = (int)threads;
        return 0;
    }
    case OPT_ROUTER_OBJECTIVE:
        a->router_objective = value;
        return 0;
    case OPT_ROUTER_STEPS:
        if (!cli_parse_int(value, 0, 100000000, &a->router_steps))
            return cli_usage_error("merge", "--router-steps '%s' is not a count", value);
        return 0;
    case OPT_ROUTER_LR: {
        char *end;
        a->router_lr = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || !(a->router_lr > 0))
            return cli_usage_error("merge", "--router-lr '%s' is not a positive number", value);
        return 0;
    }
    case OPT_FORCE:
        a->opts.force = true;
        return 0;
    case OPT_RESTART:
        a->opts.restart = true;
        return 0;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, merge_args *a)
{
    static const struct option options[] = {
        {"calibration-tokens", required_argument, NULL, OPT_CALIBRATION},
        {"seed", required_argument, NULL, OPT_SEED},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"memory-limit", required_argument, NULL, OPT_MEMORY},
        {"shard-size", required_argument, NULL, OPT_SHARD},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"router-objective", required_argument, NULL, OPT_ROUTER_OBJECTIVE},
        {"router-steps", required_argument, NULL, OPT_ROUTER_STEPS},
        {"router-lr", required_argument, NULL, OPT_ROUTER_LR},
        {"force", no_argument, NULL, OPT_FORCE},
        {"restart", no_argument, NULL, OPT_RESTART},
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
            return cli_usage_error("merge", "unknown option '%s'", argv[optind - 1]);
        int rc = parse_option(opt, optarg, a);
        if (rc != 0)
            return rc;
    }
    if (argc - optind != 2)
        return cli_usage_error("merge", "expected CONFIG and OUTPUT_DIR, got %d argument(s)",
                               argc - optind);
    return 0;
}

static int apply_overrides(const merge_args *a, sym_merge_config *cfg)
{
    if (a->calibration_tokens >= 0)
        cfg->calibration_tokens = a->calibration_tokens;
    if (a->seed >= 0)
        cfg->seed = (uint64_t)a->seed;
    if (a->router_steps >= 0)
        cfg->router.steps = a->router_steps;
    if (a->router_lr > 0)
        cfg->router.learning_rate = a->router_lr;
    if (a->router_objective != NULL && strcmp(a->router_objective, "distill") == 0)
        cfg->router.objective = SYM_ROUTER_DISTILL;
    else if (a->router_objective != NULL && strcmp(a->router_objective, "classify") == 0)
        cfg->router.objective = SYM_ROUTER_DOMAIN;
    else if (a->router_objective != NULL)
        return cli_usage_error("merge", "--router-objective '%s' is not distill or classify",
                               a->router_objective);
    if (a->dtype != NULL && !sym_output_dtype_from_name(a->dtype, &cfg->dtype))
        return cli_usage_error("merge", "--dtype '%s' is not bfloat16, float16 or float32",
                               a->dtype);
    return 0;
}

typedef struct progress_state {
    time_t last;
} progress_state;

static void show_progress(void *context, size_t done, size_t total, const char *tensor)
{
    progress_state *p = context;
    time_t now = time(NULL);
    if (now == p->last && done < total)
        return;
    p->last = now;
    fprintf(stderr, "\r[%zu/%zu] %-60.60s", done, total, tensor);
    if (done == total)
        fputc('\n', stderr);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* After an I/O error the tensors already written stay journaled in OUTPUT_DIR.partial, so
 * the message tells the user that a rerun continues from there. */
static void add_resume_hint(sym_error *err, const char *output)
{
    char partial[PATH_MAX];
    struct stat st;
    snprintf(partial, sizeof partial, "%s.partial", output);
    if (stat(partial, &st) != 0 || !S_ISDIR(st.st_mode))
        return;
    size_t len = strlen(err->message);
    snprintf(err->message + len, sizeof err->message - len,
             "; fix the cause and run the same command again to resume");
}

static void print_resume_command(int argc, char **argv)
{
    fprintf(stderr, CLI_NAME ": to resume, run:\n  " CLI_NAME " merge");
    for (int i = 1; i < argc; i++) {
        bool plain = strpbrk(argv[i], " \t'\"$\\`*?;&|<>()") == NULL && argv[i][0] != '\0';
        fprintf(stderr, plain ? " %s" : " '%s'", argv[i]);
    }
    fputc('\n', stderr);
}

static void print_result(const sym_merge_result *r, const char *output)
{
    if (cli_verbosity == 0)
        return;
    if (r->already_complete) {
        printf("%s is already complete: this merge finished before; nothing to do\n", output);
        return;
    }
    printf("merged %zu tensors (%llu bytes, %u shard(s)) into %s", r->tensors_total,
           (unsigned long long)r->bytes_total, r->shards, output);
    if (r->tensors_resumed > 0)
        printf("; %zu tensors resumed from the journal", r->tensors_resumed);
    putchar('\n');
}

int cmd_merge(int argc, char **argv)
{
    merge_args a = {.calibration_tokens = -1, .seed = -1, .router_steps = -1};
    a.opts.shard_size = 5ull << 30;
    a.opts.threads = 1;
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? CLI_EXIT_OK : rc; /* rc < 0: the help was printed */
    const char *output = argv[optind + 1];
    if (strlen(output) > PATH_MAX - 128)
        return cli_usage_error("merge", "OUTPUT_DIR is longer than %d bytes", PATH_MAX - 128);

    sym_merge_config cfg;
    sym_error err;
    if (sym_merge_config_load(&cfg, argv[optind], &err) != SYM_OK) {
        sym_merge_config_free(&cfg);
        return cli_fail_error(&err);
    }
    rc = apply_overrides(&a, &cfg);
    if (rc != 0) {
        sym_merge_config_free(&cfg);
        return rc;
    }
    progress_state progress = {0};
    a.opts.output = output;
    a.opts.interrupt = &interrupted;
    if (cli_verbosity > 0 && isatty(STDERR_FILENO)) {
        a.opts.progress = show_progress;
        a.opts.progress_context = &progress;
    }
    install_signals();
    sym_merge_result result;
    sym_status s = sym_merge_run(&cfg, &a.opts, &result, &err);
    sym_merge_config_free(&cfg);
    if (s != SYM_OK) {
        if (s == SYM_ERR_IO)
            add_resume_hint(&err, output);
        rc = cli_fail_error(&err);
        if (s == SYM_ERR_INTERRUPTED)
            print_resume_command(argc, argv);
        return rc;
    }
    print_result(&result, output);
    return CLI_EXIT_OK;
}
