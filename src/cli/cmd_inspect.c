/* symphony-stream inspect: describe models and check that they can be merged. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "symphony/compat.h"
#include "symphony/model.h"

static void print_help(void)
{
    printf("usage: " CLI_NAME " inspect [--json] MODEL_DIR...\n"
           "\n"
           "Describe each Hugging Face model directory (architecture, parameters, dtypes,\n"
           "shards, memory per layer) and, given several, check that they can be merged.\n"
           "Reads only headers and config files, never the weights.\n"
           "\n"
           "Options:\n"
           "      --json    print one JSON document instead of text\n"
           "  -h, --help    print this help and exit\n"
           "\n"
           "Exit status: 0 when the models can be merged (or the one model is readable),\n"
           "1 when they cannot or a model is invalid, 2 for usage errors.\n");
}

/* Sizes of one model, summed from its headers. */
typedef struct model_stats {
    uint64_t parameters;
    uint64_t bytes_on_disk;
    uint64_t tensors;
    uint64_t layer_bytes_disk;
    uint64_t layer_bytes_f32;
    uint64_t dtype_count[SYM_DTYPE_COUNT];
} model_stats;

static void add_layer_tensor(model_stats *st, const sym_tensor_ref *r)
{
    if (r == NULL)
        return;
    st->layer_bytes_disk += r->info->nbytes;
    st->layer_bytes_f32 += r->info->numel * 4;
}

static void compute_stats(const sym_model *m, model_stats *st)
{
    memset(st, 0, sizeof *st);
    for (size_t i = 0; i < sym_model_shard_count(m); i++) {
        const sym_st_file *f = sym_model_shard(m, i);
        st->bytes_on_disk += f->file_size;
        st->tensors += f->header.n_tensors;
        for (size_t j = 0; j < f->header.n_tensors; j++) {
            const sym_st_tensor *t = &f->header.tensors[j];
            st->dtype_count[t->dtype]++;
            bool ignored = false;
            for (size_t k = 0; k < sym_model_ignored_count(m) && !ignored; k++)
                ignored = sym_model_ignored_name(m, k) == t->name;
            if (!ignored)
                st->parameters += t->numel;
        }
    }
    const sym_model_config *c = sym_model_get_config(m);
    int experts = (int)c->num_local_experts;
    for (int role = SYM_ROLE_INPUT_NORM; role < SYM_ROLE_COUNT; role++) {
        if (role == SYM_ROLE_FFN_GATE || role == SYM_ROLE_FFN_UP || role == SYM_ROLE_FFN_DOWN) {
            for (int e = experts > 0 ? 0 : -1; e < (experts > 0 ? experts : 0); e++)
                add_layer_tensor(st, sym_model_tensor(m, (sym_role)role, 0, e));
        } else {
            add_layer_tensor(st, sym_model_tensor(m, (sym_role)role, 0, -1));
        }
    }
}

static void print_bytes(const char *label, uint64_t bytes)
{
    double v = (double)bytes;
    const char *unit = "B";
    const char *units[] = {"KiB", "MiB", "GiB", "TiB"};
    for (int i = 0; i < 4 && v >= 1024.0; i++) {
        v /= 1024.0;
        unit = units[i];
    }
    printf("  %-26s %.1f %s (%llu bytes)\n", label, v, unit, (unsigned long long)bytes);
}

static uint64_t merge_memory_estimate(const model_stats *st)
{
    /* Two layers in flight (the current one and the prefetched next one) plus an f32
     * working copy of the current layer. */
    return 2 * st->layer_bytes_disk + st->layer_bytes_f32;
}

static void print_model_text(const sym_model *m, const model_stats *st)
{
    const sym_model_config *c = sym_model_get_config(m);
    printf("%s\n", sym_model_dir(m));
    printf("  %-26s %s%s\n", "architecture", c->model_type,
           c->num_local_experts > 0 ? " (mixture of experts)" : "");
    printf("  %-26s %lld\n", "layers", (long long)c->num_hidden_layers);
    printf("  %-26s %lld\n", "hidden size", (long long)c->hidden_size);
    printf("  %-26s %lld\n", "intermediate size", (long long)c->intermediate_size);
    printf("  %-26s %lld query, %lld key/value, head_dim %lld\n", "attention heads",
           (long long)c->num_attention_heads, (long long)c->num_key_value_heads,
           (long long)c->head_dim);
    if (c->num_local_experts > 0)
        printf("  %-26s %lld, %lld per token\n", "experts", (long long)c->num_local_experts,
               (long long)c->num_experts_per_tok);
    printf("  %-26s %lld\n", "vocabulary", (long long)c->vocab_size);
    printf("  %-26s %lld\n", "max positions", (long long)c->max_position_embeddings);
    printf("  %-26s %g%s%s\n", "rope_theta", c->rope_theta,
           c->rope_scaling.type[0] ? ", scaling " : "", c->rope_scaling.type);
    printf("  %-26s %g\n", "rms_norm_eps", c->rms_norm_eps);
    printf("  %-26s %s\n", "tied embeddings", sym_model_lm_head_tied(m) ? "yes" : "no");
    printf("  %-26s %llu\n", "parameters", (unsigned long long)st->parameters);
    printf("  %-26s", "dtypes");
    for (int d = 0; d < SYM_DTYPE_COUNT; d++) {
        if (st->dtype_count[d])
            printf(" %s x %llu", sym_dtype_name((sym_dtype)d),
                   (unsigned long long)st->dtype_count[d]);
    }
    printf("\n  %-26s %zu, %llu tensors\n", "shards", sym_model_shard_count(m),
           (unsigned long long)st->tensors);
    print_bytes("bytes on disk", st->bytes_on_disk);
    print_bytes("one layer on disk", st->layer_bytes_disk);
    print_bytes("one layer in f32", st->layer_bytes_f32);
    print_bytes("merge memory per source", merge_memory_estimate(st));
    for (size_t i = 0; i < sym_model_ignored_count(m); i++)
        printf("  %-26s %s\n", i == 0 ? "ignored tensors" : "", sym_model_ignored_name(m, i));
}

