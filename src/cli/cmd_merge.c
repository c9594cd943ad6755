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

/* Signals received: the first requests a stop after the step in progress, the
 * second stops the process at once. */
static volatile sig_atomic_t interrupted;
static const cli_progress *shown_progress;

/* Messages the signal handler writes with write(2); built before the handlers are
 * installed, because formatting is not async-signal-safe. */
static char first_signal_text[256];
static char second_signal_text[8192];

static void write_text(const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, text, len);
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

/* Stopping with _exit at any instant is safe: a tensor is journaled only after its bytes are
 * durable, a torn journal record is cut off on resume, and the hidden-state and statistics
 * caches are written to a temporary name and renamed, so OUTPUT.partial is as consistent as
 * after a SIGKILL, which the resume tests exercise. Only the layer in progress is lost. */
static void on_signal(int signo)
{
    (void)signo;
    if (interrupted == 0) {
        interrupted = 1;
        if (shown_progress != NULL && shown_progress->drawn)
            write_text("\n");
        write_text(first_signal_text);
        return;
    }
    write_text(second_signal_text);
    _exit(CLI_EXIT_INTERRUPTED);
}

static void print_help(void)
{
    printf("usage: " CLI_NAME " merge [OPTIONS] CONFIG OUTPUT_DIR\n"
           "       " CLI_NAME " merge --check [--json] [OPTIONS] CONFIG [OUTPUT_DIR]\n"
           "\n"
           "Merge the dense models named in CONFIG (a mergekit-moe YAML file, optionally\n"
           "with a symphony: section) into a Mixtral-style MoE in OUTPUT_DIR. The output is\n"
           "built in OUTPUT_DIR.partial and renamed when complete; rerunning the same\n"
           "command after an interruption resumes it.\n"
           "\n"
           "With --check nothing is written: the config, the sources' headers and their\n"
           "compatibility are validated and the plan is printed (memory, disk, bytes,\n"
           "FLOPs, an estimated time from a short disk and GEMM measurement). Every\n"
           "problem found is listed.\n"
           "\n"
           "Options (each overrides the config):\n"
           "      --calibration-tokens N  calibration tokens in all, split equally between\n"
           "                              the experts' domains (0: no alignment, no router\n"
           "                              training)\n"
           "      --router-objective OBJ  distill (default), distill-topk or classify\n"
           "      --router-domain-weights W\n"
           "                              lens (default: each domain's loss weighted by\n"
           "                              what diluting its expert costs its predictions)\n"
           "                              or uniform\n"
           "      --router-steps N        optimiser steps per router\n"
           "      --router-lr X           router learning rate\n"
           "      --seed N                seed of router training: held-out split,\n"
           "                              batches and random router rows\n"
           "      --cache-dtype TYPE      hidden-state cache precision: f32 (default) or bf16\n"
           "      --dtype TYPE            output dtype: bfloat16, float16 or float32\n"
           "      --memory-limit SIZE     refuse a plan needing more working memory\n"
           "                              (e.g. 4G; default: no limit)\n"
           "      --shard-size SIZE       tensor bytes per output shard (default 5G)\n"
           "      --threads N             worker threads (default 1); part of the resume\n"
           "                              fingerprint\n"
           "      --force                 replace an existing OUTPUT_DIR\n"
           "      --restart               discard an interrupted merge and start over\n"
           "      --resume-check MODE     how a resume checks the tensors already written:\n"
           "                              quick (default: shard sizes and 32 KiB sampled\n"
           "                              from each tensor) or full (every byte re-hashed)\n"
           "      --check                 validate and print the plan; merge nothing\n"
           "      --json                  with --check, print the plan as JSON\n"
           "      --no-progress           no progress line (it appears only when stderr is\n"
           "                              a terminal)\n"
           "  -q, --quiet                 print errors only: no progress, no summary\n"
           "  -v, --verbose               also print a line per calibrated layer\n"
           "  -h, --help                  print this help and exit\n"
           "\n"
           "Exit status: 0 success (also when the merge had already completed, and for\n"
           "--check when the merge can run), 1 failure (--check: problems found), 2 usage\n"
           "error, 130 interrupted (rerun the command to resume).\n");
}

