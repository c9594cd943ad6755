/* Encoding: added-token split, normalizer, Metaspace pre-tokenizer and BPE merges.
 *
 * The steps and their edge cases follow Hugging Face tokenizers. First, added tokens that
 * are not "normalized" are cut out of the raw text (leftmost, then longest). Each remaining
 * non-empty segment is normalized on its own, so Prepend gives every segment its own dummy
 * prefix. Then "normalized" added tokens are cut out of the normalized text, the
 * pre-tokenizer splits the rest into words, and BPE encodes each word.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* Largest input of one encode call, in bytes; symbol positions are 32-bit and Replace may
 * triple the length. */
#define TOK_TEXT_MAX ((size_t)1 << 30)

typedef struct id_vec {
    int32_t *data;
    size_t count;
    size_t capacity;
} id_vec;

typedef struct byte_buf {
    char *data;
    size_t length;
    size_t capacity;
} byte_buf;

/* One symbol of the word being merged; length 0 marks a symbol merged into its left. */
typedef struct bpe_symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t length;
} bpe_symbol;

/* A candidate merge of the symbol at pos with its right neighbour. */
typedef struct bpe_candidate {
    uint32_t rank;
    uint32_t pos;
    int32_t merged_id;
} bpe_candidate;

/* Buffers reused across the words of one encode call. */
typedef struct encode_work {
    const sym_tokenizer *tok;
    id_vec *out;
    byte_buf normalized;
    byte_buf scratch;
    byte_buf metaspace;
    bpe_symbol *symbols;
    size_t symbol_capacity;
    bpe_candidate *heap;
    size_t heap_count;
    size_t heap_capacity;
    uint32_t *cuts; /* symbol indices where no merge can reach across */
    size_t cut_count;
    size_t cut_capacity;
} encode_work;

static bool ensure_capacity(void **data, size_t *capacity, size_t need, size_t size)
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

static bool push_id(id_vec *vec, int32_t id)
{
    if (!ensure_capacity((void **)&vec->data, &vec->capacity, vec->count + 1, sizeof(int32_t)))
        return false;
    vec->data[vec->count++] = id;
    return true;
}

static bool buf_append(byte_buf *buf, const char *bytes, size_t len)
{
    if (!ensure_capacity((void **)&buf->data, &buf->capacity, buf->length + len, 1))
        return false;
    if (len > 0)
        memcpy(buf->data + buf->length, bytes, len);
    buf->length += len;
    return true;
}

/* ---- priority queue of merge candidates: lowest rank first, then leftmost ---- */

static bool candidate_less(const bpe_candidate *a, const bpe_candidate *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_sift_down(bpe_candidate *heap, size_t count, size_t i)
{
    for (;;) {
        size_t smallest = i;
        size_t left = 2 * i + 1;
        size_t right = left + 1;
        if (left < count && candidate_less(&heap[left], &heap[smallest]))
            smallest = left;
        if (right < count && candidate_less(&heap[right], &heap[smallest]))
            smallest = right;
        if (smallest == i)
            return;
        bpe_candidate t = heap[i];
        heap[i] = heap[smallest];
        heap[smallest] = t;
        i = smallest;
    }
}

static bool heap_push(encode_work *work, bpe_candidate candidate)
{
    if (!ensure_capacity((void **)&work->heap, &work->heap_capacity, work->heap_count + 1,
                         sizeof *work->heap))
        return false;
    size_t i = work->heap_count++;
    work->heap[i] = candidate;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!candidate_less(&work->heap[i], &work->heap[parent]))
            break;
        bpe_candidate t = work->heap[i];
        work->heap[i] = work->heap[parent];
        work->heap[parent] = t;
        i = parent;
    }
    return true;
}

static bpe_candidate heap_pop(encode_work *work)
{
    bpe_candidate top = work->heap[0];
    work->heap[0] = work->heap[--work->heap_count];
    heap_sift_down(work->heap, work->heap_count, 0);
    return top;
}

