/* Parsing of the normalizer, pre-tokenizer and decoder sections of tokenizer.json. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_parse.h"

/* Limits on nested Sequence components and on the steps of one pipeline; real files use
 * one level and fewer than ten steps. */
#define TOK_NESTING_MAX 8
#define TOK_STEPS_MAX 64

static const char *type_of(const json_t *component)
{
    const json_t *type = json_object_get(component, "type");
    return json_is_string(type) ? json_string_value(type) : NULL;
}

static sym_status grow_steps(void **steps, size_t count, size_t size, const char *what,
                             sym_error *err)
{
    if (count >= TOK_STEPS_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT, "%s has more than %d steps", what,
                             TOK_STEPS_MAX);
    void *grown = realloc(*steps, (count + 1) * size);
    if (grown == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for the %s", what);
    *steps = grown;
    return SYM_OK;
}

/* Reads {"String": "..."} as a literal pattern; Regex patterns are not supported. */
static sym_status parse_pattern(sym_tokenizer *tok, const json_t *component, const char *where,
                                tok_span *pattern, sym_error *err)
{
    const json_t *object = json_object_get(component, "pattern");
    if (json_object_get(object, "Regex") != NULL)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: Replace with a Regex pattern is not supported "
                             "(only String patterns are)", where);
    sym_status status = tok_json_string(tok, object, "String", where, false, pattern, NULL,
                                        err);
    if (status == SYM_OK && pattern->length == 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: empty Replace pattern", where);
    return status;
}

/* Reads a component's "replacement" character (U+2581 when absent). */
static sym_status parse_replacement(sym_tokenizer *tok, const json_t *component,
                                    const char *where, tok_span *replacement, sym_error *err)
{
    bool present;
    sym_status status = tok_json_string(tok, component, "replacement", where, true,
                                        replacement, &present, err);
    if (status != SYM_OK)
        return status;
    if (!present)
        return tok_arena_add(tok, "\xe2\x96\x81", 3, replacement, err);
    const char *text = tok_span_data(tok, *replacement);
    if (replacement->length == 0 ||
        tok_utf8_length(text, replacement->length) != replacement->length)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: \"replacement\" must be one character", where);
    return SYM_OK;
}

/* Reads the Metaspace prepend scheme: "prepend_scheme", or the older boolean
 * "add_prefix_space" (false means never); "always" when neither is given. */
static sym_status parse_prepend(const json_t *component, const char *where,
                                tok_prepend *prepend, sym_error *err)
{
    const json_t *scheme = json_object_get(component, "prepend_scheme");
    *prepend = tok_json_bool(component, "add_prefix_space", true) ? TOK_PREPEND_ALWAYS
                                                                  : TOK_PREPEND_NEVER;
    if (scheme == NULL || json_is_null(scheme))
        return SYM_OK;
    const char *name = json_is_string(scheme) ? json_string_value(scheme) : "";
    if (strcmp(name, "always") == 0)
        *prepend = TOK_PREPEND_ALWAYS;
    else if (strcmp(name, "first") == 0)
        *prepend = TOK_PREPEND_FIRST;
    else if (strcmp(name, "never") == 0)
        *prepend = TOK_PREPEND_NEVER;
    else
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: prepend_scheme '%.32s' is not always, first or never", where,
                             name);
    return SYM_OK;
}

/* ---- normalizer ---- */

static sym_status parse_norm(sym_tokenizer *tok, const json_t *normalizer, int depth,
                             sym_error *err);

static sym_status parse_norm_sequence(sym_tokenizer *tok, const json_t *normalizer, int depth,
                                      sym_error *err)
{
    if (depth >= TOK_NESTING_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT, "normalizer: Sequence nested deeper than %d",
                             TOK_NESTING_MAX);
    const json_t *list = json_object_get(normalizer, "normalizers");
    if (!json_is_array(list))
        return sym_error_set(err, SYM_ERR_FORMAT, "normalizer: Sequence without a "
                                                  "\"normalizers\" array");
    size_t index;
    const json_t *inner;
    json_array_foreach(list, index, inner) {
        sym_status status = parse_norm(tok, inner, depth + 1, err);
        if (status != SYM_OK)
            return status;
    }
    return SYM_OK;
}

static sym_status parse_norm(sym_tokenizer *tok, const json_t *normalizer, int depth,
                             sym_error *err)
{
    if (normalizer == NULL || json_is_null(normalizer))
        return SYM_OK;
    const char *type = type_of(normalizer);
    if (type == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "normalizer without a \"type\"");
    if (strcmp(type, "Sequence") == 0)
        return parse_norm_sequence(tok, normalizer, depth, err);

    sym_status status = grow_steps((void **)&tok->norm_steps, tok->norm_count,
                                   sizeof *tok->norm_steps, "normalizer", err);
    if (status != SYM_OK)
        return status;
    tok_norm_step *step = &tok->norm_steps[tok->norm_count];
    memset(step, 0, sizeof *step);
    if (strcmp(type, "Prepend") == 0) {
        step->kind = TOK_NORM_PREPEND;
        status = tok_json_string(tok, normalizer, "prepend", "normalizer Prepend", false,
                                 &step->text, NULL, err);
    } else if (strcmp(type, "Replace") == 0) {
        step->kind = TOK_NORM_REPLACE;
        status = parse_pattern(tok, normalizer, "normalizer Replace", &step->pattern, err);
        if (status == SYM_OK)
            status = tok_json_string(tok, normalizer, "content", "normalizer Replace", false,
                                     &step->text, NULL, err);
    } else {
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "normalizer type '%.64s' is not supported (supported: Sequence, "
                             "Prepend, Replace)", type);
    }
    if (status == SYM_OK)
        tok->norm_count++;
    return status;
}

