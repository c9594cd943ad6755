/* Decoding: ids to pieces, then the decoder steps of tokenizer.json over the piece list,
 * as Hugging Face tokenizers runs them (each step maps a list of strings to a new list). */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* A list of byte strings stored back to back: item i is bytes[ends[i - 1], ends[i]). */
typedef struct str_list {
    char *bytes;
    size_t length;
    size_t capacity;
    size_t *ends;
    size_t count;
    size_t ends_capacity;
} str_list;

static bool grow(void **data, size_t *capacity, size_t need, size_t size)
{
    if (need <= *capacity)
        return true;
    size_t grown = *capacity < 64 ? 64 : *capacity;
    while (grown < need)
        grown *= 2;
    void *p = realloc(*data, grown * size);
    if (p == NULL)
        return false;
    *data = p;
    *capacity = grown;
    return true;
}

/* Appends bytes to the last item (which add_item opened). */
static bool append(str_list *list, const char *bytes, size_t len)
{
    if (!grow((void **)&list->bytes, &list->capacity, list->length + len + 1, 1))
        return false;
    if (len > 0)
        memcpy(list->bytes + list->length, bytes, len);
    list->length += len;
    list->ends[list->count - 1] = list->length;
    return true;
}

static bool add_item(str_list *list, const char *bytes, size_t len)
{
    if (!grow((void **)&list->ends, &list->ends_capacity, list->count + 1, sizeof(size_t)))
        return false;
    list->ends[list->count++] = list->length;
    return append(list, bytes, len);
}

static const char *item(const str_list *list, size_t i, size_t *len)
{
    size_t start = i == 0 ? 0 : list->ends[i - 1];
    *len = list->ends[i] - start;
    return list->bytes + start;
}

static void clear(str_list *list)
{
    list->length = 0;
    list->count = 0;
}

/* ---- decoder steps: each reads in and writes out ---- */

static bool step_replace(const sym_tokenizer *tok, const tok_decoder_step *step,
                         const str_list *in, str_list *out)
{
    const char *pattern = tok_span_data(tok, step->pattern);
    size_t pattern_length = step->pattern.length;
    for (size_t i = 0; i < in->count; i++) {
        size_t len;
        const char *text = item(in, i, &len);
        if (!add_item(out, "", 0))
            return false;
        size_t start = 0;
        while (start < len) {
            const char *hit = memmem(text + start, len - start, pattern, pattern_length);
            size_t end = hit == NULL ? len : (size_t)(hit - text);
            if (!append(out, text + start, end - start))
                return false;
            if (hit == NULL)
                break;
            if (!append(out, tok_span_data(tok, step->text), step->text.length))
                return false;
            start = end + pattern_length;
        }
    }
    return true;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Returns the byte of a "<0xHH>" piece, or -1. */
static int byte_piece(const char *text, size_t len)
{
    if (len != 6 || memcmp(text, "<0x", 3) != 0 || text[5] != '>')
        return -1;
    int high = hex_value(text[3]);
    int low = hex_value(text[4]);
    return high < 0 || low < 0 ? -1 : high * 16 + low;
}

static bool valid_utf8(const char *bytes, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t n = tok_utf8_length(bytes + i, len - i);
        if (n == 1 && (unsigned char)bytes[i] >= 0x80)
            return false;
        i += n;
    }
    return true;
}

/* Emits a run of byte pieces: one item when the bytes are valid UTF-8, otherwise one
 * U+FFFD per byte, as Hugging Face tokenizers' ByteFallback does. */
static bool flush_bytes(str_list *out, const char *bytes, size_t len)
{
    if (len == 0)
        return true;
    if (valid_utf8(bytes, len))
        return add_item(out, bytes, len);
    for (size_t i = 0; i < len; i++) {
        if (!add_item(out, "\xef\xbf\xbd", 3))
            return false;
    }
    return true;
}

static bool step_byte_fallback(const str_list *in, str_list *out)
{
    char *pending = malloc(in->count + 1);
    if (pending == NULL)
        return false;
    size_t pending_length = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < in->count; i++) {
        size_t len;
        const char *text = item(in, i, &len);
        int byte = byte_piece(text, len);
        if (byte >= 0) {
            pending[pending_length++] = (char)byte;
            continue;
        }
        ok = flush_bytes(out, pending, pending_length) && add_item(out, text, len);
        pending_length = 0;
    }
    ok = ok && flush_bytes(out, pending, pending_length);
    free(pending);
    return ok;
}

static bool step_fuse(const str_list *in, str_list *out)
{
    return add_item(out, in->bytes, in->length);
}

/* Removes up to strip_start copies of the character from the start of each item and up
 * to strip_stop from its end. */
