/* Loading of tokenizer.json and tokenizer_config.json into a sym_tokenizer. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "tokenizer_internal.h"
#include "tokenizer_parse.h"

/* A vocabulary may leave at most this many ids without a piece, so that a tiny file cannot
 * make the id tables large. Real files leave none. */
#define TOK_ID_GAP_MAX 65536

sym_status tok_arena_add(sym_tokenizer *tok, const char *bytes, size_t len, tok_span *span,
                         sym_error *err)
{
    if (len > UINT32_MAX - 1 || tok->arena_length > UINT32_MAX - 1 - len)
        return sym_error_set(err, SYM_ERR_LIMIT, "tokenizer strings exceed 4 GiB");
    size_t need = tok->arena_length + len;
    if (need > tok->arena_capacity) {
        size_t capacity = tok->arena_capacity < 4096 ? 4096 : tok->arena_capacity;
        while (capacity < need)
            capacity *= 2;
        char *grown = realloc(tok->arena, capacity);
        if (grown == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for tokenizer strings");
        tok->arena = grown;
        tok->arena_capacity = capacity;
    }
    memcpy(tok->arena + tok->arena_length, bytes, len);
    span->offset = (uint32_t)tok->arena_length;
    span->length = (uint32_t)len;
    tok->arena_length += len;
    return SYM_OK;
}

/* ---- hash tables ---- */

static size_t table_size_for(size_t count)
{
    size_t size = 16;
    while (size < count * 2)
        size *= 2;
    return size;
}

int32_t tok_vocab_lookup(const sym_tokenizer *tok, const char *piece, size_t len)
{
    size_t slot = (size_t)XXH3_64bits(piece, len) & tok->piece_mask;
    for (;;) {
        const tok_piece_slot *entry = &tok->piece_slots[slot];
        if (entry->id < 0)
            return -1;
        if (entry->piece.length == len &&
            memcmp(tok_span_data(tok, entry->piece), piece, len) == 0)
            return entry->id;
        slot = (slot + 1) & tok->piece_mask;
    }
}

static void vocab_insert(sym_tokenizer *tok, tok_span piece, int32_t id)
{
    size_t slot = (size_t)XXH3_64bits(tok_span_data(tok, piece), piece.length) & tok->piece_mask;
    while (tok->piece_slots[slot].id >= 0)
        slot = (slot + 1) & tok->piece_mask;
    tok->piece_slots[slot].piece = piece;
    tok->piece_slots[slot].id = id;
}

static size_t merge_hash(uint64_t pair)
{
    return (size_t)((pair * 0x9E3779B97F4A7C15ull) >> 17);
}

const tok_merge_slot *tok_merge_lookup(const sym_tokenizer *tok, int32_t left, int32_t right)
{
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t slot = merge_hash(pair) & tok->merge_mask;
    for (;;) {
        const tok_merge_slot *entry = &tok->merge_slots[slot];
        if (entry->rank < 0)
            return NULL;
        if (entry->pair == pair)
            return entry;
        slot = (slot + 1) & tok->merge_mask;
    }
}

static size_t bigram_slot(const sym_tokenizer *tok, uint64_t key)
{
    size_t slot = merge_hash(key) & tok->bigram_mask;
    while (tok->bigram_slots[slot] != 0 && tok->bigram_slots[slot] != key)
        slot = (slot + 1) & tok->bigram_mask;
    return slot;
}

bool tok_bigram_in_vocab(const sym_tokenizer *tok, int32_t left, int32_t right)
{
    uint64_t key = TOK_BIGRAM_USED | (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    return tok->bigram_slots[bigram_slot(tok, key)] == key;
}

/* Records every pair of adjacent characters inside a vocabulary piece where both
 * characters are pieces themselves. */
static sym_status build_bigrams(sym_tokenizer *tok, sym_error *err)
{
    size_t slots = table_size_for(tok->arena_length + 1);
    tok->bigram_slots = calloc(slots, sizeof *tok->bigram_slots);
    if (tok->bigram_slots == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for the character pairs");
    tok->bigram_mask = slots - 1;
    for (size_t id = 0; id < tok->vocab_size; id++) {
        if (!(tok->id_flags[id] & TOK_ID_VOCAB))
            continue;
        const char *piece = tok_span_data(tok, tok->id_pieces[id]);
        size_t len = tok->id_pieces[id].length;
        int32_t previous = -1;
        for (size_t i = 0; i < len;) {
            size_t n = tok_utf8_length(piece + i, len - i);
            int32_t current = tok_vocab_lookup(tok, piece + i, n);
            if (previous >= 0 && current >= 0) {
                uint64_t key = TOK_BIGRAM_USED | (uint64_t)(uint32_t)previous << 32 |
                               (uint32_t)current;
                tok->bigram_slots[bigram_slot(tok, key)] = key;
            }
            previous = current;
            i += n;
        }
    }
    return SYM_OK;
}

/* Records a merge; a pair listed twice keeps its later rank, as Hugging Face tokenizers
 * does when it builds its merge map. */
static void merge_insert(sym_tokenizer *tok, int32_t left, int32_t right, int32_t rank,
                         int32_t merged_id)
{
    uint64_t pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t slot = merge_hash(pair) & tok->merge_mask;
    while (tok->merge_slots[slot].rank >= 0 && tok->merge_slots[slot].pair != pair)
        slot = (slot + 1) & tok->merge_mask;
    tok->merge_slots[slot].pair = pair;
    tok->merge_slots[slot].rank = rank;
    tok->merge_slots[slot].merged_id = merged_id;
}

size_t tok_utf8_length(const char *text, size_t available)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t length;
    unsigned char lead = s[0];
    if (lead < 0x80)
        return 1;
    if (lead >= 0xC2 && lead <= 0xDF)
        length = 2;
    else if (lead >= 0xE0 && lead <= 0xEF)
        length = 3;
    else if (lead >= 0xF0 && lead <= 0xF4)
        length = 4;
    else
        return 1;
    if (length > available)
        return 1;
    for (size_t i = 1; i < length; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 1;
    }
    /* Reject overlong forms, surrogates and code points above U+10FFFF. */
    if (lead == 0xE0 && s[1] < 0xA0)
        return 1;
    if (lead == 0xED && s[1] >= 0xA0)
        return 1;
    if (lead == 0xF0 && s[1] < 0x90)
        return 1;
    if (lead == 0xF4 && s[1] >= 0x90)
        return 1;
    return length;
}

/* ---- JSON helpers ---- */

sym_status tok_json_load(const char *path, size_t max_bytes, size_t extra_flags, json_t **root,
                         sym_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        sym_status status = errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO;
        return sym_error_set(err, status, "%s: cannot open: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return sym_error_set(err, SYM_ERR_INVALID, "%s: not a regular file", path);
    if ((uint64_t)st.st_size > max_bytes)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: %lld bytes, more than the limit of %zu bytes", path,
                             (long long)st.st_size, max_bytes);
    json_error_t jerr;
    *root = json_load_file(path, JSON_REJECT_DUPLICATES | extra_flags, &jerr);
    if (*root == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: invalid JSON at line %d, column %d: %s",
                             path, jerr.line, jerr.column, jerr.text);
    return SYM_OK;
}

bool tok_json_bool(const json_t *object, const char *key, bool fallback)
{
    const json_t *value = json_object_get(object, key);
    return json_is_boolean(value) ? json_is_true(value) : fallback;
}

/* Reads a string member into the arena. A missing or null member fails unless optional. */
sym_status tok_json_string(sym_tokenizer *tok, const json_t *object, const char *key,
                           const char *where, bool optional, tok_span *span, bool *present,
                           sym_error *err)
{
    const json_t *value = json_object_get(object, key);
    if (present != NULL)
        *present = value != NULL && !json_is_null(value);
    if (value == NULL || json_is_null(value)) {
        if (optional)
            return SYM_OK;
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: missing string \"%s\"", where, key);
    }
    if (!json_is_string(value))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: \"%s\" is not a string", where, key);
    return tok_arena_add(tok, json_string_value(value), json_string_length(value), span, err);
}

