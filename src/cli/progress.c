/* The merge's progress line and end-of-run summary.
 *
 * The progress line is redrawn in place ('\r') at most PROGRESS_PER_SECOND times a second,
 * only when stderr is a terminal. With -v each finished calibration layer also gets its
 * own line, on a terminal or not.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "symphony/merge.h"

#define PROGRESS_PER_SECOND 4

static double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *p, bool line, bool layer_log)
{
    memset(p, 0, sizeof *p);
    p->line = line;
    p->layer_log = layer_log;
    p->start = monotonic_seconds();
    p->layer_start = p->start;
}

static void format_duration(double seconds, char *buf, size_t size)
{
    if (!isfinite(seconds) || seconds < 0) {
        snprintf(buf, size, "--:--");
        return;
    }
    unsigned long s = (unsigned long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, size, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, size, "%lu:%02lu", s / 60, s % 60);
}

/* The fraction of the work done: calibration tokens when there is calibration (it is most
 * of the time), else output bytes. */
static double work_fraction(const sym_merge_progress *m)
{
    if (m->tokens_total > 0)
        return (double)m->tokens_done / (double)m->tokens_total;
    if (m->bytes_total > 0)
        return (double)m->bytes_done / (double)m->bytes_total;
    return 0;
}

/* Columns of the terminal on stderr; 80 when the size cannot be read. */
static size_t terminal_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* Cuts text to fit width columns (one left free for the cursor), at the last space. */
static void fit_width(char *text, size_t width)
{
    size_t max = width > 1 ? width - 1 : 0;
    if (strlen(text) <= max)
        return;
    text[max] = '\0';
    char *space = strrchr(text, ' ');
    if (space != NULL)
        *space = '\0';
    size_t len = strlen(text);
    while (len > 0 && text[len - 1] == ' ')
        text[--len] = '\0';
}

/* One layout for every stage: stage, layer, elapsed time, ETA, rate (tokens/s while
 * calibrating, MB/s while writing), then the calibration step. */
static void draw_line(cli_progress *p, const sym_merge_progress *m, double now)
{
    double elapsed = now - p->start;
    double fraction = work_fraction(m);
    double eta = fraction > 0 ? elapsed * (1 - fraction) / fraction : (double)NAN;
    char eta_text[32], elapsed_text[32], rate[32], line[512];
    format_duration(eta, eta_text, sizeof eta_text);
    format_duration(elapsed, elapsed_text, sizeof elapsed_text);
    bool calibrating = strcmp(m->stage, "calibrate") == 0;
    if (calibrating)
        snprintf(rate, sizeof rate, "%.0f tokens/s", elapsed > 0 ? m->tokens_done / elapsed : 0);
    else
        snprintf(rate, sizeof rate, "%.1f MB/s",
                 elapsed > 0 ? (double)m->bytes_done / elapsed / 1e6 : 0);
    if (m->layer >= 0)
        p->shown_layer = m->layer + 1;
    int layer = p->shown_layer > 0 ? p->shown_layer : 1;
    snprintf(line, sizeof line, "%-9s layer %d/%d  elapsed %s  ETA %s  %s  %s", m->stage,
             layer, m->n_layers, elapsed_text, eta_text, rate,
             calibrating && m->step != NULL ? m->step : "");
    fit_width(line, terminal_width());
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->drawn = true;
}

static void log_layer(cli_progress *p, const sym_merge_progress *m, double now)
{
    if (p->drawn)
        fputs("\r\033[K", stderr);
    fprintf(stderr, CLI_NAME ": layer %d/%d calibrated in %.2f s\n", m->layer + 1,
            m->n_layers, now - p->layer_start);
    p->drawn = false;
}

void cli_progress_update(void *context, const sym_merge_progress *m)
{
    cli_progress *p = context;
    double now = monotonic_seconds();
    bool layer_finished = strcmp(m->stage, "calibrate") == 0 && m->tokens_done > p->tokens_seen;
    p->tokens_seen = m->tokens_done;
    if (layer_finished && p->layer_log)
        log_layer(p, m, now);
    if (strcmp(m->stage, "calibrate") == 0 && !layer_finished)
        p->layer_start = now;
    /* A new layer is drawn at once, so a layer that finishes within one redraw interval
     * still shows on the line. */
    bool new_layer = m->layer >= 0 && m->layer + 1 != p->shown_layer;
    if (!p->line || (!new_layer && now - p->last_draw < 1.0 / PROGRESS_PER_SECOND))
        return;
    p->last_draw = now;
    draw_line(p, m, now);
}