/* ---- BPE on one word ---- */

static bool add_symbol(encode_work *work, size_t *count, int32_t id, size_t length)
{
    if (!ensure_capacity((void **)&work->symbols, &work->symbol_capacity, *count + 1,
                         sizeof *work->symbols))
        return false;
    bpe_symbol *symbol = &work->symbols[*count];
    symbol->id = id;
    symbol->prev = (int32_t)*count - 1;
    symbol->next = (int32_t)*count + 1;
    symbol->length = (uint32_t)length;
    (*count)++;
    return true;
}

/* Splits a word into one symbol per character. A character that is not a piece becomes
 * its <0xXX> byte pieces (byte fallback) or the unknown token; as in Hugging Face
 * tokenizers, an unknown run is emitted when the next known character arrives or at the
 * end, and fuse_unk makes a run of unknown characters one unknown token. */
static bool split_characters(encode_work *work, const char *word, size_t len, size_t *count)
{
    const sym_tokenizer *tok = work->tok;
    size_t unk_length = 0;
    int32_t previous_char = -1;
    *count = 0;
    work->cut_count = 0;
    for (size_t i = 0; i < len;) {
        size_t char_length = tok_utf8_length(word + i, len - i);
        int32_t id = tok_vocab_lookup(tok, word + i, char_length);
        if (id >= 0) {
            if (unk_length > 0 && !add_symbol(work, count, tok->unk_id, unk_length))
                return false;
            unk_length = 0;
            if (previous_char >= 0 && !tok_bigram_in_vocab(tok, previous_char, id)) {
                if (!ensure_capacity((void **)&work->cuts, &work->cut_capacity,
                                     work->cut_count + 1, sizeof *work->cuts))
                    return false;
                work->cuts[work->cut_count++] = (uint32_t)*count;
            }
            previous_char = id;
            if (!add_symbol(work, count, id, char_length))
                return false;
            i += char_length;
            continue;
        }
        previous_char = -1;
        bool all_bytes = tok->byte_fallback;
        for (size_t k = 0; all_bytes && k < char_length; k++)
            all_bytes = tok->byte_ids[(unsigned char)word[i + k]] >= 0;
        if (all_bytes) {
            for (size_t k = 0; k < char_length; k++) {
                if (!add_symbol(work, count, tok->byte_ids[(unsigned char)word[i + k]], 1))
                    return false;
            }
        } else if (tok->unk_id >= 0) {
            if (unk_length > 0 && !tok->fuse_unk) {
                if (!add_symbol(work, count, tok->unk_id, unk_length))
                    return false;
                unk_length = 0;
            }
            unk_length += char_length;
        }
        i += char_length;
    }
    if (unk_length > 0 && !add_symbol(work, count, tok->unk_id, unk_length))
        return false;
    return true;
}

static bool queue_pair(encode_work *work, int32_t pos)
{
    const bpe_symbol *left = &work->symbols[pos];
    const tok_merge_slot *merge = tok_merge_lookup(work->tok, left->id,
                                                   work->symbols[left->next].id);
    if (merge == NULL)
        return true;
    bpe_candidate candidate = {(uint32_t)merge->rank, (uint32_t)pos, merge->merged_id};
    return heap_push(work, candidate);
}

/* Applies merges to the symbols [lo, hi) until none is left: always the lowest rank,
 * leftmost on a tie. A queued candidate is stale when its symbols changed. It is dropped
 * unless the pair at its position still merges into the same piece, which is the test
 * that Hugging Face tokenizers applies. */