/* ---- model ---- */

static sym_status check_id(const json_t *value, const char *where, int32_t *id, sym_error *err)
{
    if (!json_is_integer(value))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: id is not an integer", where);
    json_int_t raw = json_integer_value(value);
    if (raw < 0 || raw >= SYM_TOKENIZER_ID_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT, "%s: id %lld is outside [0, %d)", where,
                             (long long)raw, (int)SYM_TOKENIZER_ID_MAX);
    *id = (int32_t)raw;
    return SYM_OK;
}

/* Finds the vocabulary size: one more than the largest id of the vocabulary and of the
 * added tokens, checked against the number of entries. */
static sym_status size_vocabulary(sym_tokenizer *tok, json_t *vocab, const json_t *added,
                                  sym_error *err)
{
    int32_t max_id = -1;
    const char *key;
    const json_t *value;
    char where[128];
    json_object_foreach(vocab, key, value) {
        int32_t id;
        snprintf(where, sizeof where, "model.vocab: piece '%.64s'", key);
        sym_status status = check_id(value, where, &id, err);
        if (status != SYM_OK)
            return status;
        max_id = id > max_id ? id : max_id;
    }
    size_t index;
    json_array_foreach(added, index, value) {
        int32_t id;
        snprintf(where, sizeof where, "added_tokens[%zu]", index);
        sym_status status = check_id(json_object_get(value, "id"), where, &id, err);
        if (status != SYM_OK)
            return status;
        max_id = id > max_id ? id : max_id;
    }
    size_t entries = json_object_size(vocab) + json_array_size(added);
    if (max_id < 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "model.vocab is empty");
    if ((size_t)max_id >= entries + TOK_ID_GAP_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "largest id %d is far above the %zu entries of the vocabulary; "
                             "expected ids numbered from 0 without large gaps",
                             (int)max_id, entries);
    tok->vocab_size = (size_t)max_id + 1;
    return SYM_OK;
}