/* Settings from the command line; negative means "not given". */
typedef struct merge_args {
    long long calibration_tokens;
    long long router_steps;
    double router_lr;
    const char *router_objective;
    const char *router_domain_weights;
    const char *cache_dtype;
    long long seed;
    const char *dtype;
    const char *resume_check;
    bool check;
    bool json;
    bool no_progress;
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
    OPT_RESUME_CHECK,
    OPT_ROUTER_OBJECTIVE,
    OPT_ROUTER_DOMAIN_WEIGHTS,
    OPT_ROUTER_STEPS,
    OPT_ROUTER_LR,
    OPT_CACHE_DTYPE,
    OPT_CHECK,
    OPT_JSON,
    OPT_NO_PROGRESS,
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
    case OPT_ROUTER_DOMAIN_WEIGHTS:
        a->router_domain_weights = value;
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
    case OPT_CACHE_DTYPE:
        a->cache_dtype = value;
        return 0;
    case OPT_FORCE:
        a->opts.force = true;
        return 0;
    case OPT_RESTART:
        a->opts.restart = true;
        return 0;
    case OPT_RESUME_CHECK:
        a->resume_check = value;
        return 0;
    case OPT_CHECK:
        a->check = true;
        return 0;
    case OPT_JSON:
        a->json = true;
        return 0;
    case OPT_NO_PROGRESS:
        a->no_progress = true;
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
        {"router-domain-weights", required_argument, NULL, OPT_ROUTER_DOMAIN_WEIGHTS},
        {"router-steps", required_argument, NULL, OPT_ROUTER_STEPS},
        {"router-lr", required_argument, NULL, OPT_ROUTER_LR},
        {"cache-dtype", required_argument, NULL, OPT_CACHE_DTYPE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"restart", no_argument, NULL, OPT_RESTART},
        {"resume-check", required_argument, NULL, OPT_RESUME_CHECK},
        {"check", no_argument, NULL, OPT_CHECK},
        {"json", no_argument, NULL, OPT_JSON},
        {"no-progress", no_argument, NULL, OPT_NO_PROGRESS},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "qvh", options, NULL)) != -1) {
        if (opt == 'h') {
            print_help();
            return -1;
        }
        if (opt == 'q') {
            cli_verbosity = 0;
            continue;
        }
        if (opt == 'v') {
            cli_verbosity++;
            continue;
        }
        if (opt == '?')
            return cli_usage_error("merge", "unknown option '%s'", argv[optind - 1]);
        int rc = parse_option(opt, optarg, a);
        if (rc != 0)
            return rc;
    }
    int positional = argc - optind;
    if (a->check && (positional < 1 || positional > 2))
        return cli_usage_error("merge", "--check expects CONFIG and an optional OUTPUT_DIR, "
                               "got %d argument(s)", positional);
    if (!a->check && positional != 2)
        return cli_usage_error("merge", "expected CONFIG and OUTPUT_DIR, got %d argument(s)",
                               positional);
    if (a->json && !a->check)
        return cli_usage_error("merge", "--json applies to --check only");
    if (a->resume_check != NULL && strcmp(a->resume_check, "quick") == 0)
        a->opts.resume_check = SYM_RESUME_CHECK_QUICK;
    else if (a->resume_check != NULL && strcmp(a->resume_check, "full") == 0)
        a->opts.resume_check = SYM_RESUME_CHECK_FULL;
    else if (a->resume_check != NULL)
        return cli_usage_error("merge", "--resume-check '%s' is not quick or full",
                               a->resume_check);
    if (positional == 2 && argv[optind + 1][0] == '\0')
        return cli_usage_error("merge", "OUTPUT_DIR is empty; name the directory to create");
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
    if (a->router_objective != NULL &&
        !sym_router_objective_parse(a->router_objective, &cfg->router.objective))
        return cli_usage_error("merge", "--router-objective '%s' is not distill, "
                               "distill-topk or classify", a->router_objective);
    if (cfg->router.objective == SYM_ROUTER_DISTILL_TOPK && cfg->experts_per_token < 2)
        return cli_usage_error("merge", "--router-objective distill-topk needs "
                               "experts_per_token of 2 or more (the config has %lld): with "
                               "one expert per token the router gets no gradient",
                               (long long)cfg->experts_per_token);
    if (a->router_domain_weights != NULL &&
        !sym_domain_weights_from_name(a->router_domain_weights, &cfg->router.domain_weights))
        return cli_usage_error("merge", "--router-domain-weights '%s' is not lens or uniform",
                               a->router_domain_weights);
    if (a->cache_dtype != NULL && strcmp(a->cache_dtype, "f32") == 0)
        cfg->cache_dtype = SYM_HCACHE_F32;
    else if (a->cache_dtype != NULL && strcmp(a->cache_dtype, "bf16") == 0)
        cfg->cache_dtype = SYM_HCACHE_BF16;
    else if (a->cache_dtype != NULL)
        return cli_usage_error("merge", "--cache-dtype '%s' is not f32 or bf16", a->cache_dtype);
    if (a->dtype != NULL && !sym_output_dtype_from_name(a->dtype, &cfg->dtype))
        return cli_usage_error("merge", "--dtype '%s' is not bfloat16, float16 or float32",
                               a->dtype);
    return 0;
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* After an I/O error the tensors already written stay journaled in OUTPUT_DIR.partial, so
 * the message adds that a rerun continues from there. */
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

/* Appends word to buf (of size bytes), single-quoted when the shell would split or expand
 * it; a single quote inside becomes '\''. */