sym_status tok_parse_normalizer(sym_tokenizer *tok, const json_t *normalizer, sym_error *err)
{
    return parse_norm(tok, normalizer, 0, err);
}

/* ---- pre-tokenizer ---- */

static sym_status parse_pre(sym_tokenizer *tok, const json_t *pre, int depth, sym_error *err)
{
    if (pre == NULL || json_is_null(pre))
        return SYM_OK;
    const char *type = type_of(pre);
    if (type == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "pre_tokenizer without a \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(pre, "pretokenizers");
        if (json_array_size(list) != 1 || depth >= TOK_NESTING_MAX)
            return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                                 "pre_tokenizer Sequence of %zu steps is not supported "
                                 "(only one Metaspace step is)", json_array_size(list));
        return parse_pre(tok, json_array_get(list, 0), depth + 1, err);
    }
    if (strcmp(type, "Metaspace") != 0) {
        const char *hint = strcmp(type, "ByteLevel") == 0 ? " (byte-level BPE)" : "";
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "pre_tokenizer type '%.64s'%s is not supported (supported: none, "
                             "Metaspace)", type, hint);
    }
    tok->metaspace = true;
    tok->metaspace_split = tok_json_bool(pre, "split", true);
    sym_status status = parse_replacement(tok, pre, "pre_tokenizer Metaspace",
                                          &tok->metaspace_replacement, err);
    if (status == SYM_OK)
        status = parse_prepend(pre, "pre_tokenizer Metaspace", &tok->metaspace_prepend, err);
    return status;
}

sym_status tok_parse_pre_tokenizer(sym_tokenizer *tok, const json_t *pre_tokenizer,
                                   sym_error *err)
{
    return parse_pre(tok, pre_tokenizer, 0, err);
}

/* ---- decoder ---- */

static sym_status parse_strip(sym_tokenizer *tok, const json_t *decoder, tok_decoder_step *step,
                              sym_error *err)
{
    const char *where = "decoder Strip";
    sym_status status = tok_json_string(tok, decoder, "content", where, false, &step->text,
                                        NULL, err);
    if (status != SYM_OK)
        return status;
    const char *text = tok_span_data(tok, step->text);
    if (step->text.length == 0 || tok_utf8_length(text, step->text.length) != step->text.length)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: \"content\" must be one character",
                             where);
    const char *keys[2] = {"start", "stop"};
    uint32_t *counts[2] = {&step->strip_start, &step->strip_stop};
    for (int k = 0; k < 2; k++) {
        const json_t *value = json_object_get(decoder, keys[k]);
        if (!json_is_integer(value) || json_integer_value(value) < 0 ||
            json_integer_value(value) > 65536)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "%s: \"%s\" must be an integer in [0, 65536]", where, keys[k]);
        *counts[k] = (uint32_t)json_integer_value(value);
    }
    return SYM_OK;
}

static sym_status parse_dec(sym_tokenizer *tok, const json_t *decoder, int depth,
                            sym_error *err);

static sym_status parse_dec_sequence(sym_tokenizer *tok, const json_t *decoder, int depth,
                                     sym_error *err)
{
    if (depth >= TOK_NESTING_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT, "decoder: Sequence nested deeper than %d",
                             TOK_NESTING_MAX);
    const json_t *list = json_object_get(decoder, "decoders");
    if (!json_is_array(list))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "decoder: Sequence without a \"decoders\" array");
    size_t index;
    const json_t *inner;
    json_array_foreach(list, index, inner) {
        sym_status status = parse_dec(tok, inner, depth + 1, err);
        if (status != SYM_OK)
            return status;
    }
    return SYM_OK;
}

static sym_status parse_dec(sym_tokenizer *tok, const json_t *decoder, int depth,
                            sym_error *err)
{
    const char *type = type_of(decoder);
    if (type == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "decoder without a \"type\"");
    if (strcmp(type, "Sequence") == 0)
        return parse_dec_sequence(tok, decoder, depth, err);

    sym_status status = grow_steps((void **)&tok->decoder_steps, tok->decoder_count,
                                   sizeof *tok->decoder_steps, "decoder", err);
    if (status != SYM_OK)
        return status;
    tok_decoder_step *step = &tok->decoder_steps[tok->decoder_count];
    memset(step, 0, sizeof *step);
    if (strcmp(type, "Replace") == 0) {
        step->kind = TOK_DEC_REPLACE;
        status = parse_pattern(tok, decoder, "decoder Replace", &step->pattern, err);
        if (status == SYM_OK)
            status = tok_json_string(tok, decoder, "content", "decoder Replace", false,
                                     &step->text, NULL, err);
    } else if (strcmp(type, "ByteFallback") == 0) {
        step->kind = TOK_DEC_BYTE_FALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        step->kind = TOK_DEC_FUSE;
    } else if (strcmp(type, "Strip") == 0) {
        step->kind = TOK_DEC_STRIP;
        status = parse_strip(tok, decoder, step, err);
    } else if (strcmp(type, "Metaspace") == 0) {
        step->kind = TOK_DEC_METASPACE;
        status = parse_replacement(tok, decoder, "decoder Metaspace", &step->pattern, err);
        if (status == SYM_OK)
            status = parse_prepend(decoder, "decoder Metaspace", &step->prepend, err);
    } else {
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "decoder type '%.64s' is not supported (supported: Sequence, "
                             "Replace, ByteFallback, Fuse, Strip, Metaspace)", type);
    }
    if (status == SYM_OK)
        tok->decoder_count++;
    return status;
}

sym_status tok_parse_decoder(sym_tokenizer *tok, const json_t *decoder, sym_error *err)
{
    if (decoder == NULL || json_is_null(decoder))
        return SYM_OK;
    tok->has_decoder = true;
    return parse_dec(tok, decoder, 0, err);
}
