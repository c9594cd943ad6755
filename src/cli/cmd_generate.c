/* symphony-stream generate: continue a prompt with a dense or MoE model. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "symphony/forward.h"
#include "symphony/tokenizer.h"

static void print_help(void)
{
    printf("usage: " CLI_NAME " generate MODEL_DIR (--prompt TEXT | --prompt-ids IDS) "
           "[OPTIONS]\n"
           "\n"
           "Generate up to -n tokens after a prompt, with a KV cache, streaming every layer\n"
           "once per step; stop early after the config's eos_token_id. With --prompt, the\n"
           "text is encoded with the model's tokenizer.json (BOS first) and the prompt and\n"
           "its continuation are printed as text; with --prompt-ids, as ids.\n"
           "\n"
           "Options:\n"
           "      --prompt TEXT         prompt text\n"
           "      --prompt-ids IDS      whitespace-separated decimal ids, BOS included\n"
           "  -n, --max-tokens N        new tokens at most (default 64)\n"
           "      --temperature T       0 (default) picks the most likely token\n"
           "      --seed S              seed of the sampler (default 0)\n"
           "      --memory-limit SIZE   memory for weights, activations and the KV cache\n"
           "                            (default: half of MemAvailable)\n"
           "      --threads N           compute threads, ours and OpenBLAS's (default 1)\n"
           "      --prefetch MODE       read (default), advise or none\n"
           "  -q, --quiet               no progress line\n"
           "  -v, --verbose             also print the throughput\n"
           "  -h, --help                print this help and exit\n"
           "\n"
           "Exit status: 0 on success, 1 on failure, 2 for usage errors.\n");
}

typedef struct generate_args {
    const char *model;
    const char *prompt_ids;
    const char *prompt_text;
    sym_generate_options gen;
    sym_forward_options opt;
} generate_args;

static int parse_generate_option(int c, const char *arg, generate_args *a)
{
    long long v;
    switch (c) {
    case 'p':
        a->prompt_ids = arg;
        return CLI_EXIT_OK;
    case 'x':
        a->prompt_text = arg;
        return CLI_EXIT_OK;
    case 'n':
        if (!cli_parse_int(arg, 0, 1 << 20, &v))
            return cli_usage_error("generate", "invalid -n '%s'; expected 0 or more", arg);
        a->gen.max_new_tokens = (size_t)v;
        return CLI_EXIT_OK;
    case 't':
        if (!cli_parse_double(arg, &a->gen.temperature) || a->gen.temperature < 0)
            return cli_usage_error("generate", "invalid --temperature '%s'; expected a "
                                   "number >= 0", arg);
        return CLI_EXIT_OK;
    case 's':
        if (!cli_parse_int(arg, 0, INT64_MAX, &v))
            return cli_usage_error("generate", "invalid --seed '%s'; expected 0 or more", arg);
        a->gen.seed = (uint64_t)v;
        return CLI_EXIT_OK;
    case 'h':
        print_help();
        exit(CLI_EXIT_OK);
    default:
        return cli_usage_error("generate", "invalid option");
    }
}

static int parse_args(int argc, char **argv, generate_args *a)
{
    static const struct option longopts[] = {
        {"prompt-ids", required_argument, NULL, 'p'},
        {"prompt", required_argument, NULL, 'x'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temperature", required_argument, NULL, 't'},
        {"seed", required_argument, NULL, 's'},
        {"memory-limit", required_argument, NULL, 'M'},
        {"threads", required_argument, NULL, 'T'},
        {"prefetch", required_argument, NULL, 'P'},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "n:qvh", longopts, NULL)) != -1) {
        int rc = cli_forward_option("generate", c, optarg, &a->opt);
        if (rc < 0)
            rc = parse_generate_option(c, optarg, a);
        if (rc != CLI_EXIT_OK)
            return rc;
    }
    if (optind + 1 != argc)
        return cli_usage_error("generate", "expected one MODEL_DIR, got %d", argc - optind);
    if ((a->prompt_ids == NULL) == (a->prompt_text == NULL))
        return cli_usage_error("generate", "give exactly one of --prompt and --prompt-ids");
    a->model = argv[optind];
    return CLI_EXIT_OK;
}

/* Parses the --prompt-ids text into at most cap ids. */
static int parse_prompt(const char *text, int32_t *ids, size_t cap, size_t *n)
{
    char *copy = strdup(text);
    char *save = NULL;
    *n = 0;
    if (copy == NULL)
        return cli_fail("out of memory");
    for (char *w = strtok_r(copy, " \t\n", &save); w != NULL; w = strtok_r(NULL, " \t\n", &save)) {
        long long v;
        if (*n == cap || !cli_parse_int(w, 0, INT32_MAX, &v)) {
            int rc = cli_usage_error("generate", "invalid --prompt-ids: '%s' is not a token "
                                     "id or there are more than %zu ids", w, cap);
            free(copy);
            return rc;
        }
        ids[(*n)++] = (int32_t)v;
    }
    free(copy);
    if (*n == 0)
        return cli_usage_error("generate", "--prompt-ids is empty; give BOS at least");
    return CLI_EXIT_OK;
}