static void append_shell_word(char *buf, size_t size, const char *word)
{
    size_t len = strlen(buf);
    bool plain = word[0] != '\0' && strspn(word, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                                                  "QRSTUVWXYZ0123456789-_./=:,+@%") ==
                                         strlen(word);
    if (plain) {
        snprintf(buf + len, size - len, " %s", word);
        return;
    }
    snprintf(buf + len, size - len, " '");
    for (const char *c = word; *c != '\0'; c++) {
        len = strlen(buf);
        snprintf(buf + len, size - len, *c == '\'' ? "'\\''" : "%c", *c);
    }
    len = strlen(buf);
    snprintf(buf + len, size - len, "'");
}

/* Writes the command that resumes this merge: the program as it was invoked, "merge" and
 * the same arguments. main passes the arguments from the command name on, so argv[-1] is
 * the program's argv[0]. */
static void format_resume_command(int argc, char **argv, char *buf, size_t size)
{
    snprintf(buf, size, CLI_NAME ": to resume, run:\n ");
    append_shell_word(buf, size, argv[-1]);
    for (int i = 0; i < argc; i++)
        append_shell_word(buf, size, argv[i]);
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "\n");
}

static void prepare_signal_texts(int argc, char **argv, const char *output)
{
    snprintf(first_signal_text, sizeof first_signal_text,
             CLI_NAME ": interrupted: finishing the current step; interrupt again (Ctrl-C) to "
             "stop now, the work of this layer will be redone on resume\n");
    char command[sizeof second_signal_text / 2];
    format_resume_command(argc, argv, command, sizeof command);
    snprintf(second_signal_text, sizeof second_signal_text,
             "\n" CLI_NAME ": stopped; %.3000s.partial is consistent, and a resume redoes the "
             "layer in progress\n%s", output, command);
}

static void print_resume_command(int argc, char **argv)
{
    char command[sizeof second_signal_text];
    format_resume_command(argc, argv, command, sizeof command);
    fputs(command, stderr);
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

/* A journaled tensor that fails the resume check was damaged outside the merge, so this is
 * printed even with --quiet. */
static void print_failed_check(const sym_merge_result *r, const char *output)
{
    if (r->tensors_failed_check == 0)
        return;
    fprintf(stderr, CLI_NAME ": warning: %zu journaled tensor(s) in %s.partial failed the "
            "resume check (the first: '%s'), so they were written again; check the disk "
            "if this happens without a reason\n", r->tensors_failed_check, output,
            r->first_failed_check);
}

/* Runs the merge with the progress line and prints the result and the summary. */
static int run_merge(int argc, char **argv, merge_args *a, sym_merge_config *cfg)
{
    const char *output = a->opts.output;
    cli_progress progress;
    bool line = cli_verbosity > 0 && !a->no_progress && isatty(STDERR_FILENO);
    cli_progress_init(&progress, line, cli_verbosity > 1);
    a->opts.interrupt = &interrupted;
    a->opts.progress = cli_progress_update;
    a->opts.progress_context = &progress;
    shown_progress = &progress;
    prepare_signal_texts(argc, argv, output);
    install_signals();
    sym_merge_result result;
    sym_error err;
    sym_status s = sym_merge_run(cfg, &a->opts, &result, &err);
    cli_progress_finish(&progress);
    print_failed_check(&result, output);
    if (s != SYM_OK) {
        if (s == SYM_ERR_IO)
            add_resume_hint(&err, output);
        int rc = cli_fail_error(&err);
        if (s == SYM_ERR_INTERRUPTED)
            print_resume_command(argc, argv);
        return rc;
    }
    print_result(&result, output);
    if (cli_verbosity > 0 && !result.already_complete)
        cli_merge_summary(&result, output, progress.seconds);
    return CLI_EXIT_OK;
}

int cmd_merge(int argc, char **argv)
{
    merge_args a = {.calibration_tokens = -1, .seed = -1, .router_steps = -1};
    a.opts.shard_size = 5ull << 30;
    a.opts.threads = 1;
    int rc = parse_args(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? CLI_EXIT_OK : rc; /* rc < 0: the help was printed */
    const char *config = argv[optind];
    const char *output = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (output != NULL && strlen(output) > PATH_MAX - 128)
        return cli_usage_error("merge", "OUTPUT_DIR is longer than %d bytes", PATH_MAX - 128);

    sym_merge_config cfg;
    sym_error err;
    if (sym_merge_config_load(&cfg, config, &err) != SYM_OK) {
        sym_merge_config_free(&cfg);
        return cli_fail_error(&err);
    }
    rc = apply_overrides(&a, &cfg);
    a.opts.output = output;
    if (rc == 0 && a.check)
        rc = cli_merge_check(&cfg, &a.opts, config, a.json);
    else if (rc == 0)
        rc = run_merge(argc, argv, &a, &cfg);
    sym_merge_config_free(&cfg);
    return rc;
}
