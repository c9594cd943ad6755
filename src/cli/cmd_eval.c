/* symphony-stream eval: perplexity of a dense Llama or Mixtral MoE model, out of core. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "symphony/forward.h"
#include "symphony/tokenizer.h"

static void print_help(void)
{
    printf("usage: " CLI_NAME " eval MODEL_DIR (--text FILE | --ids FILE) [OPTIONS]\n"
           "\n"
           "Compute the perplexity of a model on token ids, streaming one layer at a time.\n"
           "The ids are cut into consecutive chunks of --seq-len (a shorter tail is dropped);\n"
           "each chunk c is scored as input [BOS] + c[:-1] with targets c.\n"
           "\n"
           "Options:\n"
           "      --text FILE           UTF-8 text, encoded with the model's tokenizer.json\n"
           "                            as one string (dummy prefix once, no BOS)\n"
           "      --ids FILE            whitespace-separated decimal token ids instead\n"
           "      --seq-len N           tokens per chunk (default 128)\n"
           "      --json                print one JSON object\n"
           "      --memory-limit SIZE   memory for weights, activations and caches, e.g. 12G\n"
           "                            (default: half of MemAvailable)\n"
           "      --threads N           compute threads, ours and OpenBLAS's (default 1)\n"
           "      --prefetch MODE       read (default), advise or none\n"
           "  -q, --quiet               print only the result\n"
           "  -v, --verbose             also print the plan and the throughput\n"
           "  -h, --help                print this help and exit\n"
           "\n"
           "Exit status: 0 on success, 1 on failure, 2 for usage errors.\n");
}

uint64_t cli_default_memory_limit(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kib = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1)
            break;
    }
    if (f != NULL)
        fclose(f);
    return (uint64_t)kib * 1024 / 2;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Progress line state: at most 5 updates a second, on a terminal only. */
typedef struct progress_state {
    double start, last;
    uint64_t tokens;
    bool shown;
} progress_state;

static void show_progress(void *ctx, int layer, int n_layers, uint64_t batch_tokens)
{
    progress_state *p = ctx;
    double t = now_seconds();
    if (layer == n_layers - 1)
        p->tokens += batch_tokens;
    if (t - p->last < 0.2)
        return;
    p->last = t;
    p->shown = true;
    fprintf(stderr, "\rlayer %d/%d, %llu tokens done, %.0f tokens/s   ", layer + 1, n_layers,
            (unsigned long long)p->tokens, (double)p->tokens / (t - p->start));
}

/* One pass runs per process, so one progress line is enough. */
static progress_state progress;

void cli_forward_progress(sym_forward_options *opt)
{
    progress_state *p = &progress;
    memset(p, 0, sizeof *p);
    p->start = p->last = now_seconds();
    if (cli_verbosity >= 1 && isatty(STDERR_FILENO)) {
        opt->progress = show_progress;
        opt->progress_ctx = p;
    }
}

double cli_forward_progress_end(void)
{
    if (progress.shown)
        fprintf(stderr, "\r%60s\r", "");
    return now_seconds() - progress.start;
}

/* Parses the options eval and generate share; returns -1 when opt is not one of them. */
int cli_forward_option(const char *command, int opt, const char *arg,
                       sym_forward_options *options)
{
    long long v;
    switch (opt) {
    case 'M':
        if (!cli_parse_size(arg, &options->memory_limit) || options->memory_limit == 0)
            return cli_usage_error(command, "invalid --memory-limit '%s'; expected a size "
                                   "such as 512M or 12G", arg);
        return CLI_EXIT_OK;
    case 'T':
        if (!cli_parse_int(arg, 1, 256, &v))
            return cli_usage_error(command, "invalid --threads '%s'; expected 1..256", arg);
        options->threads = (int)v;
        return CLI_EXIT_OK;
    case 'P':
        if (!sym_prefetch_mode_from_name(arg, &options->prefetch))
            return cli_usage_error(command, "invalid --prefetch '%s'; expected read, advise "
                                   "or none", arg);
        return CLI_EXIT_OK;
    case 'q':
        cli_verbosity = 0;
        return CLI_EXIT_OK;
    case 'v':
        cli_verbosity++;
        return CLI_EXIT_OK;
    default:
        return -1;
    }
}

typedef struct eval_args {
    const char *model;
    const char *ids;
    const char *text;
    bool json;
    sym_forward_options opt;
} eval_args;

