/* Shared state of the tokenizer modules: loading (tokenizer.c), encoding
 * (tokenizer_encode.c) and decoding (tokenizer_decode.c). Not installed. */
#ifndef SYMPHONY_TOKENIZER_INTERNAL_H
#define SYMPHONY_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/tokenizer.h"

/* A byte range in the tokenizer's string arena. */
typedef struct tok_span {
    uint32_t offset;
    uint32_t length;
} tok_span;

/* One slot of the piece hash table (model vocabulary only); id -1 marks an empty slot. */
typedef struct tok_piece_slot {
    tok_span piece;
    int32_t id;
} tok_piece_slot;

/* One slot of the merge table: the pair (left << 32 | right), its rank and result. */
typedef struct tok_merge_slot {
    uint64_t pair;
    int32_t rank; /* -1 marks an empty slot */
    int32_t merged_id;
} tok_merge_slot;

typedef enum tok_norm_kind { TOK_NORM_PREPEND, TOK_NORM_REPLACE } tok_norm_kind;

/* One normalizer step: Prepend(text) or Replace(pattern -> text). */
typedef struct tok_norm_step {
    tok_norm_kind kind;
    tok_span pattern;
    tok_span text;
} tok_norm_step;

typedef enum tok_prepend {
    TOK_PREPEND_ALWAYS,
    TOK_PREPEND_FIRST,
    TOK_PREPEND_NEVER
} tok_prepend;

typedef enum tok_decoder_kind {
    TOK_DEC_REPLACE,
    TOK_DEC_BYTE_FALLBACK,
    TOK_DEC_FUSE,
    TOK_DEC_STRIP,
    TOK_DEC_METASPACE,
} tok_decoder_kind;

/* One decoder step. Replace uses pattern and text; Strip uses text (one character) and
 * strip_start/strip_stop; Metaspace uses pattern (the replacement) and prepend. */
typedef struct tok_decoder_step {
    tok_decoder_kind kind;
    tok_span pattern;
    tok_span text;
    uint32_t strip_start;
    uint32_t strip_stop;
    tok_prepend prepend;
} tok_decoder_step;

/* An entry of "added_tokens". */
typedef struct tok_added {
    int32_t id;
    tok_span content;
    bool special;
    bool normalized; /* matched in normalized text instead of the raw input */
    bool lstrip;     /* the match also takes the whitespace before it */
    bool rstrip;     /* the match also takes the whitespace after it */
    bool single_word;
} tok_added;

struct sym_tokenizer {
    char *arena; /* every piece, pattern and token content */
    size_t arena_length;
    size_t arena_capacity;

    tok_span *id_pieces; /* by id; length UINT32_MAX where an id has no piece */
    uint8_t *id_flags;   /* by id: TOK_ID_* */
    size_t vocab_size;

    tok_piece_slot *piece_slots;
    size_t piece_mask;
    tok_merge_slot *merge_slots;
    size_t merge_mask;
    uint64_t *bigram_slots; /* TOK_BIGRAM_USED | left << 32 | right; 0 marks an empty slot */
    size_t bigram_mask;

    int32_t byte_ids[256]; /* ids of <0x00>..<0xFF>, -1 where absent */
    bool byte_fallback;
    bool fuse_unk;
    bool ignore_merges;
    int32_t unk_id;

    tok_norm_step *norm_steps;
    size_t norm_count;

    bool metaspace; /* a Metaspace pre-tokenizer is present */
    tok_span metaspace_replacement;
    tok_prepend metaspace_prepend;
    bool metaspace_split;

    tok_decoder_step *decoder_steps;
    size_t decoder_count;
    bool has_decoder;

    tok_added *added;
    size_t added_count;
    bool added_first_byte[256]; /* some added token starts with this byte */

    int32_t bos_id;
    int32_t eos_id;
    bool add_bos;
    bool add_eos;
};

enum {
    TOK_ID_VOCAB = 1u << 0,   /* a piece of the model vocabulary */
    TOK_ID_ADDED = 1u << 1,   /* an added token */
    TOK_ID_SPECIAL = 1u << 2, /* an added token marked special */
};

/* Returns the address of a span's bytes. */
static inline const char *tok_span_data(const sym_tokenizer *tok, tok_span span)
{
    return tok->arena + span.offset;
}

#define TOK_BIGRAM_USED ((uint64_t)1 << 63)

/* Tells whether the single-character pieces left and right are adjacent somewhere inside a
 * vocabulary piece. When they are not, no merge can join them, so BPE may treat the text
 * on each side of them separately with the same result. */
bool tok_bigram_in_vocab(const sym_tokenizer *tok, int32_t left, int32_t right);

/* Looks a byte string up in the model vocabulary; returns its id or -1. */
int32_t tok_vocab_lookup(const sym_tokenizer *tok, const char *piece, size_t len);

/* Returns the slot of a merge pair, or NULL when the pair does not merge. */
const tok_merge_slot *tok_merge_lookup(const sym_tokenizer *tok, int32_t left, int32_t right);

/* Returns the byte length of the UTF-8 character at text[0] (1 for an invalid byte). */
size_t tok_utf8_length(const char *text, size_t available);

#endif
