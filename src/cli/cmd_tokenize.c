/* symphony-stream tokenize: text to token ids and ids to text with a model's tokenizer. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "symphony/tokenizer.h"

/* Largest text file encoded, in bytes. */

typedef struct tokenize_options {
    const char *model;
    const char *text_path;
    const char *ids_path;
    bool decode;
    bool keep_special;
    unsigned flags;
} tokenize_options;

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: " CLI_NAME " tokenize MODEL --text FILE [--bos] [--eos]\n"
            "       " CLI_NAME " tokenize MODEL --decode --ids FILE [--keep-special]\n"
            "       " CLI_NAME " tokenize MODEL --ids FILE\n"
            "\n"
            "Encode UTF-8 text into token ids, or decode ids into text, with the\n"
            "tokenizer.json (BPE) of MODEL, a model directory or a tokenizer.json file.\n"
            "Ids are printed on one line, separated by spaces. An ids FILE holds\n"
            "whitespace-separated decimal ids; without --decode it is checked against\n"
            "the vocabulary and printed again. FILE may be - for standard input.\n"
            "\n"
            "Options:\n"
            "  --text FILE      encode the whole FILE as one string\n"
            "  --ids FILE       read token ids from FILE\n"
            "  --decode         print the text of the ids of --ids\n"
            "  --bos            put the BOS id first\n"
            "  --eos            put the EOS id last\n"
            "  --keep-special   with --decode, keep special tokens such as <s> in the text\n"
            "  -h, --help       print this help and exit\n"
            "\n"
            "Exit status: 0 success, 1 failure (unreadable input, an id outside the\n"
            "vocabulary), 2 usage error.\n");
}

static int parse_options(int argc, char **argv, tokenize_options *options)
{
    static const struct option long_options[] = {
        {"text", required_argument, NULL, 't'}, {"ids", required_argument, NULL, 'i'},
        {"decode", no_argument, NULL, 'd'},     {"bos", no_argument, NULL, 'b'},
        {"eos", no_argument, NULL, 'e'},        {"keep-special", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
        switch (c) {
        case 't': options->text_path = optarg; break;
        case 'i': options->ids_path = optarg; break;
        case 'd': options->decode = true; break;
        case 'b': options->flags |= SYM_TOKENIZE_ADD_BOS; break;
        case 'e': options->flags |= SYM_TOKENIZE_ADD_EOS; break;
        case 'k': options->keep_special = true; break;
        case 'h': print_help(stdout); return -1;
        default:
            return cli_usage_error("tokenize", "unknown option or missing value: '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("tokenize", "expected one MODEL argument, got %d", argc - optind);
    options->model = argv[optind];
    if ((options->text_path == NULL) == (options->ids_path == NULL))
        return cli_usage_error("tokenize", "give exactly one of --text FILE and --ids FILE");
    if (options->decode && options->ids_path == NULL)
        return cli_usage_error("tokenize", "--decode needs --ids FILE");
    if (options->flags != 0 && options->text_path == NULL)
        return cli_usage_error("tokenize", "--bos and --eos apply only to --text");
    return CLI_EXIT_OK;
}

static int print_ids(const int32_t *ids, size_t count)
{
    for (size_t i = 0; i < count; i++)
        printf(i == 0 ? "%d" : " %d", (int)ids[i]);
    putchar('\n');
    if (fflush(stdout) != 0 || ferror(stdout))
        return cli_fail("tokenize: writing to standard output failed");
    return CLI_EXIT_OK;
}

static int run_encode(const sym_tokenizer *tok, const tokenize_options *options)
{
    char *text = NULL;
    size_t len = 0;
    sym_error err;
    sym_error_clear(&err);
    if (sym_text_load(options->text_path, &text, &len, &err) != SYM_OK)
        return cli_fail_error(&err);
    int32_t *ids;
    size_t count;
    sym_status status = sym_tokenizer_encode(tok, text, len, options->flags, &ids, &count, &err);
    free(text);
    if (status != SYM_OK)
        return cli_fail_error(&err);
    int rc = print_ids(ids, count);
    free(ids);
    return rc;
}

static int run_ids(const sym_tokenizer *tok, const tokenize_options *options)
{
    sym_error err;
    sym_error_clear(&err);
    int32_t *ids;
    size_t count;
    sym_status status = sym_ids_load(options->ids_path, sym_tokenizer_vocab_size(tok), &ids,
                                     &count, &err);
    if (status != SYM_OK)
        return cli_fail_error(&err);
    if (!options->decode) {
        int rc = print_ids(ids, count);
        free(ids);
        return rc;
    }
    char *text;
    size_t len;
    status = sym_tokenizer_decode(tok, ids, count, !options->keep_special, &text, &len, &err);
    free(ids);
    if (status != SYM_OK)
        return cli_fail_error(&err);
    size_t written = fwrite(text, 1, len, stdout);
    free(text);
    if (written != len || fflush(stdout) != 0)
        return cli_fail("tokenize: writing to standard output failed");
    return CLI_EXIT_OK;
}

int cmd_tokenize(int argc, char **argv)
{
    tokenize_options options = {0};
    int rc = parse_options(argc, argv, &options);
    if (rc != CLI_EXIT_OK)
        return rc < 0 ? CLI_EXIT_OK : rc;

    sym_error err;
    sym_error_clear(&err);
    sym_tokenizer *tok;
    if (sym_tokenizer_load(options.model, &tok, &err) != SYM_OK)
        return cli_fail_error(&err);
    rc = options.text_path != NULL ? run_encode(tok, &options) : run_ids(tok, &options);
    sym_tokenizer_free(tok);
    return rc;
}
