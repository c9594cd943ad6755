/* JSON helpers shared by the tokenizer loaders (tokenizer.c, tokenizer_parse.c). */
#ifndef SYMPHONY_TOKENIZER_PARSE_H
#define SYMPHONY_TOKENIZER_PARSE_H

#include <jansson.h>

#include "tokenizer_internal.h"

/* Copies len bytes into the tokenizer's string arena and returns their span. */
sym_status tok_arena_add(sym_tokenizer *tok, const char *bytes, size_t len, tok_span *span,
                         sym_error *err);

/* Parses a JSON file of at most max_bytes, rejecting duplicate keys; extra_flags are more
 * jansson decoding flags. A missing file fails with SYM_ERR_NOT_FOUND. */
sym_status tok_json_load(const char *path, size_t max_bytes, size_t extra_flags, json_t **root,
                         sym_error *err);

/* Returns a boolean member, or fallback when it is absent or not a boolean. */
bool tok_json_bool(const json_t *object, const char *key, bool fallback);

/* Copies a string member into the arena; where names the object in messages. An absent or
 * null member fails unless optional, and *present (when not NULL) tells which it was. */
sym_status tok_json_string(sym_tokenizer *tok, const json_t *object, const char *key,
                           const char *where, bool optional, tok_span *span, bool *present,
                           sym_error *err);

/* Parse the "normalizer", "pre_tokenizer" and "decoder" members (each may be NULL). */
sym_status tok_parse_normalizer(sym_tokenizer *tok, const json_t *normalizer, sym_error *err);
sym_status tok_parse_pre_tokenizer(sym_tokenizer *tok, const json_t *pre_tokenizer,
                                   sym_error *err);
sym_status tok_parse_decoder(sym_tokenizer *tok, const json_t *decoder, sym_error *err);

#endif
