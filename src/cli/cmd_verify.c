/* symphony-stream verify: check a merged model's files and tensor checksums. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "symphony/merge.h"

static void print_help(void)
{
    printf("usage: " CLI_NAME " verify [--json] MODEL_DIR\n"
           "\n"
           "Re-read a directory written by '" CLI_NAME " merge': every shard's safetensors\n"
           "structure (strict; __metadata__ must map strings to strings), the index,\n"
           "config.json against the tensors, and every tensor's xxh3 checksum against\n"
           "symphony-manifest.json. Each damaged tensor is named.\n"
           "\n"
           "Options:\n"
           "      --json    print one JSON document instead of text\n"
           "  -q, --quiet   print problems only\n"
           "  -h, --help    print this help and exit\n"
           "\n"
           "Exit status: 0 when nothing is damaged, 1 when something is, 2 for usage errors.\n");
}

typedef struct progress_state {
    time_t start;
    time_t last;
} progress_state;

/* Shown on a terminal once the check has run for a second, at most once a second. */
static void show_progress(void *context, uint64_t done, uint64_t total)
{
    progress_state *p = context;
    time_t now = time(NULL);
    if (now - p->start < 1 || now == p->last)
        return;
    p->last = now;
    fprintf(stderr, "\rverify: %llu of %llu MiB", (unsigned long long)(done >> 20),
            (unsigned long long)(total >> 20));
}

static void print_json(const char *dir, const sym_verify_report *r)
{
    json_t *doc = json_object();
    json_t *list = json_array();
    for (size_t i = 0; i < r->n_problems; i++) {
        const sym_verify_problem *p = &r->problems[i];
        json_t *item = json_object();
        json_object_set_new(item, "file", json_string(p->file));
        json_object_set_new(item, "tensor", p->tensor ? json_string(p->tensor) : json_null());
        json_object_set_new(item, "message", json_string(p->message));
        json_array_append_new(list, item);
    }
    json_object_set_new(doc, "directory", json_string(dir));
    json_object_set_new(doc, "ok", json_boolean(r->n_problems == 0));
    json_object_set_new(doc, "tensors_checked", json_integer((json_int_t)r->tensors_checked));
    json_object_set_new(doc, "bytes_checked", json_integer((json_int_t)r->bytes_checked));
    json_object_set_new(doc, "problems", list);
    json_dumpf(doc, stdout, JSON_INDENT(2));
    putchar('\n');
    json_decref(doc);
}

static void print_text(const char *dir, const sym_verify_report *r)
{
    for (size_t i = 0; i < r->n_problems; i++) {
        const sym_verify_problem *p = &r->problems[i];
        if (p->tensor != NULL)
            printf("damaged: %s: tensor '%s': %s\n", p->file, p->tensor, p->message);
        else
            printf("damaged: %s: %s\n", p->file, p->message);
    }
    if (cli_verbosity > 0 || r->n_problems > 0)
        printf("%s: %s: %zu tensors, %llu bytes checked, %zu problem(s)\n", dir,
               r->n_problems ? "DAMAGED" : "ok", r->tensors_checked,
               (unsigned long long)r->bytes_checked, r->n_problems);
}

int cmd_verify(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool as_json = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "qh", options, NULL)) != -1) {
        if (opt == 'h') {
            print_help();
            return CLI_EXIT_OK;
        } else if (opt == 'j') {
            as_json = true;
        } else if (opt == 'q') {
            cli_verbosity = 0;
        } else {
            return cli_usage_error("verify", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return cli_usage_error("verify", "expected one MODEL_DIR, got %d", argc - optind);
    const char *dir = argv[optind];
    progress_state progress = {time(NULL), 0};
    bool tty = cli_verbosity > 0 && isatty(STDERR_FILENO);
    sym_verify_report report;
    sym_error err;
    if (sym_verify_dir(dir, &report, tty ? show_progress : NULL, &progress, &err) != SYM_OK)
        return cli_fail_error(&err);
    if (tty && progress.last != 0)
        fputc('\n', stderr);
    if (as_json)
        print_json(dir, &report);
    else
        print_text(dir, &report);
    int rc = report.n_problems ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
    sym_verify_report_free(&report);
    return rc;
}