void cli_progress_finish(cli_progress *p)
{
    if (p->drawn)
        fputs("\r\033[K", stderr);
    p->drawn = false;
    p->seconds = monotonic_seconds() - p->start;
}

/* ---- summary ---- */

static void print_stages(json_t *report, double total)
{
    json_t *stages = json_object_get(report, "stage_seconds");
    const char *name;
    json_t *value;
    double calibration = 0;
    printf("  time            %.2f s in all", total);
    json_object_foreach(stages, name, value) {
        printf(", %s %.2f s", name, json_number_value(value));
        calibration += json_number_value(value);
    }
    if (stages != NULL)
        printf(", fusion and writing %.2f s", total - calibration > 0 ? total - calibration : 0);
    putchar('\n');
}

/* Minimum and mean of one alignment field over the aligned sources of a layer. */
static void alignment_range(json_t *alignment, const char *key, double *lo, double *mean)
{
    size_t i, n = json_array_size(alignment);
    json_t *entry;
    *lo = NAN;
    *mean = NAN;
    double sum = 0;
    json_array_foreach(alignment, i, entry) {
        double v = json_number_value(json_object_get(entry, key));
        *lo = i == 0 || v < *lo ? v : *lo;
        sum += v;
    }
    if (n > 0)
        *mean = sum / (double)n;
}

static void print_layer(json_t *layer)
{
    double corr_min, corr_mean, identity_min, identity_mean;
    json_t *alignment = json_object_get(layer, "alignment");
    alignment_range(alignment, "mean_matched_corr", &corr_min, &corr_mean);
    alignment_range(alignment, "identity_fraction", &identity_min, &identity_mean);
    json_t *router = json_object_get(layer, "router");
    json_t *load = json_object_get(router, "expert_load");
    double load_min = NAN, load_max = NAN;
    size_t i;
    json_t *value;
    json_array_foreach(load, i, value) {
        double v = json_number_value(value);
        load_min = i == 0 || v < load_min ? v : load_min;
        load_max = i == 0 || v > load_max ? v : load_max;
    }
    printf("  %5lld  %8.3f  %8.3f  %8.3f  %9.3f  %9.3f  %8.3f  %8.3f\n",
           (long long)json_integer_value(json_object_get(layer, "layer")), corr_min, corr_mean,
           identity_mean, json_number_value(json_object_get(router, "train_loss")),
           json_number_value(json_object_get(router, "holdout_accuracy")), load_min, load_max);
}

static void print_report(const char *output, double total)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/merge-report.json", output);
    json_error_t jerr;
    json_t *report = json_load_file(path, 0, &jerr);
    if (report == NULL) {
        printf("  time            %.2f s (no calibration)\n", total);
        return;
    }
    print_stages(report, total);
    printf("  calibration     %lld tokens, caches %lld bytes\n",
           (long long)json_integer_value(json_object_get(report, "calibration_tokens")),
           (long long)json_integer_value(json_object_get(report, "cache_bytes")));
    printf("  per layer: alignment correlation (min, mean over aligned experts), identity\n"
           "  fraction (mean), router train loss, holdout accuracy (-1: none), expert load\n"
           "  (min, max)\n"
           "  layer  corr_min corr_mean identity train_loss holdout_acc  load_min  load_max\n");
    size_t i;
    json_t *layer;
    json_array_foreach(json_object_get(report, "layers"), i, layer)
        print_layer(layer);
    json_decref(report);
}

void cli_merge_summary(const sym_merge_result *r, const char *output, double seconds)
{
    char read[32], written[32], total[32], peak[32];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("summary of the merge into %s:\n", output);
    printf("  read            %s of source tensors\n",
           sym_format_size(r->bytes_read, read, sizeof read));
    printf("  written         %s of %s output tensors (%zu of %zu tensors, %u shard(s))\n",
           sym_format_size(r->bytes_written, written, sizeof written),
           sym_format_size(r->bytes_total, total, sizeof total),
           r->tensors_total - r->tensors_resumed, r->tensors_total, r->shards);
    printf("  peak memory     %s (maximum resident set size)\n",
           sym_format_size((uint64_t)ru.ru_maxrss * 1024, peak, sizeof peak));
    print_report(output, seconds);
}
