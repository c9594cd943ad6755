/* The output's model card (README.md): the sources and their licences, and what the merge
 * did, calibration, expert alignment, router training and attention fusion, with the
 * figures of merge-report.json when the merge was calibrated. */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge_internal.h"
#include "pipeline_internal.h"
#include "symphony/writer.h"

/* A growing text; NULL after an allocation failure. */
typedef struct card_text {
    char *text;
    size_t len;
} card_text;

static void card_append(card_text *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void card_append(card_text *c, const char *fmt, ...)
{
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || c->text == NULL)
        return;
    size_t add = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    char *grown = realloc(c->text, c->len + add + 1);
    if (grown == NULL) {
        free(c->text);
        c->text = NULL;
        return;
    }
    memcpy(grown + c->len, line, add + 1);
    c->text = grown;
    c->len += add;
}

/* Copies the value of a "license:" line of README.md's YAML front matter (the Hugging Face
 * model card convention) into out. */
static bool readme_licence(const char *dir, char *out, size_t size)
{
    char path[PATH_MAX], line[512];
    snprintf(path, sizeof path, "%s/README.md", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    bool found = false;
    if (fgets(line, sizeof line, f) != NULL && strncmp(line, "---", 3) == 0) {
        while (!found && fgets(line, sizeof line, f) != NULL && strncmp(line, "---", 3) != 0) {
            if (strncmp(line, "license:", 8) != 0)
                continue;
            char *value = line + 8 + strspn(line + 8, " \t\"'");
            value[strcspn(value, "\"'\r\n")] = '\0';
            found = value[0] != '\0';
            snprintf(out, size, "%s", value);
        }
    }
    fclose(f);
    return found;
}

/* Writes a source's licence into out: config.json's "license", else README.md's front
 * matter, else a pointer to the source. */
static void source_licence(const sym_model *m, char *out, size_t size)
{
    const json_t *value = json_object_get(sym_model_config_json(m), "license");
    if (json_is_string(value) && json_string_value(value)[0] != '\0')
        snprintf(out, size, "%s", json_string_value(value));
    else if (!readme_licence(sym_model_dir(m), out, size))
        snprintf(out, size, "not stated in its config.json or README.md; see the source");
}

static void write_sources(card_text *c, const sym_card_facts *facts)
{
    const sym_merge_config *cfg = facts->cfg;
    char licence[256];
    card_append(c, "## Sources\n\n");
    for (size_t i = 0; i < cfg->n_experts; i++) {
        source_licence(facts->experts[i], licence, sizeof licence);
        card_append(c, "- expert %zu: `%s`%s, licence: %s\n", i, cfg->experts[i].source_model,
                    facts->experts[i] == facts->anchor ? " (anchor)" : "", licence);
    }
    if (facts->base != NULL) {
        source_licence(facts->base, licence, sizeof licence);
        card_append(c, "- base model%s%s: `%s`, licence: %s\n",
                    facts->base == facts->anchor ? " (anchor)" : "",
                    facts->vocab_donor == facts->base ? " (vocabulary donor)" : "",
                    cfg->base_model, licence);
    }
    card_append(c, "\nThe merged model inherits every source's licence terms; check them "
                   "before distributing it.\n");
}

static void write_calibration(card_text *c, const sym_merge_config *cfg, json_t *report)
{
    json_t *domains = json_object_get(report, "domains");
    card_append(c, "- calibration: %lld tokens in sequences of %lld, from each expert's "
                   "domain text:\n",
                (long long)json_integer_value(json_object_get(report, "calibration_tokens")),
                (long long)json_integer_value(json_object_get(report, "sequence_length")));
    for (size_t e = 0; e < cfg->n_experts; e++) {
        json_t *domain = json_array_get(domains, e);
        card_append(c, "  - expert %zu: %lld tokens%s from", e,
                    (long long)json_integer_value(json_object_get(domain, "tokens")),
                    json_is_true(json_object_get(domain, "short")) ? " (all its text)" : "");
        for (size_t k = 0; k < cfg->experts[e].n_calibration; k++)
            card_append(c, "%s `%s`", k > 0 ? "," : "", cfg->experts[e].calibration[k]);
        card_append(c, "\n");
    }
}

/* Mean and minimum of one alignment field over every layer and aligned expert. */
static size_t alignment_summary(json_t *layers, const char *key, double *mean, double *min)
{
    size_t i, j, n = 0;
    json_t *layer, *entry;
    double sum = 0;
    *min = INFINITY;
    json_array_foreach(layers, i, layer) {
        json_array_foreach(json_object_get(layer, "alignment"), j, entry) {
            double v = json_number_value(json_object_get(entry, key));
            sum += v;
            *min = v < *min ? v : *min;
            n++;
        }
    }
    *mean = n > 0 ? sum / (double)n : (double)NAN;
    return n;
}

static void write_alignment(card_text *c, json_t *layers)
{
    double identity, identity_min, corr, corr_min;
    size_t n = alignment_summary(layers, "identity_fraction", &identity, &identity_min);
    alignment_summary(layers, "mean_matched_corr", &corr, &corr_min);
    if (n == 0) {
        card_append(c, "- expert alignment: none (every expert is the anchor)\n");
        return;
    }
    card_append(c, "- expert alignment: each expert's FFN neurons permuted to match the "
                   "anchor's by activation correlation (%zu layer-expert pairs); identity "
                   "fraction mean %.3f (min %.3f), mean matched correlation mean %.3f "
                   "(min %.3f)\n", n, identity, identity_min, corr, corr_min);
}

static void write_router(card_text *c, const sym_merge_config *cfg, json_t *layers)
{
    const char *objective = cfg->router.objective == SYM_ROUTER_DOMAIN
                                ? "classify (domain labels)"
                                : sym_router_objective_name(cfg->router.objective);
    card_append(c, "- router: trained per layer, objective %s, %lld steps, learning rate %g, "
                   "%lld experts per token; held-out accuracy per layer:",
                objective, (long long)cfg->router.steps, cfg->router.learning_rate,
                (long long)cfg->experts_per_token);
    size_t i, n = 0;
    json_t *layer;
    double sum = 0;
    json_array_foreach(layers, i, layer) {
        double acc = json_number_value(
            json_object_get(json_object_get(layer, "router"), "holdout_accuracy"));
        card_append(c, "%s %.3f", i > 0 ? "," : "", acc);
        if (acc >= 0) {
            sum += acc;
            n++;
        }
    }
    if (n > 0)
        card_append(c, " (mean %.3f)\n", sum / (double)n);
    else
        card_append(c, " (no held-out tokens)\n");
}

static void write_method(card_text *c, const sym_card_facts *facts, json_t *report)
{
    const sym_merge_config *cfg = facts->cfg;
    bool task_embed = cfg->embeddings == SYM_FUSION_TASK_ARITHMETIC;
    card_append(c, "\n## Method\n\n- embeddings%s: %s over the union vocabulary (%llu rows)\n"
                   "- attention fusion: %s\n- norms: %s\n",
                facts->tied ? " (tied output layer)" : " and lm_head",
                task_embed ? "task arithmetic" : "weighted mean",
                (unsigned long long)facts->vocab_rows, sym_attention_mode_name(cfg->attention),
                cfg->norms == SYM_FUSION_TASK_ARITHMETIC ? "task arithmetic" : "weighted mean");
    if (sym_merge_config_uses_base(cfg))
        card_append(c, "- task arithmetic: base_model (`%s`) plus %g times the sum of the "
                       "experts' differences from it\n", cfg->base_model, cfg->task_scale);
    json_t *layers = json_object_get(report, "layers");
    if (report == NULL) {
        card_append(c, "- calibration: none (calibration_tokens 0)\n"
                       "- expert alignment: none, because it needs calibration\n"
                       "- router: not trained; rows from gate_mode %s, seed %llu, %lld "
                       "experts per token\n",
                    cfg->router.init == SYM_ROUTER_INIT_ZERO ? "zero"
                                                             : sym_gate_mode_name(cfg->gate_mode),
                    (unsigned long long)cfg->seed, (long long)cfg->experts_per_token);
        return;
    }
    write_calibration(c, cfg, report);
    write_alignment(c, layers);
    write_router(c, cfg, layers);
}

sym_status sym_merge_write_card(const sym_card_facts *facts, const char *dir, sym_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, SYM_REPORT_NAME);
    json_error_t jerr;
    json_t *report = facts->calibrated ? json_load_file(path, 0, &jerr) : NULL;
    if (facts->calibrated && report == NULL)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot read it for the model card: %s",
                             path, jerr.text);
    card_text c = {calloc(1, 1), 0};
    card_append(&c, "# Mixture-of-Experts merge\n\nBuilt by symphony-stream from %zu dense "
                    "models: expert e of every layer is source e's feed-forward network.\n\n",
                facts->cfg->n_experts);
    write_sources(&c, facts);
    write_method(&c, facts, report);
    card_append(&c, "\n## Settings\n\n- dtype: %s\n- seed: %llu\n"
                    "- tensors: %zu in %u shard(s), %llu bytes\n",
                sym_dtype_name(facts->cfg->dtype), (unsigned long long)facts->cfg->seed,
                facts->plan->n_tensors, facts->plan->n_shards,
                (unsigned long long)facts->plan->total_size);
    json_decref(report);
    if (c.text == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "README.md: out of memory");
    sym_status s = sym_write_file(dir, "README.md", c.text, c.len, err);
    free(c.text);
    return s;
}