static sym_status alloc_tables(sym_tokenizer *tok, size_t vocab_entries, size_t merge_count,
                               sym_error *err)
{
    size_t piece_slots = table_size_for(vocab_entries);
    size_t merge_slots = table_size_for(merge_count);
    tok->id_pieces = malloc(tok->vocab_size * sizeof *tok->id_pieces);
    tok->id_flags = calloc(tok->vocab_size, 1);
    tok->piece_slots = malloc(piece_slots * sizeof *tok->piece_slots);
    tok->merge_slots = malloc(merge_slots * sizeof *tok->merge_slots);
    if (tok->id_pieces == NULL || tok->id_flags == NULL || tok->piece_slots == NULL ||
        tok->merge_slots == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for a vocabulary of %zu ids",
                             tok->vocab_size);
    for (size_t i = 0; i < tok->vocab_size; i++)
        tok->id_pieces[i].length = UINT32_MAX;
    for (size_t i = 0; i < piece_slots; i++)
        tok->piece_slots[i].id = -1;
    for (size_t i = 0; i < merge_slots; i++)
        tok->merge_slots[i].rank = -1;
    tok->piece_mask = piece_slots - 1;
    tok->merge_mask = merge_slots - 1;
    return SYM_OK;
}

static sym_status parse_vocab(sym_tokenizer *tok, json_t *vocab, sym_error *err)
{
    const char *key;
    size_t key_length;
    const json_t *value;
    json_object_keylen_foreach(vocab, key, key_length, value) {
        int32_t id = (int32_t)json_integer_value(value);
        if (tok->id_flags[id] & TOK_ID_VOCAB) {
            tok_span other = tok->id_pieces[id];
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "model.vocab: id %d is given to both '%.*s' and '%.64s'",
                                 (int)id, (int)(other.length > 64 ? 64 : other.length),
                                 tok_span_data(tok, other), key);
        }
        tok_span span;
        sym_status status = tok_arena_add(tok, key, key_length, &span, err);
        if (status != SYM_OK)
            return status;
        tok->id_pieces[id] = span;
        tok->id_flags[id] |= TOK_ID_VOCAB;
        vocab_insert(tok, span, id);
    }
    return SYM_OK;
}

