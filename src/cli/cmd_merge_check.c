/* merge --check: print the plan of a merge, as text or JSON, and list every problem. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "symphony/merge.h"

static const char *size_text(uint64_t bytes, char *buf, size_t size)
{
    return sym_format_size(bytes, buf, size);
}

static void print_flops(const sym_merge_plan *p)
{
    printf("  FLOPs           %.3g in all: source forward %.3g, merged forward %.3g, "
           "correlation %.3g, assignment %.3g, router training %.3g\n",
           p->flops_total, p->flops_source_forward, p->flops_merged_forward,
           p->flops_correlation, p->flops_assignment, p->flops_router);
}

static void print_text(const sym_merge_plan *p, const char *config, const char *output)
{
    char a[32], b[32], c[32];
    printf("plan of the merge %s -> %s\n", config, output != NULL ? output : "(no OUTPUT_DIR)");
    printf("  sources         %zu models, %d layers, %llu calibration tokens\n", p->n_sources,
           p->n_layers, (unsigned long long)p->calibration_tokens);
    printf("  output          %zu tensors in %u shard(s), %s\n", p->n_tensors, p->n_shards,
           size_text(p->output_bytes, a, sizeof a));
    printf("  read            %s of source tensors\n", size_text(p->read_bytes, a, sizeof a));
    printf("  write           %s of output, up to %s of caches\n",
           size_text(p->output_bytes, a, sizeof a), size_text(p->cache_bytes, b, sizeof b));
    if (p->disk_free != UINT64_MAX)
        printf("  disk            %s needed, %s free in %s\n",
               size_text(p->disk_needed, a, sizeof a), size_text(p->disk_free, b, sizeof b),
               p->disk_path);
    else
        printf("  disk            %s needed (free space not checked: no OUTPUT_DIR)\n",
               size_text(p->disk_needed, a, sizeof a));
    printf("  memory          about %s (largest tensor %s, calibration %s), limit %s\n",
           size_text(p->memory_total, a, sizeof a), size_text(p->memory_tensor, b, sizeof b),
           size_text(p->memory_calibration, c, sizeof c),
           p->memory_limit > 0 ? size_text(p->memory_limit, c, sizeof c) : "none");
    print_flops(p);
    printf("  measured        disk read %s/s (%s read), sgemm %.3g FLOP/s\n",
           size_text((uint64_t)p->read_bytes_per_s, a, sizeof a),
           size_text(p->probe_bytes, b, sizeof b), p->gemm_flops_per_s);
    printf("  estimated time  %.3g s: read %.3g s, write %.3g s, compute %.3g s\n",
           p->seconds_total, p->seconds_read, p->seconds_write, p->seconds_compute);
}

static json_t *number(double value)
{
    return isfinite(value) ? json_real(value) : json_null();
}

static json_t *plan_json(const sym_merge_plan *p, const char *config, const char *output)
{
    json_t *problems = json_array();
    for (size_t i = 0; i < p->n_problems; i++)
        json_array_append_new(problems, json_string(p->problems[i]));
    json_t *j = json_object();
    json_object_set_new(j, "ok", json_boolean(p->n_problems == 0));
    json_object_set_new(j, "problems", problems);
    json_object_set_new(j, "config", json_string(config));
    json_object_set_new(j, "output", output != NULL ? json_string(output) : json_null());
    json_object_set_new(j, "sources", json_integer((json_int_t)p->n_sources));
    json_object_set_new(j, "layers", json_integer(p->n_layers));
    json_object_set_new(j, "tensors", json_integer((json_int_t)p->n_tensors));
    json_object_set_new(j, "shards", json_integer(p->n_shards));
    json_object_set_new(j, "calibration_tokens", json_integer((json_int_t)p->calibration_tokens));
    json_object_set_new(j, "read_bytes", json_integer((json_int_t)p->read_bytes));
    json_object_set_new(j, "output_bytes", json_integer((json_int_t)p->output_bytes));
    json_object_set_new(j, "cache_bytes", json_integer((json_int_t)p->cache_bytes));
    json_object_set_new(j, "disk_needed", json_integer((json_int_t)p->disk_needed));
    json_object_set_new(j, "disk_free", p->disk_free == UINT64_MAX
                                            ? json_null()
                                            : json_integer((json_int_t)p->disk_free));
    json_object_set_new(j, "memory_bytes", json_integer((json_int_t)p->memory_total));
    json_object_set_new(j, "memory_tensor_bytes", json_integer((json_int_t)p->memory_tensor));
    json_object_set_new(j, "memory_calibration_bytes",
                        json_integer((json_int_t)p->memory_calibration));
    json_object_set_new(j, "memory_limit", json_integer((json_int_t)p->memory_limit));
    json_object_set_new(j, "flops", json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}",
                                              "total", number(p->flops_total),
                                              "source_forward", number(p->flops_source_forward),
                                              "merged_forward", number(p->flops_merged_forward),
                                              "correlation", number(p->flops_correlation),
                                              "assignment", number(p->flops_assignment),
                                              "router", number(p->flops_router)));
    json_object_set_new(j, "disk_read_bytes_per_s", number(p->read_bytes_per_s));
    json_object_set_new(j, "gemm_flops_per_s", number(p->gemm_flops_per_s));
    json_object_set_new(j, "estimated_seconds", json_pack("{s:o, s:o, s:o, s:o}",
                                                          "total", number(p->seconds_total),
                                                          "read", number(p->seconds_read),
                                                          "write", number(p->seconds_write),
                                                          "compute",
                                                          number(p->seconds_compute)));
    return j;
}

/* Returns what a merge into output would find there: "partial" (it would resume),
 * "exists" (done already, or --force needed), or "new". */
static const char *output_state(const char *output)
{
    char partial[4096];
    struct stat st;
    if (output == NULL)
        return "new";
    if (snprintf(partial, sizeof partial, "%s.partial", output) < (int)sizeof partial &&
        stat(partial, &st) == 0)
        return "partial";
    return stat(output, &st) == 0 ? "exists" : "new";
}

int cli_merge_check(const sym_merge_config *cfg, const sym_merge_options *opts,
                    const char *config, bool json)
{
    sym_merge_plan plan;
    sym_error err;
    if (sym_merge_check(cfg, opts, &plan, &err) != SYM_OK) {
        sym_merge_plan_free(&plan);
        return cli_fail_error(&err);
    }
    if (json) {
        json_t *j = plan_json(&plan, config, opts->output);
        json_object_set_new(j, "output_state", json_string(output_state(opts->output)));
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
        json_decref(j);
    } else if (plan.n_layers > 0) {
        print_text(&plan, config, opts->output);
    }
    for (size_t i = 0; i < plan.n_problems; i++)
        fprintf(stderr, CLI_NAME ": %s\n", plan.problems[i]);
    int rc = CLI_EXIT_OK;
    if (plan.n_problems > 0)
        rc = cli_fail("%zu problem(s) found; the merge cannot run as configured",
                      plan.n_problems);
    else if (!json && cli_verbosity > 0)
        printf("the merge can run\n");
    const char *state = output_state(opts->output);
    if (!json && cli_verbosity > 0 && strcmp(state, "partial") == 0)
        printf("note: %s.partial exists, so the merge would resume it (--restart starts "
               "over); the plan above counts the whole merge\n", opts->output);
    else if (!json && cli_verbosity > 0 && strcmp(state, "exists") == 0)
        printf("note: %s exists: the merge does nothing if it holds this merge, and "
               "otherwise needs --force\n", opts->output);
    sym_merge_plan_free(&plan);
    return rc;
}