static bool merge_symbols(encode_work *work, int32_t lo, int32_t hi)
{
    bpe_symbol *symbols = work->symbols;
    work->heap_count = 0;
    for (int32_t pos = lo; pos + 1 < hi; pos++) {
        if (!queue_pair(work, pos))
            return false;
    }
    while (work->heap_count > 0) {
        bpe_candidate top = heap_pop(work);
        bpe_symbol *left = &symbols[top.pos];
        if (left->length == 0 || left->next >= hi)
            continue;
        bpe_symbol *right = &symbols[left->next];
        const tok_merge_slot *merge = tok_merge_lookup(work->tok, left->id, right->id);
        if (merge == NULL || merge->merged_id != top.merged_id)
            continue;

        left->id = top.merged_id;
        left->length += right->length;
        left->next = right->next;
        right->length = 0;
        if (left->next < hi)
            symbols[left->next].prev = (int32_t)top.pos;

        if (left->prev >= lo && !queue_pair(work, left->prev))
            return false;
        if (left->next < hi && !queue_pair(work, (int32_t)top.pos))
            return false;
    }
    for (int32_t pos = lo; pos < hi; pos = symbols[pos].next) {
        if (!push_id(work->out, symbols[pos].id))
            return false;
    }
    return true;
}

static bool encode_word(encode_work *work, const char *word, size_t len)
{
    if (len == 0)
        return true;
    if (work->tok->ignore_merges) {
        int32_t id = tok_vocab_lookup(work->tok, word, len);
        if (id >= 0)
            return push_id(work->out, id);
    }
    size_t count;
    if (!split_characters(work, word, len, &count))
        return false;
    if (count > INT32_MAX)
        return false;
    /* Merge each run between cuts on its own: the heaps stay small, the result is equal. */
    int32_t lo = 0;
    for (size_t c = 0; c <= work->cut_count; c++) {
        int32_t hi = c < work->cut_count ? (int32_t)work->cuts[c] : (int32_t)count;
        if (!merge_symbols(work, lo, hi))
            return false;
        lo = hi;
    }
    return true;
}

/* ---- normalizer and pre-tokenizer ---- */

static bool replace_all(byte_buf *out, const char *text, size_t len, const char *pattern,
                        size_t pattern_length, const char *with, size_t with_length)
{
    out->length = 0;
    size_t start = 0;
    while (start < len) {
        const char *hit = memmem(text + start, len - start, pattern, pattern_length);
        size_t end = hit == NULL ? len : (size_t)(hit - text);
        if (!buf_append(out, text + start, end - start))
            return false;
        if (hit == NULL)
            break;
        if (!buf_append(out, with, with_length))
            return false;
        start = end + pattern_length;
    }
    return true;
}

/* Runs the normalizer steps on text; *result points into work->normalized or at text. */
static bool normalize(encode_work *work, const char *text, size_t len, const char **result,
                      size_t *result_length)
{
    const sym_tokenizer *tok = work->tok;
    const char *current = text;
    size_t current_length = len;
    for (size_t s = 0; s < tok->norm_count; s++) {
        const tok_norm_step *step = &tok->norm_steps[s];
        byte_buf *target = current == work->normalized.data ? &work->scratch
                                                            : &work->normalized;
        target->length = 0;
        if (step->kind == TOK_NORM_PREPEND) {
            if (current_length == 0)
                continue;
            if (!buf_append(target, tok_span_data(tok, step->text), step->text.length) ||
                !buf_append(target, current, current_length))
                return false;
        } else if (!replace_all(target, current, current_length,
                                tok_span_data(tok, step->pattern), step->pattern.length,
                                tok_span_data(tok, step->text), step->text.length)) {
            return false;
        }
        if (target == &work->scratch) {
            byte_buf swap = work->normalized;
            work->normalized = work->scratch;
            work->scratch = swap;
        }
        current = work->normalized.data;
        current_length = work->normalized.length;
    }
    *result = current;
    *result_length = current_length;
    return true;
}

/* Applies the Metaspace pre-tokenizer and encodes each word. Spaces become the
 * replacement, which is also prepended under the prepend scheme. first is true for text
 * that starts the input. */