/* Splits merge number index into its two piece ids, from "a b" or ["a", "b"]. */
static sym_status merge_pair(const sym_tokenizer *tok, const json_t *merge, size_t index,
                             int32_t ids[2], sym_error *err)
{
    const char *parts[2];
    size_t lengths[2];
    if (json_is_string(merge)) {
        const char *text = json_string_value(merge);
        const char *space = memchr(text, ' ', json_string_length(merge));
        if (space == NULL)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "model.merges[%zu]: '%.64s' is not of the form 'a b'", index,
                                 text);
        parts[0] = text;
        lengths[0] = (size_t)(space - text);
        parts[1] = space + 1;
        lengths[1] = json_string_length(merge) - lengths[0] - 1;
    } else if (json_is_array(merge) && json_array_size(merge) == 2 &&
               json_is_string(json_array_get(merge, 0)) &&
               json_is_string(json_array_get(merge, 1))) {
        for (int k = 0; k < 2; k++) {
            parts[k] = json_string_value(json_array_get(merge, (size_t)k));
            lengths[k] = json_string_length(json_array_get(merge, (size_t)k));
        }
    } else {
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "model.merges[%zu]: expected a string 'a b' or a pair [a, b]",
                             index);
    }
    for (int k = 0; k < 2; k++) {
        ids[k] = tok_vocab_lookup(tok, parts[k], lengths[k]);
        if (ids[k] < 0)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "model.merges[%zu]: piece '%.*s' is not in the vocabulary",
                                 index, (int)(lengths[k] > 64 ? 64 : lengths[k]), parts[k]);
    }
    return SYM_OK;
}

static sym_status parse_merges(sym_tokenizer *tok, const json_t *merges, sym_error *err)
{
    char joined[2 * 4096];
    size_t index;
    const json_t *merge;
    json_array_foreach(merges, index, merge) {
        int32_t ids[2] = {-1, -1};
        sym_status status = merge_pair(tok, merge, index, ids, err);
        if (status != SYM_OK)
            return status;
        tok_span left = tok->id_pieces[ids[0]];
        tok_span right = tok->id_pieces[ids[1]];
        size_t length = (size_t)left.length + right.length;
        int32_t merged = -1;
        if (length <= sizeof joined) {
            memcpy(joined, tok_span_data(tok, left), left.length);
            memcpy(joined + left.length, tok_span_data(tok, right), right.length);
            merged = tok_vocab_lookup(tok, joined, length);
        }
        if (merged < 0)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "model.merges[%zu]: the merged piece '%.*s%.*s' is not in "
                                 "the vocabulary", index,
                                 (int)(left.length > 64 ? 64 : left.length),
                                 tok_span_data(tok, left),
                                 (int)(right.length > 64 ? 64 : right.length),
                                 tok_span_data(tok, right));
        merge_insert(tok, ids[0], ids[1], (int32_t)index, merged);
    }
    return SYM_OK;
}

static bool is_null_or_empty_string(const json_t *value)
{
    return value == NULL || json_is_null(value) ||
           (json_is_string(value) && json_string_length(value) == 0);
}

/* Checks the model options that change how BPE runs. */
static sym_status parse_model_options(sym_tokenizer *tok, const json_t *model, sym_error *err)
{
    const json_t *dropout = json_object_get(model, "dropout");
    if (dropout != NULL && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "model.dropout %g is not supported (BPE dropout is random; "
                             "expected null)", json_number_value(dropout));
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        if (!is_null_or_empty_string(json_object_get(model, affixes[k])))
            return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                                 "model.%s is not supported (expected null)", affixes[k]);
    }
    tok->byte_fallback = tok_json_bool(model, "byte_fallback", false);
    tok->fuse_unk = tok_json_bool(model, "fuse_unk", false);
    tok->ignore_merges = tok_json_bool(model, "ignore_merges", false);

    tok->unk_id = -1;
    const json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        tok->unk_id = tok_vocab_lookup(tok, json_string_value(unk), json_string_length(unk));
        if (tok->unk_id < 0)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "model.unk_token '%.64s' is not in the vocabulary",
                                 json_string_value(unk));
    }
    for (int byte = 0; byte < 256; byte++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", byte);
        tok->byte_ids[byte] = tok_vocab_lookup(tok, name, 6);
    }
    return SYM_OK;
}

