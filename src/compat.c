/* Architecture compatibility of merge sources. */
#include "symphony/compat.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Largest tokenizer.json read for the vocabulary comparison. */
#define MAX_TOKENIZER_BYTES (64u << 20)

typedef struct vocab {
    size_t size;
    char **pieces; /* pieces[id], NULL where no piece has that id */
} vocab;

static void vocab_free(vocab *v)
{
    for (size_t i = 0; i < v->size; i++)
        free(v->pieces[i]);
    free(v->pieces);
    memset(v, 0, sizeof *v);
}

static bool vocab_put(vocab *v, json_int_t id, const char *piece)
{
    if (id < 0 || (size_t)id >= v->size)
        return true; /* ids past the embedding are the tokenizer's business, not ours */
    free(v->pieces[id]);
    v->pieces[id] = strdup(piece);
    return v->pieces[id] != NULL;
}

/* Reads id -> piece from tokenizer.json (model.vocab and added_tokens) for ids below size.
 * Returns SYM_ERR_NOT_FOUND when the directory has no tokenizer.json. */
static sym_status vocab_load(const char *dir, size_t size, vocab *v, sym_error *err)
{
    memset(v, 0, sizeof *v);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    json_t *root;
    sym_status s = sym_json_load_file(path, MAX_TOKENIZER_BYTES, &root, err);
    if (s != SYM_OK)
        return s;
    v->size = size;
    v->pieces = calloc(size, sizeof *v->pieces);
    if (v->pieces == NULL) {
        json_decref(root);
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    json_t *model_vocab = json_object_get(json_object_get(root, "model"), "vocab");
    const char *piece;
    json_t *id;
    json_object_foreach(model_vocab, piece, id) {
        if (json_is_integer(id) && !vocab_put(v, json_integer_value(id), piece))
            s = sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t i;
    json_t *added;
    json_array_foreach(json_object_get(root, "added_tokens"), i, added) {
        json_t *aid = json_object_get(added, "id");
        json_t *content = json_object_get(added, "content");
        if (json_is_integer(aid) && json_is_string(content) &&
            !vocab_put(v, json_integer_value(aid), json_string_value(content)))
            s = sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    if (s == SYM_OK && !json_is_object(model_vocab))
        s = sym_error_set(err, SYM_ERR_FORMAT, "%s: missing object model.vocab", path);
    json_decref(root);
    if (s != SYM_OK)
        vocab_free(v);
    return s;
}

static sym_status add_line(char ***list, size_t *count, sym_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static sym_status add_line(char ***list, size_t *count, sym_error *err, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char **grown = realloc(*list, (*count + 1) * sizeof *grown);
    if (grown == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory");
    *list = grown;
    if ((grown[*count] = strdup(line)) == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory");
    (*count)++;
    return SYM_OK;
}

#define PROBLEM(...) add_line(&report->problems, &report->n_problems, err, __VA_ARGS__)
#define NOTE(...) add_line(&report->notes, &report->n_notes, err, __VA_ARGS__)

/* Checks one model on its own: dtypes of the tensors the merge reads, dense FFN. */
static sym_status check_single(const sym_model *m, bool as_source, sym_compat_report *report,
                               sym_error *err)
{
    const sym_model_config *c = sym_model_get_config(m);
    sym_status s = SYM_OK;
    if (as_source && c->num_local_experts > 0)
        s = PROBLEM("%s: is a Mixtral MoE (%lld experts); merge sources must be dense models",
                    sym_model_dir(m), (long long)c->num_local_experts);
    for (size_t i = 0; i < sym_model_shard_count(m) && s == SYM_OK; i++) {
        const sym_st_file *f = sym_model_shard(m, i);
        for (size_t j = 0; j < f->header.n_tensors && s == SYM_OK; j++) {
            const sym_st_tensor *t = &f->header.tensors[j];
            bool ignored = false;
            for (size_t k = 0; k < sym_model_ignored_count(m) && !ignored; k++)
                ignored = sym_model_ignored_name(m, k) == t->name;
            if (!ignored && t->dtype != SYM_DTYPE_F32 && t->dtype != SYM_DTYPE_F16 &&
                t->dtype != SYM_DTYPE_BF16)
                s = PROBLEM("%s: tensor '%s' has dtype %s; expected F32, F16 or BF16",
                            f->path, t->name, sym_dtype_name(t->dtype));
        }
    }
    return s;
}

static sym_status compare_int(sym_compat_report *report, sym_error *err, const char *key,
                              const sym_model *a, int64_t va, const sym_model *b, int64_t vb)
{
    if (va == vb)
        return SYM_OK;
    return PROBLEM("%s: %lld in %s but %lld in %s", key, (long long)va, sym_model_dir(a),
                   (long long)vb, sym_model_dir(b));
}

static sym_status compare_rope(sym_compat_report *report, sym_error *err, const sym_model *a,
                               const sym_model *b, bool allowed)
{
    const sym_model_config *ca = sym_model_get_config(a), *cb = sym_model_get_config(b);
    const sym_rope_scaling *ra = &ca->rope_scaling, *rb = &cb->rope_scaling;
    bool scaling_differs = strcmp(ra->type, rb->type) != 0 || ra->factor != rb->factor ||
                           ra->low_freq_factor != rb->low_freq_factor ||
                           ra->high_freq_factor != rb->high_freq_factor ||
                           ra->original_max_position_embeddings !=
                               rb->original_max_position_embeddings;
    sym_status s = SYM_OK;
    if (ca->rope_theta != cb->rope_theta) {
        if (allowed)
            s = NOTE("rope_theta: %g in %s but %g in %s; the merged model uses the anchor's",
                     ca->rope_theta, sym_model_dir(a), cb->rope_theta, sym_model_dir(b));
        else
            s = PROBLEM("rope_theta: %g in %s but %g in %s; one attention backbone cannot serve "
                        "both exactly (set 'symphony: {rope: anchor}' in the merge config to "
                        "merge anyway with the anchor's)", ca->rope_theta, sym_model_dir(a),
                        cb->rope_theta, sym_model_dir(b));
    }
    if (s == SYM_OK && scaling_differs) {
        if (allowed)
            s = NOTE("rope_scaling differs between %s and %s; the merged model uses the anchor's",
                     sym_model_dir(a), sym_model_dir(b));
        else
            s = PROBLEM("rope_scaling: '%s' (factor %g) in %s but '%s' (factor %g) in %s (set "
                        "'symphony: {rope: anchor}' to merge anyway)",
                        ra->type[0] ? ra->type : "none", ra->factor, sym_model_dir(a),
                        rb->type[0] ? rb->type : "none", rb->factor, sym_model_dir(b));
    }
    return s;
}

/* Vocabularies may differ in size only when the shorter is a piece-for-piece prefix. */
static sym_status compare_vocab(sym_compat_report *report, sym_error *err, const sym_model *a,
                                const sym_model *b)
{
    const sym_model *shorter = a, *longer = b;
    int64_t na = sym_model_get_config(a)->vocab_size, nb = sym_model_get_config(b)->vocab_size;
    if (na > nb) {
        shorter = b;
        longer = a;
    }
    size_t n_short = (size_t)(na < nb ? na : nb), n_long = (size_t)(na < nb ? nb : na);

    vocab vs, vl;
    sym_error verr;
    if (vocab_load(sym_model_dir(shorter), n_short, &vs, &verr) != SYM_OK) {
        if (na != nb)
            return PROBLEM("vocab_size: %zu in %s but %zu in %s, and the pieces cannot be "
                           "compared: %s", n_short, sym_model_dir(shorter), n_long,
                           sym_model_dir(longer), verr.message);
        return NOTE("vocabulary of %s not compared: %s", sym_model_dir(shorter), verr.message);
    }
    if (vocab_load(sym_model_dir(longer), n_long, &vl, &verr) != SYM_OK) {
        vocab_free(&vs);
        if (na != nb)
            return PROBLEM("vocab_size: %zu in %s but %zu in %s, and the pieces cannot be "
                           "compared: %s", n_short, sym_model_dir(shorter), n_long,
                           sym_model_dir(longer), verr.message);
        return NOTE("vocabulary of %s not compared: %s", sym_model_dir(longer), verr.message);
    }

    sym_status s = SYM_OK;
    size_t mismatches = 0, first = 0;
    for (size_t id = 0; id < n_short; id++) {
        const char *ps = vs.pieces[id], *pl = vl.pieces[id];
        bool same = (ps == NULL && pl == NULL) || (ps && pl && strcmp(ps, pl) == 0);
        if (!same && mismatches++ == 0)
            first = id;
    }
    if (mismatches > 0)
        s = PROBLEM("vocabulary: %zu of the first %zu ids differ between %s and %s (first at id "
                    "%zu: '%s' vs '%s'); the models use different tokenizers", mismatches,
                    n_short, sym_model_dir(shorter), sym_model_dir(longer), first,
                    vs.pieces[first] ? vs.pieces[first] : "(none)",
                    vl.pieces[first] ? vl.pieces[first] : "(none)");
    else if (n_short != n_long)
        s = NOTE("vocabulary: %s has %zu ids and %s has %zu; the shorter is a prefix of the "
                 "longer, so ids %zu..%zu (first '%s') come from %s only", sym_model_dir(shorter),
                 n_short, sym_model_dir(longer), n_long, n_short, n_long - 1,
                 vl.pieces[n_short] ? vl.pieces[n_short] : "(no piece)", sym_model_dir(longer));
    vocab_free(&vs);
    vocab_free(&vl);
    return s;
}

static const char *dtype_summary(const sym_model *m)
{
    const sym_tensor_ref *q = sym_model_tensor(m, SYM_ROLE_Q, 0, -1);
    return sym_dtype_name(q->info->dtype);
}

static sym_status compare_pair(sym_compat_report *report, const sym_model *a,
                               const sym_model *b, const sym_compat_options *opts,
                               sym_error *err)
{
    const sym_model_config *ca = sym_model_get_config(a), *cb = sym_model_get_config(b);
    sym_status s = SYM_OK;
    if (strcmp(ca->model_type, cb->model_type) != 0)
        s = PROBLEM("model_type: '%s' in %s but '%s' in %s", ca->model_type, sym_model_dir(a),
                    cb->model_type, sym_model_dir(b));
    const struct {
        const char *key;
        int64_t va, vb;
    } ints[] = {
        {"num_hidden_layers", ca->num_hidden_layers, cb->num_hidden_layers},
        {"hidden_size", ca->hidden_size, cb->hidden_size},
        {"intermediate_size", ca->intermediate_size, cb->intermediate_size},
        {"num_attention_heads", ca->num_attention_heads, cb->num_attention_heads},
        {"num_key_value_heads", ca->num_key_value_heads, cb->num_key_value_heads},
        {"head_dim", ca->head_dim, cb->head_dim},
        {"max_position_embeddings", ca->max_position_embeddings, cb->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0] && s == SYM_OK; i++)
        s = compare_int(report, err, ints[i].key, a, ints[i].va, b, ints[i].vb);
    if (s == SYM_OK && ca->rms_norm_eps != cb->rms_norm_eps)
        s = PROBLEM("rms_norm_eps: %g in %s but %g in %s", ca->rms_norm_eps, sym_model_dir(a),
                    cb->rms_norm_eps, sym_model_dir(b));
    if (s == SYM_OK)
        s = compare_rope(report, err, a, b, opts && opts->rope_anchor);
    if (s == SYM_OK && sym_model_lm_head_tied(a) != sym_model_lm_head_tied(b))
        s = NOTE("tied embeddings: %s in %s but %s in %s; the merged model stores an lm_head",
                 sym_model_lm_head_tied(a) ? "yes" : "no", sym_model_dir(a),
                 sym_model_lm_head_tied(b) ? "yes" : "no", sym_model_dir(b));
    if (s == SYM_OK && strcmp(dtype_summary(a), dtype_summary(b)) != 0)
        s = NOTE("dtypes: %s stores %s and %s stores %s; both are converted to f32 for the merge",
                 sym_model_dir(a), dtype_summary(a), sym_model_dir(b), dtype_summary(b));
    if (s == SYM_OK && strcmp(sym_model_prefix(a), sym_model_prefix(b)) != 0)
        s = NOTE("tensor names: prefix '%s' in %s but '%s' in %s; names are normalised",
                 sym_model_prefix(a), sym_model_dir(a), sym_model_prefix(b), sym_model_dir(b));
    if (s == SYM_OK)
        s = compare_vocab(report, err, a, b);
    return s;
}

sym_status sym_compat_check(sym_model *const *models, size_t n, const sym_compat_options *opts,
                            sym_compat_report *report, sym_error *err)
{
    memset(report, 0, sizeof *report);
    sym_status s = SYM_OK;
    for (size_t i = 0; i < n && s == SYM_OK; i++)
        s = check_single(models[i], n > 1, report, err);
    for (size_t i = 1; i < n && s == SYM_OK; i++)
        s = compare_pair(report, models[0], models[i], opts, err);
    if (s != SYM_OK)
        sym_compat_report_free(report);
    return s;
}

void sym_compat_report_free(sym_compat_report *report)
{
    for (size_t i = 0; i < report->n_problems; i++)
        free(report->problems[i]);
    for (size_t i = 0; i < report->n_notes; i++)
        free(report->notes[i]);
    free(report->problems);
    free(report->notes);
    memset(report, 0, sizeof *report);
}