static bool encode_pre_tokenized(encode_work *work, const char *text, size_t len, bool first)
{
    const sym_tokenizer *tok = work->tok;
    if (!tok->metaspace)
        return encode_word(work, text, len);

    const char *rep = tok_span_data(tok, tok->metaspace_replacement);
    size_t rep_length = tok->metaspace_replacement.length;
    byte_buf *buf = &work->metaspace;
    buf->length = 0;
    bool prepend = tok->metaspace_prepend == TOK_PREPEND_ALWAYS ||
                   (tok->metaspace_prepend == TOK_PREPEND_FIRST && first);
    bool starts_with_rep = (len >= 1 && text[0] == ' ') ||
                           (len >= rep_length && memcmp(text, rep, rep_length) == 0);
    if (prepend && !starts_with_rep && !buf_append(buf, rep, rep_length))
        return false;
    byte_buf replaced = {0};
    if (!replace_all(&replaced, text, len, " ", 1, rep, rep_length) ||
        !buf_append(buf, replaced.data, replaced.length)) {
        free(replaced.data);
        return false;
    }
    free(replaced.data);
    if (!tok->metaspace_split)
        return encode_word(work, buf->data, buf->length);

    /* Split before every replacement character, which stays with the word after it. */
    size_t start = 0;
    while (start < buf->length) {
        const char *hit = memmem(buf->data + start + 1, buf->length - start - 1, rep,
                                 rep_length);
        size_t end = hit == NULL ? buf->length : (size_t)(hit - buf->data);
        if (!encode_word(work, buf->data + start, end - start))
            return false;
        start = end;
    }
    return true;
}

/* ---- added tokens ---- */