static sym_status parse_model(sym_tokenizer *tok, const json_t *root, sym_error *err)
{
    const json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return sym_error_set(err, SYM_ERR_FORMAT, "missing \"model\" object");
    const json_t *type = json_object_get(model, "type");
    json_t *vocab = json_object_get(model, "vocab");
    const json_t *merges = json_object_get(model, "merges");
    if (type != NULL && !json_is_string(type))
        return sym_error_set(err, SYM_ERR_FORMAT, "model.type is not a string");
    if (type == NULL && merges == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "model has no \"type\" and no merges");
    if (type != NULL && strcmp(json_string_value(type), "BPE") != 0)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "model type '%.64s' is not supported (only BPE is); encode the "
                             "text with the model's own tokenizer and pass the ids as a file",
                             json_string_value(type));
    if (!json_is_object(vocab))
        return sym_error_set(err, SYM_ERR_FORMAT, "model.vocab is missing or not an object");
    if (!json_is_array(merges))
        return sym_error_set(err, SYM_ERR_FORMAT, "model.merges is missing or not an array");

    const json_t *added = json_object_get(root, "added_tokens");
    if (added != NULL && !json_is_null(added) && !json_is_array(added))
        return sym_error_set(err, SYM_ERR_FORMAT, "added_tokens is not an array");
    sym_status status = size_vocabulary(tok, vocab, added, err);
    if (status == SYM_OK)
        status = alloc_tables(tok, json_object_size(vocab), json_array_size(merges), err);
    if (status == SYM_OK)
        status = parse_vocab(tok, vocab, err);
    if (status == SYM_OK)
        status = build_bigrams(tok, err);
    if (status == SYM_OK)
        status = parse_merges(tok, merges, err);
    if (status == SYM_OK)
        status = parse_model_options(tok, model, err);
    return status;
}

/* ---- added tokens ---- */

