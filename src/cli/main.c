/* symphony-stream: merge dense Llama-family checkpoints into a Mixtral-style MoE. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#define SYMPHONY_VERSION "0.1.0"

static const cli_command commands[] = {
    {"inspect", "describe models and check that they can be merged", cmd_inspect},
    {"merge", "merge dense models into a Mixtral-style MoE (resumable)", cmd_merge},
    {"verify", "check a merged model's files and tensor checksums", cmd_verify},
    {"tokenize", "encode text into token ids or decode ids into text", cmd_tokenize},
    {"eval", "perplexity of a dense or MoE model, streamed layer by layer", cmd_eval},
    {"generate", "generate tokens from a prompt (greedy or sampled)", cmd_generate},
};

static const size_t command_count = sizeof commands / sizeof commands[0];

static void print_usage(FILE *out)
{
    fprintf(out,
            "usage: " CLI_NAME " COMMAND [OPTIONS] [ARGS]\n"
            "       " CLI_NAME " COMMAND --help\n"
            "\n"
            "Merge dense Llama-family checkpoints into one Mixtral-style\n"
            "Mixture-of-Experts model, streaming one layer at a time.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < command_count; i++)
        fprintf(out, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Options:\n"
            "  -h, --help       print this help and exit\n"
            "  -V, --version    print the version and exit\n"
            "\n"
            "See symphony-stream(1) for a walk-through.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "help") == 0) {
        print_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (strcmp(name, "-V") == 0 || strcmp(name, "--version") == 0) {
        printf(CLI_NAME " " SYMPHONY_VERSION "\n");
        return CLI_EXIT_OK;
    }
    cli_install_sigbus_handler();
    for (size_t i = 0; i < command_count; i++) {
        if (strcmp(name, commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, CLI_NAME ": unknown command '%s'; run '" CLI_NAME " --help' for the list\n",
            name);
    return CLI_EXIT_USAGE;
}
