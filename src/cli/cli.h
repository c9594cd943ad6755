/* Shared pieces of the symphony-stream command-line front end. */
#ifndef SYMPHONY_CLI_H
#define SYMPHONY_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#define CLI_NAME "symphony-stream"

/* Exit statuses: 0 success, 1 failure, 2 usage error, 130 interrupted. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_INTERRUPTED = 130,
};

/* Verbosity: -q lowers it to 0, each -v raises it. Default 1. */
extern int cli_verbosity;

/* One subcommand: its name, a one-line summary for the command list, and its entry. */
typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

/* Prints "symphony-stream: MESSAGE" to stderr and returns CLI_EXIT_FAILURE. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints the library's message for err and returns the exit status for it. */
int cli_fail_error(const sym_error *err);

/* Prints "symphony-stream CMD: MESSAGE" and a hint to run --help; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Turns SIGBUS from a model file truncated under its mapping into a one-line error and
 * exit status 1. */
void cli_install_sigbus_handler(void);

/* Parses a size such as 4096, 512M, 12G or 1.5T (binary units) into bytes. */
bool cli_parse_size(const char *text, uint64_t *bytes);

/* Parses a decimal integer in [min, max]. */
bool cli_parse_int(const char *text, long long min, long long max, long long *value);

/* Parses a finite decimal number. */
bool cli_parse_double(const char *text, double *value);

int cmd_inspect(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);

/* Shared by eval and generate (cmd_eval.c). */
struct sym_forward_options;
uint64_t cli_default_memory_limit(void);
/* Encodes a whole UTF-8 file as one string, without BOS, with the tokenizer.json of the
 * model directory (the layout of the perplexity definition). */
sym_status cli_encode_text_file(const char *model_dir, const char *path, int32_t **ids,
                                size_t *n, sym_error *err);
int cli_forward_option(const char *command, int opt, const char *arg,
                       struct sym_forward_options *options);
void cli_forward_progress(struct sym_forward_options *options);
double cli_forward_progress_end(void);

#endif