static sym_status parse_added_tokens(sym_tokenizer *tok, const json_t *root, sym_error *err)
{
    const json_t *added = json_object_get(root, "added_tokens");
    size_t count = json_array_size(added);
    if (count == 0)
        return SYM_OK;
    tok->added = calloc(count, sizeof *tok->added);
    if (tok->added == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for %zu added tokens", count);
    size_t index;
    const json_t *entry;
    json_array_foreach(added, index, entry) {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", index);
        if (!json_is_object(entry))
            return sym_error_set(err, SYM_ERR_FORMAT, "%s is not an object", where);
        tok_added *token = &tok->added[tok->added_count];
        token->id = (int32_t)json_integer_value(json_object_get(entry, "id"));
        sym_status status = tok_json_string(tok, entry, "content", where, false,
                                            &token->content, NULL, err);
        if (status != SYM_OK)
            return status;
        if (token->content.length == 0)
            return sym_error_set(err, SYM_ERR_FORMAT, "%s: empty \"content\"", where);
        token->special = tok_json_bool(entry, "special", false);
        token->normalized = tok_json_bool(entry, "normalized", !token->special);
        token->lstrip = tok_json_bool(entry, "lstrip", false);
        token->rstrip = tok_json_bool(entry, "rstrip", false);
        token->single_word = tok_json_bool(entry, "single_word", false);
        tok->added_count++;

        tok->id_pieces[token->id] = token->content;
        tok->id_flags[token->id] |= TOK_ID_ADDED;
        if (token->special)
            tok->id_flags[token->id] |= TOK_ID_SPECIAL;
        tok->added_first_byte[(unsigned char)tok_span_data(tok, token->content)[0]] = true;
    }
    return SYM_OK;
}

/* ---- BOS and EOS ---- */

/* Reads BOS and EOS from a TemplateProcessing post-processor: special tokens before the
 * sequence $A are added at the start, those after it at the end. */
static void parse_template(sym_tokenizer *tok, const json_t *processor)
{
    const json_t *type = json_object_get(processor, "type");
    if (json_is_string(type) && strcmp(json_string_value(type), "Sequence") == 0) {
        size_t index;
        const json_t *inner;
        json_array_foreach(json_object_get(processor, "processors"), index, inner)
            parse_template(tok, inner);
        return;
    }
    if (!json_is_string(type) || strcmp(json_string_value(type), "TemplateProcessing") != 0)
        return;
    bool after_sequence = false;
    size_t index;
    const json_t *piece;
    json_array_foreach(json_object_get(processor, "single"), index, piece) {
        if (json_object_get(piece, "Sequence") != NULL) {
            after_sequence = true;
            continue;
        }
        const json_t *name = json_object_get(json_object_get(piece, "SpecialToken"), "id");
        if (!json_is_string(name))
            continue;
        int32_t id = sym_tokenizer_piece_id(tok, json_string_value(name),
                                            json_string_length(name));
        if (id < 0)
            continue;
        if (after_sequence) {
            tok->eos_id = id;
            tok->add_eos = true;
        } else {
            tok->bos_id = id;
            tok->add_bos = true;
        }
    }
}

/* Resolves bos_token or eos_token of tokenizer_config.json: a string, an object with
 * "content", or null. Leaves *id as it is when the key is absent. */
static sym_status config_token(const sym_tokenizer *tok, const json_t *config, const char *key,
                               const char *path, int32_t *id, sym_error *err)
{
    const json_t *value = json_object_get(config, key);
    if (value == NULL)
        return SYM_OK;
    if (json_is_object(value))
        value = json_object_get(value, "content");
    if (json_is_null(value)) {
        *id = -1;
        return SYM_OK;
    }
    if (!json_is_string(value))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: \"%s\" is not a string", path, key);
    *id = sym_tokenizer_piece_id(tok, json_string_value(value), json_string_length(value));
    if (*id < 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: %s '%.64s' is not in the vocabulary",
                             path, key, json_string_value(value));
    return SYM_OK;
}

static sym_status parse_config(sym_tokenizer *tok, const char *path, sym_error *err)
{
    json_t *config;
    /* Integers are read as reals because some files store model_max_length as 1e30 written
     * out in full, which does not fit jansson's integers; no integer is read here. */
    sym_status status = tok_json_load(path, SYM_TOKENIZER_FILE_MAX, JSON_DECODE_INT_AS_REAL,
                                      &config, err);
    if (status == SYM_ERR_NOT_FOUND) {
        sym_error_clear(err);
        return SYM_OK;
    }
    if (status != SYM_OK)
        return status;
    if (!json_is_object(config)) {
        json_decref(config);
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: expected a JSON object", path);
    }
    status = config_token(tok, config, "bos_token", path, &tok->bos_id, err);
    if (status == SYM_OK)
        status = config_token(tok, config, "eos_token", path, &tok->eos_id, err);
    tok->add_bos = tok_json_bool(config, "add_bos_token", tok->add_bos);
    tok->add_eos = tok_json_bool(config, "add_eos_token", tok->add_eos);
    json_decref(config);
    return status;
}

/* ---- entry points ---- */

/* Finds tokenizer.json and the path of tokenizer_config.json next to it. */
static sym_status locate_files(const char *path, char *json_path, char *config_path,
                               sym_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    int written;
    if (S_ISDIR(st.st_mode)) {
        written = snprintf(json_path, PATH_MAX, "%s/tokenizer.json", path);
        snprintf(config_path, PATH_MAX, "%s/tokenizer_config.json", path);
    } else {
        written = snprintf(json_path, PATH_MAX, "%s", path);
        const char *slash = strrchr(path, '/');
        int dir_length = slash == NULL ? 1 : (int)(slash - path);
        snprintf(config_path, PATH_MAX, "%.*s/tokenizer_config.json", dir_length,
                 slash == NULL ? "." : path);
    }
    if (written < 0 || written >= PATH_MAX)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: path too long", path);
    return SYM_OK;
}