static int parse_args(int argc, char **argv, eval_args *a)
{
    static const struct option longopts[] = {
        {"ids", required_argument, NULL, 'i'},
        {"text", required_argument, NULL, 'x'},
        {"seq-len", required_argument, NULL, 'L'},
        {"json", no_argument, NULL, 'j'},
        {"force-expert", required_argument, NULL, 'E'},
        {"memory-limit", required_argument, NULL, 'M'},
        {"threads", required_argument, NULL, 'T'},
        {"prefetch", required_argument, NULL, 'P'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    long long v;
    while ((c = getopt_long(argc, argv, "qvh", longopts, NULL)) != -1) {
        int rc = cli_forward_option("eval", c, optarg, &a->opt);
        if (rc >= 0 && rc != CLI_EXIT_OK)
            return rc;
        if (rc == CLI_EXIT_OK)
            continue;
        if (c == 'i') {
            a->ids = optarg;
        } else if (c == 'x') {
            a->text = optarg;
        } else if (c == 'L') {
            if (!cli_parse_int(optarg, 2, 1 << 20, &v))
                return cli_usage_error("eval", "invalid --seq-len '%s'; expected 2 or more",
                                       optarg);
            a->opt.seq_len = (int)v;
        } else if (c == 'j') {
            a->json = true;
        } else if (c == 'E') {
            if (!cli_parse_int(optarg, 0, 1 << 20, &v))
                return cli_usage_error("eval", "invalid --force-expert '%s'; expected an "
                                       "expert index from 0", optarg);
            a->opt.force_expert = (int)v;
        } else if (c == 'h') {
            print_help();
            exit(CLI_EXIT_OK);
        } else {
            return cli_usage_error("eval", "invalid option");
        }
    }
    if (optind + 1 != argc)
        return cli_usage_error("eval", "expected one MODEL_DIR, got %d", argc - optind);
    if ((a->ids == NULL) == (a->text == NULL))
        return cli_usage_error("eval", "give exactly one of --text FILE and --ids FILE");
    a->model = argv[optind];
    return CLI_EXIT_OK;
}

static void print_result(const eval_args *a, const sym_eval_result *r)
{
    if (a->json) {
        json_t *o = json_pack("{s:s, s:f, s:f, s:I, s:i, s:I}", "model", a->model, "ppl",
                              r->ppl, "nll_sum", r->nll_sum, "tokens", (json_int_t)r->tokens,
                              "seq_len", a->opt.seq_len, "chunks", (json_int_t)r->chunks);
        char *text = json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
        printf("%s\n", text);
        free(text);
        json_decref(o);
        return;
    }
    printf("perplexity %.6f\n", r->ppl);
    printf("nll_sum    %.6f nats\n", r->nll_sum);
    printf("tokens     %llu (%llu chunks of %d)\n", (unsigned long long)r->tokens,
           (unsigned long long)r->chunks, a->opt.seq_len);
}

int cmd_eval(int argc, char **argv)
{
    eval_args a = {0};
    sym_forward_options_init(&a.opt);
    a.opt.memory_limit = cli_default_memory_limit();
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_EXIT_OK)
        return rc;
    sym_error err;
    sym_model *model;
    if (sym_model_open(&model, a.model, &err) != SYM_OK)
        return cli_fail_error(&err);
    int32_t *ids;
    size_t n;
    sym_status loaded = a.text != NULL
                            ? cli_encode_text_file(a.model, a.text, &ids, &n, &err)
                            : sym_ids_load(a.ids,
                                           (size_t)sym_model_get_config(model)->vocab_size,
                                           &ids, &n, &err);
    if (loaded != SYM_OK) {
        sym_model_close(model);
        return cli_fail_error(&err);
    }
    cli_forward_progress(&a.opt);
    sym_eval_result result;
    sym_status st = sym_eval_perplexity(model, ids, n, &a.opt, &result, &err);
    double seconds = cli_forward_progress_end();
    sym_model_close(model);
    free(ids);
    if (st != SYM_OK)
        return cli_fail_error(&err);
    print_result(&a, &result);
    if (cli_verbosity >= 2)
        fprintf(stderr, "%llu tokens in %llu batches, %.2f s, %.0f tokens/s, prefetch %s\n",
                (unsigned long long)result.tokens, (unsigned long long)result.batches, seconds,
                (double)result.tokens / seconds, sym_prefetch_mode_name(a.opt.prefetch));
    const sym_forward_timing *t = &result.timing;
    if (cli_verbosity >= 2)
        fprintf(stderr, "time: I/O wait %.3f s, convert %.3f s, attention %.3f s, "
                "FFN %.3f s, head %.3f s\n", t->io_wait, t->convert, t->attention, t->ffn,
                t->head);
    return CLI_EXIT_OK;
}