/* Prints the prompt and its continuation as text, or as ids when tok is NULL. */
static int print_output(const sym_tokenizer *tok, const int32_t *ids, size_t n)
{
    if (tok == NULL) {
        for (size_t i = 0; i < n; i++)
            printf("%s%d", i ? " " : "", ids[i]);
        printf("\n");
        return CLI_EXIT_OK;
    }
    char *text;
    size_t len;
    sym_error err;
    if (sym_tokenizer_decode(tok, ids, n, true, &text, &len, &err) != SYM_OK)
        return cli_fail_error(&err);
    fwrite(text, 1, len, stdout);
    printf("\n");
    free(text);
    return CLI_EXIT_OK;
}

static int run(const generate_args *a, sym_model *model, const sym_tokenizer *tok,
               const int32_t *prompt, size_t n_prompt)
{
    int32_t *out = malloc((n_prompt + a->gen.max_new_tokens + 1) * sizeof *out);
    if (out == NULL)
        return cli_fail("out of memory");
    sym_forward_options opt = a->opt;
    sym_generate_options gen = a->gen;
    gen.eos_token_id = sym_model_get_config(model)->eos_token_id;
    size_t n_out = 0;
    sym_error err;
    cli_forward_progress(&opt);
    sym_status st = sym_generate(model, prompt, n_prompt, &gen, &opt, out + n_prompt, &n_out,
                                 &err);
    double seconds = cli_forward_progress_end();
    if (st != SYM_OK) {
        free(out);
        return cli_fail_error(&err);
    }
    memcpy(out, prompt, n_prompt * sizeof *out);
    int rc = print_output(tok, out, n_prompt + n_out);
    if (rc == CLI_EXIT_OK && cli_verbosity >= 2)
        fprintf(stderr, "%zu new tokens in %.2f s\n", n_out, seconds);
    free(out);
    return rc;
}

int cmd_generate(int argc, char **argv)
{
    generate_args a = {0};
    sym_forward_options_init(&a.opt);
    a.opt.memory_limit = cli_default_memory_limit();
    a.gen.max_new_tokens = 64;
    int rc = parse_args(argc, argv, &a);
    if (rc != CLI_EXIT_OK)
        return rc;
    sym_model *model;
    sym_error err;
    if (sym_model_open(&model, a.model, &err) != SYM_OK)
        return cli_fail_error(&err);
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    sym_tokenizer *tok = NULL;
    if (a.prompt_text != NULL) {
        if (sym_tokenizer_load(a.model, &tok, &err) != SYM_OK ||
            sym_tokenizer_encode(tok, a.prompt_text, strlen(a.prompt_text),
                                 SYM_TOKENIZE_ADD_BOS, &prompt, &n_prompt, &err) != SYM_OK)
            rc = cli_fail_error(&err);
    } else {
        prompt = malloc(4096 * sizeof *prompt);
        rc = prompt != NULL ? parse_prompt(a.prompt_ids, prompt, 4096, &n_prompt)
                            : cli_fail("out of memory");
    }
    if (rc == CLI_EXIT_OK)
        rc = run(&a, model, tok, prompt, n_prompt);
    free(prompt);
    sym_tokenizer_free(tok);
    sym_model_close(model);
    return rc;
}