static sym_status parse_root(sym_tokenizer *tok, const json_t *root, sym_error *err)
{
    if (!json_is_object(root))
        return sym_error_set(err, SYM_ERR_FORMAT, "expected a JSON object");
    sym_status status = parse_model(tok, root, err);
    if (status == SYM_OK)
        status = parse_added_tokens(tok, root, err);
    if (status == SYM_OK)
        status = tok_parse_normalizer(tok, json_object_get(root, "normalizer"), err);
    if (status == SYM_OK)
        status = tok_parse_pre_tokenizer(tok, json_object_get(root, "pre_tokenizer"), err);
    if (status == SYM_OK)
        status = tok_parse_decoder(tok, json_object_get(root, "decoder"), err);
    if (status == SYM_OK)
        parse_template(tok, json_object_get(root, "post_processor"));
    return status;
}

sym_status sym_tokenizer_load(const char *path, sym_tokenizer **out, sym_error *err)
{
    *out = NULL;
    char json_path[PATH_MAX];
    char config_path[PATH_MAX];
    sym_status status = locate_files(path, json_path, config_path, err);
    if (status != SYM_OK)
        return status;
    json_t *root;
    status = tok_json_load(json_path, SYM_TOKENIZER_FILE_MAX, 0, &root, err);
    if (status != SYM_OK)
        return status;

    sym_tokenizer *tok = calloc(1, sizeof *tok);
    if (tok == NULL) {
        json_decref(root);
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory");
    }
    tok->bos_id = -1;
    tok->eos_id = -1;
    status = parse_root(tok, root, err);
    json_decref(root);
    if (status != SYM_OK) {
        sym_error_prefix(err, "%s", json_path);
        sym_tokenizer_free(tok);
        return status;
    }
    status = parse_config(tok, config_path, err);
    if (status != SYM_OK) {
        sym_tokenizer_free(tok);
        return status;
    }
    *out = tok;
    return SYM_OK;
}

void sym_tokenizer_free(sym_tokenizer *tok)
{
    if (tok == NULL)
        return;
    free(tok->arena);
    free(tok->id_pieces);
    free(tok->id_flags);
    free(tok->piece_slots);
    free(tok->merge_slots);
    free(tok->bigram_slots);
    free(tok->norm_steps);
    free(tok->decoder_steps);
    free(tok->added);
    free(tok);
}

size_t sym_tokenizer_vocab_size(const sym_tokenizer *tok)
{
    return tok->vocab_size;
}

int32_t sym_tokenizer_bos(const sym_tokenizer *tok)
{
    return tok->bos_id;
}

int32_t sym_tokenizer_eos(const sym_tokenizer *tok)
{
    return tok->eos_id;
}

unsigned sym_tokenizer_default_flags(const sym_tokenizer *tok)
{
    unsigned flags = 0;
    if (tok->add_bos && tok->bos_id >= 0)
        flags |= SYM_TOKENIZE_ADD_BOS;
    if (tok->add_eos && tok->eos_id >= 0)
        flags |= SYM_TOKENIZE_ADD_EOS;
    return flags;
}

const char *sym_tokenizer_piece(const sym_tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= tok->vocab_size || tok->id_pieces[id].length == UINT32_MAX)
        return NULL;
    *len = tok->id_pieces[id].length;
    return tok_span_data(tok, tok->id_pieces[id]);
}

int32_t sym_tokenizer_piece_id(const sym_tokenizer *tok, const char *piece, size_t len)
{
    for (size_t i = 0; i < tok->added_count; i++) {
        tok_span content = tok->added[i].content;
        if (content.length == len && memcmp(tok_span_data(tok, content), piece, len) == 0)
            return tok->added[i].id;
    }
    return tok_vocab_lookup(tok, piece, len);
}
