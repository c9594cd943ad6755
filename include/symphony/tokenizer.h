/* Hugging Face tokenizer.json (BPE model) encoding and decoding, and token id files.
 *
 * Supported: model type "BPE" with merges applied by rank (stored as "a b" strings or
 * ["a", "b"] pairs), byte fallback to <0xXX> pieces, unknown-token fusing, ignore_merges;
 * normalizers Prepend and Replace (literal patterns, alone or in a Sequence); no
 * pre-tokenizer or a Metaspace pre-tokenizer (prepend_scheme always, first or never, with
 * or without split); added tokens from "added_tokens" matched leftmost-longest before the
 * model; decoders Replace, ByteFallback, Fuse, Strip and Metaspace. This covers the Llama 2,
 * Mistral and newer SentencePiece-derived Llama-family files. Other model types (WordPiece,
 * Unigram, WordLevel) and other components (ByteLevel, NFKC, regex patterns) are rejected
 * with SYM_ERR_UNSUPPORTED and a message naming the type.
 *
 * Text is UTF-8. A byte that is not part of a valid UTF-8 sequence is one character of its
 * own, so byte fallback encodes it as its <0xXX> piece; decoding turns such bytes into
 * U+FFFD, as Hugging Face tokenizers does, so only valid UTF-8 round-trips.
 */
#ifndef SYMPHONY_TOKENIZER_H
#define SYMPHONY_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest tokenizer.json accepted, in bytes; larger files fail with SYM_ERR_LIMIT. */
#define SYM_TOKENIZER_FILE_MAX ((size_t)256 << 20)

/* Largest token id accepted in a tokenizer file (exclusive). */
#define SYM_TOKENIZER_ID_MAX ((int32_t)1 << 24)

/* Flags of sym_tokenizer_encode. */
enum {
    SYM_TOKENIZE_ADD_BOS = 1u << 0, /* put the BOS id first */
    SYM_TOKENIZE_ADD_EOS = 1u << 1, /* put the EOS id last */
};

typedef struct sym_tokenizer sym_tokenizer;

/* Loads a tokenizer from a tokenizer.json file or from a directory that contains one.
 * tokenizer_config.json next to it, when present, sets the BOS and EOS tokens and whether
 * they are added by default. */
sym_status sym_tokenizer_load(const char *path, sym_tokenizer **out, sym_error *err);

void sym_tokenizer_free(sym_tokenizer *tok);

/* Encodes len bytes of text into a malloc'ed array of ids (*ids, free it) of *count ids.
 * flags is a combination of SYM_TOKENIZE_*; it fails with SYM_ERR_NOT_FOUND when BOS or EOS
 * is requested but the tokenizer has none. */
sym_status sym_tokenizer_encode(const sym_tokenizer *tok, const char *text, size_t len,
                                unsigned flags, int32_t **ids, size_t *count, sym_error *err);

/* Decodes ids into malloc'ed, NUL-terminated text (*text, free it) of *len bytes.
 * skip_special leaves out added tokens marked special (BOS, EOS, ...). An id without a
 * piece fails with SYM_ERR_INVALID naming its position. */
sym_status sym_tokenizer_decode(const sym_tokenizer *tok, const int32_t *ids, size_t count,
                                bool skip_special, char **text, size_t *len, sym_error *err);

/* Returns one more than the largest id of the vocabulary or of the added tokens. */
size_t sym_tokenizer_vocab_size(const sym_tokenizer *tok);

/* Returns the BOS or EOS id, or -1 when the tokenizer defines none. */
int32_t sym_tokenizer_bos(const sym_tokenizer *tok);
int32_t sym_tokenizer_eos(const sym_tokenizer *tok);

/* Returns the SYM_TOKENIZE_* flags that the tokenizer's files ask for by default
 * (add_bos_token and add_eos_token of tokenizer_config.json, or the post-processor). */
unsigned sym_tokenizer_default_flags(const sym_tokenizer *tok);

/* Returns the piece of an id (not NUL-terminated, *len bytes), or NULL when id has none.
 * Added tokens return their content. */
const char *sym_tokenizer_piece(const sym_tokenizer *tok, int32_t id, size_t *len);

/* Returns the id of a piece, or -1 when it is neither in the vocabulary nor added. */
int32_t sym_tokenizer_piece_id(const sym_tokenizer *tok, const char *piece, size_t len);

/* Parses whitespace-separated decimal token ids (the format of *.ids files) from len bytes
 * of text into a malloc'ed array. name labels messages. Every id must be below vocab_size;
 * a bad or out-of-range id fails with SYM_ERR_FORMAT or SYM_ERR_INVALID naming its line and
 * its index in the file. */
sym_status sym_ids_parse(const char *text, size_t len, size_t vocab_size, const char *name,
                         int32_t **ids, size_t *count, sym_error *err);

/* Largest text file read for encoding (calibration or evaluation text), in bytes. */
#define SYM_TEXT_FILE_MAX ((size_t)1 << 30)

/* Reads a whole text file ("-" is standard input) into a malloc'ed, NUL-terminated buffer
 * of *len bytes. Files of SYM_TEXT_FILE_MAX bytes or more fail with SYM_ERR_LIMIT. */
sym_status sym_text_load(const char *path, char **data, size_t *len, sym_error *err);

/* Reads a file of token ids ("-" is standard input) as sym_ids_parse does. */
sym_status sym_ids_load(const char *path, size_t vocab_size, int32_t **ids, size_t *count,
                        sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
