/* Shared pieces of the symphony-stream command-line front end. */
#ifndef SYMPHONY_CLI_H
#define SYMPHONY_CLI_H

#include <signal.h>
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
int cmd_retrain_router(int argc, char **argv);

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

/* The merge's progress line and summary (progress.c). */
struct sym_merge_progress;
struct sym_merge_result;
typedef struct cli_progress {
    bool line;      /* redraw a progress line on stderr (a terminal) */
    bool layer_log; /* print a line per calibrated layer (-v) */
    volatile sig_atomic_t drawn; /* a progress line is on the screen; read by handlers */
    double start, last_draw, layer_start, seconds;
    uint64_t tokens_seen;
    int shown_layer; /* 1-based layer on the progress line; 0 before the first */
} cli_progress;
void cli_progress_init(cli_progress *p, bool line, bool layer_log);
void cli_progress_update(void *context, const struct sym_merge_progress *m);
/* Clears the progress line and records the elapsed time in p->seconds. */
void cli_progress_finish(cli_progress *p);
/* Runs merge --check and prints the plan (cmd_merge_check.c); returns the exit status. */
struct sym_merge_config;
struct sym_merge_options;
int cli_merge_check(const struct sym_merge_config *cfg, const struct sym_merge_options *opts,
                    const char *config, bool json);
/* Prints time per stage, bytes, peak memory and per-layer statistics to stdout. */
void cli_merge_summary(const struct sym_merge_result *r, const char *output, double seconds);

#endif