static bool is_space_at(const char *text, size_t len, size_t i, size_t *width)
{
    unsigned char c = (unsigned char)text[i];
    *width = 1;
    if (c == ' ' || (c >= '\t' && c <= '\r'))
        return true;
    /* U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000 */
    size_t n = tok_utf8_length(text + i, len - i);
    if (n < 2)
        return false;
    const unsigned char *s = (const unsigned char *)text + i;
    uint32_t cp = n == 2 ? (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F)
                : n == 3 ? (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 |
                               (s[2] & 0x3F)
                         : 0;
    *width = n;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static bool is_word_byte(unsigned char c)
{
    /* TODO: single_word treats every non-ASCII byte as part of a word, but Hugging Face
     * tokenizers checks whether the neighbouring character is Unicode alphanumeric. */
    return c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
           c >= 0x80;
}

typedef struct added_match {
    size_t start; /* including whitespace taken by lstrip */
    size_t end;   /* including whitespace taken by rstrip */
    int32_t id;
} added_match;

/* Returns the longest added token (normalized ones or raw ones) at position i. */
static const tok_added *longest_at(const sym_tokenizer *tok, const char *text, size_t len,
                                   size_t i, bool normalized)
{
    const tok_added *best = NULL;
    for (size_t k = 0; k < tok->added_count; k++) {
        const tok_added *token = &tok->added[k];
        size_t n = token->content.length;
        if (token->normalized != normalized || n > len - i ||
            (best != NULL && n <= best->content.length))
            continue;
        if (memcmp(text + i, tok_span_data(tok, token->content), n) != 0)
            continue;
        if (token->single_word && ((i > 0 && is_word_byte((unsigned char)text[i - 1])) ||
                                   (i + n < len && is_word_byte((unsigned char)text[i + n]))))
            continue;
        best = token;
    }
    return best;
}

/* Finds the leftmost added token at or after from; extends it over the whitespace that
 * lstrip and rstrip take, never before floor. */
static bool find_added(const sym_tokenizer *tok, const char *text, size_t len, size_t from,
                       size_t floor, bool normalized, added_match *match)
{
    for (size_t i = from; i < len; i++) {
        if (!tok->added_first_byte[(unsigned char)text[i]])
            continue;
        const tok_added *token = longest_at(tok, text, len, i, normalized);
        if (token == NULL)
            continue;
        match->id = token->id;
        match->start = i;
        match->end = i + token->content.length;
        while (token->lstrip && match->start > floor) {
            size_t width;
            if (!is_space_at(text, len, match->start - 1, &width) || width != 1)
                break;
            match->start--;
        }
        size_t width;
        while (token->rstrip && match->end < len && is_space_at(text, len, match->end, &width))
            match->end += width;
        return true;
    }
    return false;
}

/* Encodes normalized text, cutting out the added tokens that match normalized text. */
static bool encode_normalized(encode_work *work, const char *text, size_t len, bool first)
{
    size_t start = 0;
    added_match match;
    while (find_added(work->tok, text, len, start, start, true, &match)) {
        if (match.start > start &&
            !encode_pre_tokenized(work, text + start, match.start - start, first && start == 0))
            return false;
        if (!push_id(work->out, match.id))
            return false;
        start = match.end;
    }
    if (start < len)
        return encode_pre_tokenized(work, text + start, len - start, first && start == 0);
    return true;
}

static bool encode_segment(encode_work *work, const char *text, size_t len, bool first)
{
    if (len == 0)
        return true;
    const char *normalized;
    size_t normalized_length;
    if (!normalize(work, text, len, &normalized, &normalized_length))
        return false;
    /* The normalized text may live in a work buffer that later steps reuse, so copy it. */
    char *copy = malloc(normalized_length + 1);
    if (copy == NULL)
        return false;
    memcpy(copy, normalized, normalized_length);
    bool ok = encode_normalized(work, copy, normalized_length, first);
    free(copy);
    return ok;
}

static bool encode_text(encode_work *work, const char *text, size_t len)
{
    size_t start = 0;
    added_match match;
    while (find_added(work->tok, text, len, start, start, false, &match)) {
        if (!encode_segment(work, text + start, match.start - start, start == 0))
            return false;
        if (!push_id(work->out, match.id))
            return false;
        start = match.end;
    }
    return encode_segment(work, text + start, len - start, start == 0);
}

sym_status sym_tokenizer_encode(const sym_tokenizer *tok, const char *text, size_t len,
                                unsigned flags, int32_t **ids, size_t *count, sym_error *err)
{
    *ids = NULL;
    *count = 0;
    if ((flags & SYM_TOKENIZE_ADD_BOS) && tok->bos_id < 0)
        return sym_error_set(err, SYM_ERR_NOT_FOUND,
                             "the tokenizer defines no BOS token; set bos_token in "
                             "tokenizer_config.json or encode without BOS");
    if ((flags & SYM_TOKENIZE_ADD_EOS) && tok->eos_id < 0)
        return sym_error_set(err, SYM_ERR_NOT_FOUND,
                             "the tokenizer defines no EOS token; set eos_token in "
                             "tokenizer_config.json or encode without EOS");
    if (len > TOK_TEXT_MAX)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "text of %zu bytes is longer than the %zu bytes one call "
                             "encodes; split it", len, TOK_TEXT_MAX);

    id_vec out = {0};
    encode_work work = {.tok = tok, .out = &out};
    bool ok = true;
    if (flags & SYM_TOKENIZE_ADD_BOS)
        ok = push_id(&out, tok->bos_id);
    ok = ok && encode_text(&work, text, len);
    if (ok && (flags & SYM_TOKENIZE_ADD_EOS))
        ok = push_id(&out, tok->eos_id);

    free(work.normalized.data);
    free(work.scratch.data);
    free(work.metaspace.data);
    free(work.symbols);
    free(work.heap);
    free(work.cuts);
    if (!ok) {
        free(out.data);
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory encoding %zu bytes of text",
                             len);
    }
    *ids = out.data;
    *count = out.count;
    return SYM_OK;
}