static json_t *model_json(const sym_model *m, const model_stats *st)
{
    const sym_model_config *c = sym_model_get_config(m);
    json_t *dtypes = json_object();
    for (int d = 0; d < SYM_DTYPE_COUNT; d++) {
        if (st->dtype_count[d])
            json_object_set_new(dtypes, sym_dtype_name((sym_dtype)d),
                                json_integer((json_int_t)st->dtype_count[d]));
    }
    json_t *ignored = json_array();
    for (size_t i = 0; i < sym_model_ignored_count(m); i++)
        json_array_append_new(ignored, json_string(sym_model_ignored_name(m, i)));
    json_t *shards = json_array();
    for (size_t i = 0; i < sym_model_shard_count(m); i++)
        json_array_append_new(shards, json_string(sym_model_shard(m, i)->path));

    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(sym_model_dir(m)));
    json_object_set_new(o, "model_type", json_string(c->model_type));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->num_hidden_layers));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(o, "num_attention_heads", json_integer(c->num_attention_heads));
    json_object_set_new(o, "num_key_value_heads", json_integer(c->num_key_value_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "rope_scaling_type",
                        c->rope_scaling.type[0] ? json_string(c->rope_scaling.type) : json_null());
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(sym_model_lm_head_tied(m)));
    json_object_set_new(o, "num_local_experts", json_integer(c->num_local_experts));
    json_object_set_new(o, "num_experts_per_tok", json_integer(c->num_experts_per_tok));
    json_object_set_new(o, "num_parameters", json_integer((json_int_t)st->parameters));
    json_object_set_new(o, "num_tensors", json_integer((json_int_t)st->tensors));
    json_object_set_new(o, "dtypes", dtypes);
    json_object_set_new(o, "shards", shards);
    json_object_set_new(o, "bytes_on_disk", json_integer((json_int_t)st->bytes_on_disk));
    json_object_set_new(o, "layer_bytes_on_disk", json_integer((json_int_t)st->layer_bytes_disk));
    json_object_set_new(o, "layer_bytes_f32", json_integer((json_int_t)st->layer_bytes_f32));
    json_object_set_new(o, "merge_memory_per_source_bytes",
                        json_integer((json_int_t)merge_memory_estimate(st)));
    json_object_set_new(o, "ignored_tensors", ignored);
    return o;
}

static json_t *string_array(char **lines, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(lines[i]));
    return a;
}

static int report(sym_model **models, size_t n, bool as_json)
{
    sym_compat_report rep;
    sym_error err;
    if (sym_compat_check(models, n, NULL, &rep, &err) != SYM_OK)
        return cli_fail_error(&err);

    json_t *doc = as_json ? json_object() : NULL;
    json_t *list = as_json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        model_stats st;
        compute_stats(models[i], &st);
        if (as_json)
            json_array_append_new(list, model_json(models[i], &st));
        else
            print_model_text(models[i], &st);
    }
    bool compatible = rep.n_problems == 0;
    if (as_json) {
        json_object_set_new(doc, "models", list);
        json_object_set_new(doc, "compatible", json_boolean(compatible));
        json_object_set_new(doc, "problems", string_array(rep.problems, rep.n_problems));
        json_object_set_new(doc, "notes", string_array(rep.notes, rep.n_notes));
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        putchar('\n');
        json_decref(doc);
    } else {
        for (size_t i = 0; i < rep.n_notes; i++)
            printf("note: %s\n", rep.notes[i]);
        for (size_t i = 0; i < rep.n_problems; i++)
            printf("problem: %s\n", rep.problems[i]);
        if (n > 1)
            printf("%s\n", compatible ? "compatible: these models can be merged"
                                      : "incompatible: these models cannot be merged");
        else if (!compatible)
            printf("unusable: this model cannot be a merge source\n");
    }
    sym_compat_report_free(&rep);
    return compatible ? CLI_EXIT_OK : CLI_EXIT_FAILURE;
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool as_json = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'j':
            as_json = true;
            break;
        case 'h':
            print_help();
            return CLI_EXIT_OK;
        default:
            return cli_usage_error("inspect", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_usage_error("inspect", "expected at least one model directory");

    size_t n = (size_t)(argc - optind);
    sym_model **models = calloc(n, sizeof *models);
    if (models == NULL)
        return cli_fail("out of memory");
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < n && rc == CLI_EXIT_OK; i++) {
        sym_error err;
        if (sym_model_open(&models[i], argv[optind + (int)i], &err) != SYM_OK)
            rc = cli_fail_error(&err);
    }
    if (rc == CLI_EXIT_OK)
        rc = report(models, n, as_json);
    for (size_t i = 0; i < n; i++)
        sym_model_close(models[i]);
    free(models);
    return rc;
}