static bool step_strip(const sym_tokenizer *tok, const tok_decoder_step *step,
                       const str_list *in, str_list *out)
{
    const char *c = tok_span_data(tok, step->text);
    size_t c_length = step->text.length;
    for (size_t i = 0; i < in->count; i++) {
        size_t len;
        const char *text = item(in, i, &len);
        size_t start = 0;
        size_t end = len;
        for (uint32_t k = 0; k < step->strip_start && end - start >= c_length &&
                             memcmp(text + start, c, c_length) == 0; k++)
            start += c_length;
        for (uint32_t k = 0; k < step->strip_stop && end - start >= c_length &&
                             memcmp(text + end - c_length, c, c_length) == 0; k++)
            end -= c_length;
        if (!add_item(out, text + start, end - start))
            return false;
    }
    return true;
}

/* Replaces the replacement character with a space. In the first item, unless the prepend
 * scheme is never, every replacement character is dropped, as Hugging Face tokenizers'
 * Metaspace decoder does. */
static bool step_metaspace(const sym_tokenizer *tok, const tok_decoder_step *step,
                           const str_list *in, str_list *out)
{
    const char *rep = tok_span_data(tok, step->pattern);
    size_t rep_length = step->pattern.length;
    for (size_t i = 0; i < in->count; i++) {
        size_t len;
        const char *text = item(in, i, &len);
        bool drop = i == 0 && step->prepend != TOK_PREPEND_NEVER;
        if (!add_item(out, "", 0))
            return false;
        size_t start = 0;
        while (start < len) {
            const char *hit = memmem(text + start, len - start, rep, rep_length);
            size_t end = hit == NULL ? len : (size_t)(hit - text);
            if (!append(out, text + start, end - start))
                return false;
            if (hit == NULL)
                break;
            if (!drop && !append(out, " ", 1))
                return false;
            start = end + rep_length;
        }
    }
    return true;
}

static bool run_step(const sym_tokenizer *tok, const tok_decoder_step *step,
                     const str_list *in, str_list *out)
{
    switch (step->kind) {
    case TOK_DEC_REPLACE:
        return step_replace(tok, step, in, out);
    case TOK_DEC_BYTE_FALLBACK:
        return step_byte_fallback(in, out);
    case TOK_DEC_FUSE:
        return step_fuse(in, out);
    case TOK_DEC_STRIP:
        return step_strip(tok, step, in, out);
    case TOK_DEC_METASPACE:
        return step_metaspace(tok, step, in, out);
    }
    return false;
}

/* ---- entry point ---- */

static sym_status collect_pieces(const sym_tokenizer *tok, const int32_t *ids, size_t count,
                                 bool skip_special, str_list *list, sym_error *err)
{
    for (size_t i = 0; i < count; i++) {
        size_t len;
        const char *piece = sym_tokenizer_piece(tok, ids[i], &len);
        if (piece == NULL)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "token id %d at index %zu has no piece (vocabulary size %zu)",
                                 (int)ids[i], i, tok->vocab_size);
        if (skip_special && (tok->id_flags[ids[i]] & TOK_ID_SPECIAL))
            continue;
        /* Without a decoder, Hugging Face tokenizers joins the pieces with spaces. */
        bool join = !tok->has_decoder && list->count > 0;
        bool ok = join ? append(list, " ", 1) && append(list, piece, len)
                       : add_item(list, piece, len);
        if (join && ok)
            continue;
        if (!ok)
            return sym_error_set(err, SYM_ERR_NOMEM, "out of memory decoding %zu ids", count);
    }
    return SYM_OK;
}

sym_status sym_tokenizer_decode(const sym_tokenizer *tok, const int32_t *ids, size_t count,
                                bool skip_special, char **text, size_t *len, sym_error *err)
{
    *text = NULL;
    *len = 0;
    str_list lists[2] = {{0}, {0}};
    str_list *in = &lists[0];
    str_list *out = &lists[1];
    sym_status status = collect_pieces(tok, ids, count, skip_special, in, err);
    for (size_t s = 0; status == SYM_OK && s < tok->decoder_count; s++) {
        clear(out);
        if (!run_step(tok, &tok->decoder_steps[s], in, out))
            status = sym_error_set(err, SYM_ERR_NOMEM, "out of memory decoding %zu ids", count);
        str_list *swap = in;
        in = out;
        out = swap;
    }

    char *result = NULL;
    if (status == SYM_OK) {
        result = malloc(in->length + 1);
        if (result == NULL)
            status = sym_error_set(err, SYM_ERR_NOMEM, "out of memory decoding %zu ids", count);
    }
    if (status == SYM_OK) {
        if (in->length > 0)
            memcpy(result, in->bytes, in->length);
        result[in->length] = '\0';
        *text = result;
        *len = in->length;
    }
    for (int k = 0; k < 2; k++) {
        free(lists[k].bytes);
        free(lists[k].ends);
    }
    return status;
}
