/* Calibration tokens of a merge: every domain's text, encoded with the vocabulary donor's
 * tokenizer and cut into sequences of sequence_length ids with BOS first.
 *
 * calibration_tokens is the total over all domains, split equally: each domain gets
 * floor(total / domains / sequence_length) sequences. A domain's text is encoded file by
 * file (each file as one string, so one dummy prefix per file) and the ids are
 * concatenated; sequence s takes ids s x (sequence_length - 1) onwards. A domain whose
 * text runs out contributes the sequences it has (short_domain says so).
 */
#include <stdlib.h>
#include <string.h>

#include "pipeline_internal.h"
#include "symphony/tokenizer.h"

typedef struct id_list {
    int32_t *ids;
    size_t n, cap;
} id_list;

static sym_status append_ids(id_list *list, const int32_t *ids, size_t n, sym_error *err)
{
    if (list->n + n > list->cap) {
        size_t cap = (list->n + n) * 2;
        int32_t *grown = realloc(list->ids, cap * sizeof *grown);
        if (grown == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM, "calibration tokens: out of memory");
        list->ids = grown;
        list->cap = cap;
    }
    memcpy(list->ids + list->n, ids, n * sizeof *ids);
    list->n += n;
    return SYM_OK;
}

static sym_status encode_append(const sym_tokenizer *tok, const char *text, size_t len,
                                id_list *list, sym_error *err)
{
    int32_t *ids = NULL;
    size_t n = 0;
    sym_status s = sym_tokenizer_encode(tok, text, len, 0, &ids, &n, err);
    if (s == SYM_OK)
        s = append_ids(list, ids, n, err);
    free(ids);
    return s;
}

/* The domain's ids: its calibration files, or its positive prompts when it has none. */
static sym_status domain_ids(const sym_expert_cfg *e, const sym_tokenizer *tok, id_list *list,
                             sym_error *err)
{
    sym_status s = SYM_OK;
    for (size_t f = 0; f < e->n_calibration && s == SYM_OK; f++) {
        char *text = NULL;
        size_t len = 0;
        s = sym_text_load(e->calibration[f], &text, &len, err);
        if (s == SYM_OK)
            s = encode_append(tok, text, len, list, err);
        free(text);
    }
    for (size_t p = 0; e->n_calibration == 0 && p < e->n_positive && s == SYM_OK; p++)
        s = encode_append(tok, e->positive_prompts[p], strlen(e->positive_prompts[p]), list,
                          err);
    return s;
}

static sym_status add_domain(sym_calib *c, size_t domain, const id_list *list, size_t want,
                             int32_t bos, sym_error *err)
{
    size_t body = c->seq_len - 1;
    size_t have = list->n / body;
    size_t take = have < want ? have : want;
    c->short_domain[domain] = have < want;
    c->per_domain[domain] = take * c->seq_len;
    size_t n = c->n_seq + take;
    int32_t *ids = realloc(c->ids, n * c->seq_len * sizeof *ids + 1);
    if (ids != NULL)
        c->ids = ids;
    uint32_t *labels = realloc(c->seq_label, n * sizeof *labels + 1);
    if (labels != NULL)
        c->seq_label = labels;
    if (ids == NULL || labels == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "calibration tokens: out of memory");
    for (size_t s = 0; s < take; s++) {
        int32_t *row = c->ids + (c->n_seq + s) * c->seq_len;
        row[0] = bos;
        memcpy(row + 1, list->ids + s * body, body * sizeof *row);
        c->seq_label[c->n_seq + s] = (uint32_t)domain;
    }
    c->n_seq = n;
    return SYM_OK;
}

static sym_status fill_labels(sym_calib *c, sym_error *err)
{
    c->labels = malloc(c->n_seq * c->seq_len * sizeof *c->labels + 1);
    if (c->labels == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "calibration tokens: out of memory");
    for (size_t s = 0; s < c->n_seq; s++)
        for (size_t t = 0; t < c->seq_len; t++)
            c->labels[s * c->seq_len + t] = c->seq_label[s];
    return SYM_OK;
}

static sym_status check_counts(const sym_merge_config *cfg, const sym_calib *c, size_t want,
                               sym_error *err)
{
    if (want == 0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: calibration_tokens %lld gives less than one sequence of %zu "
                             "tokens per domain (%zu domains); raise it to at least %zu",
                             cfg->path, (long long)cfg->calibration_tokens, c->seq_len,
                             cfg->n_experts, c->seq_len * cfg->n_experts);
    for (size_t e = 0; e < cfg->n_experts; e++)
        if (c->per_domain[e] == 0)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "%s: expert %zu (%s) has no calibration text for even one "
                                 "sequence of %zu tokens; add a calibration file",
                                 cfg->path, e, cfg->experts[e].source_model, c->seq_len);
    return SYM_OK;
}

sym_status sym_calib_build(const sym_merge_config *cfg, const char *tokenizer_dir,
                           sym_calib *calib, sym_error *err)
{
    memset(calib, 0, sizeof *calib);
    calib->seq_len = (size_t)cfg->sequence_length;
    if (calib->seq_len < 2)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: sequence_length must be at least 2",
                             cfg->path);
    sym_tokenizer *tok = NULL;
    sym_status s = sym_tokenizer_load(tokenizer_dir, &tok, err);
    int32_t bos = s == SYM_OK ? sym_tokenizer_bos(tok) : -1;
    if (s == SYM_OK && bos < 0)
        s = sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: the tokenizer has no BOS token",
                          tokenizer_dir);
    size_t want = (size_t)cfg->calibration_tokens / cfg->n_experts / calib->seq_len;
    for (size_t e = 0; e < cfg->n_experts && s == SYM_OK; e++) {
        id_list list = {0};
        s = domain_ids(&cfg->experts[e], tok, &list, err);
        if (s == SYM_OK)
            s = add_domain(calib, e, &list, want, bos, err);
        free(list.ids);
    }
    sym_tokenizer_free(tok);
    if (s == SYM_OK)
        s = check_counts(cfg, calib, want, err);
    if (s == SYM_OK)
        s = fill_labels(calib, err);
    return s;
}

void sym_calib_free(sym_calib *calib)
{
    free(calib->ids);
    free(calib->seq_label);
    free(calib->labels);
    memset(calib, 0, sizeof *calib);
}
