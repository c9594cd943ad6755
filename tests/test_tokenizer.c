/* Tokenizer against the stored encodings of the real fixtures (llama2.c's encoder and the
 * fixtures' independent oracle), decode round trips, Metaspace against the equivalent
 * normalizer layout, bad tokenizer files and id files. */
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/tokenizer.h"
#include "testlib.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    if (data != NULL && fread(data, 1, (size_t)size, file) != (size_t)size) {
        free(data);
        data = NULL;
    }
    fclose(file);
    if (data != NULL) {
        data[size] = '\0';
        *len = (size_t)size;
    }
    return data;
}

static bool same_ids(const int32_t *a, size_t a_count, const int32_t *b, size_t b_count,
                     const char *label)
{
    size_t n = a_count < b_count ? a_count : b_count;
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            fprintf(stderr, "%s: first difference at index %zu: got %d, expected %d\n", label,
                    i, (int)a[i], (int)b[i]);
            return false;
        }
    }
    if (a_count != b_count) {
        fprintf(stderr, "%s: got %zu ids, expected %zu\n", label, a_count, b_count);
        return false;
    }
    return true;
}

/* Encodes text and compares with expected; then checks that decoding gives text back. */
static void check_encoding(const sym_tokenizer *tok, const char *text, size_t len,
                           unsigned flags, const int32_t *expected, size_t expected_count,
                           const char *label)
{
    sym_error err;
    int32_t *ids;
    size_t count;
    CHECKF(sym_tokenizer_encode(tok, text, len, flags, &ids, &count, &err) == SYM_OK, "%s: %s",
           label, err.message);
    if (ids == NULL && count == 0 && len > 0)
        return;
    CHECKF(same_ids(ids, count, expected, expected_count, label), "%s", label);

    char *decoded;
    size_t decoded_length;
    CHECKF(sym_tokenizer_decode(tok, ids, count, true, &decoded, &decoded_length, &err) ==
           SYM_OK, "%s: %s", label, err.message);
    CHECKF(decoded_length == len && memcmp(decoded, text, len) == 0,
           "%s: decode(encode(text)) differs from the text (%zu bytes, expected %zu)", label,
           decoded_length, len);
    free(decoded);
    free(ids);
}

static void test_real_metadata(const sym_tokenizer *tok)
{
    CHECK(sym_tokenizer_vocab_size(tok) == 512);
    CHECK(sym_tokenizer_bos(tok) == 1);
    CHECK(sym_tokenizer_eos(tok) == 2);
    CHECK(sym_tokenizer_default_flags(tok) == SYM_TOKENIZE_ADD_BOS);
    size_t len = 0;
    const char *piece = sym_tokenizer_piece(tok, 3, &len);
    CHECK(piece != NULL);
    CHECK(len == 6);
    CHECK(len == 6 && memcmp(piece, "<0x00>", 6) == 0);
    piece = sym_tokenizer_piece(tok, 1, &len);
    CHECK(piece != NULL);
    CHECK(len == 3);
    CHECK(len == 3 && memcmp(piece, "<s>", 3) == 0);
    CHECK(sym_tokenizer_piece(tok, 512, &len) == NULL);
    CHECK(sym_tokenizer_piece(tok, -1, &len) == NULL);
    CHECK(sym_tokenizer_piece_id(tok, "<0x0A>", 6) == 13);
    CHECK(sym_tokenizer_piece_id(tok, "</s>", 4) == 2);
    CHECK(sym_tokenizer_piece_id(tok, "no such piece", 13) == -1);
}

/* Each text/DOMAIN/SPLIT.ids is the encoding of the whole .txt file, without BOS. */
static void test_real_corpora(const sym_tokenizer *tok, const char *real)
{
    const char *domains[] = {"stories", "legal", "code", "docs"};
    const char *splits[] = {"calib", "eval"};
    for (int d = 0; d < 4; d++) {
        for (int s = 0; s < 2; s++) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/text/%s/%s.txt", real, domains[d], splits[s]);
            size_t len;
            char *text = read_file(path, &len);
            CHECKF(text != NULL, "%s", path);
            snprintf(path, sizeof path, "%s/text/%s/%s.ids", real, domains[d], splits[s]);
            sym_error err;
            int32_t *expected;
            size_t expected_count;
            CHECKF(sym_ids_load(path, 512, &expected, &expected_count, &err) == SYM_OK, "%s",
                   err.message);
            if (text != NULL && expected != NULL)
                check_encoding(tok, text, len, 0, expected, expected_count, path);
            free(text);
            free(expected);
        }
    }
}

/* tokenizer-test/lines.txt: one case per line; expected.ids: llama2.c's ids, BOS first. */
static void test_real_lines(const sym_tokenizer *tok, const char *real)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer-test/lines.txt", real);
    size_t text_length;
    char *text = read_file(path, &text_length);
    snprintf(path, sizeof path, "%s/tokenizer-test/expected.ids", real);
    size_t ids_length;
    char *ids_text = read_file(path, &ids_length);
    CHECK(text != NULL);
    CHECK(ids_text != NULL);
    if (text == NULL || ids_text == NULL)
        return;
    char *line = text;
    char *ids_line = ids_text;
    int lines = 0;
    while (line < text + text_length && ids_line < ids_text + ids_length) {
        char *line_end = memchr(line, '\n', (size_t)(text + text_length - line));
        char *ids_end = memchr(ids_line, '\n', (size_t)(ids_text + ids_length - ids_line));
        line_end = line_end == NULL ? text + text_length : line_end;
        ids_end = ids_end == NULL ? ids_text + ids_length : ids_end;
        sym_error err;
        int32_t *expected;
        size_t expected_count;
        char label[64];
        snprintf(label, sizeof label, "tokenizer-test line %d", lines + 1);
        CHECKF(sym_ids_parse(ids_line, (size_t)(ids_end - ids_line), 512, label, &expected,
                             &expected_count, &err) == SYM_OK, "%s", err.message);
        check_encoding(tok, line, (size_t)(line_end - line), SYM_TOKENIZE_ADD_BOS, expected,
                       expected_count, label);
        free(expected);
        lines++;
        line = line_end + 1;
        ids_line = ids_end + 1;
    }
    CHECKF(lines == 239, "read %d lines", lines);
    free(text);
    free(ids_text);
}

/* Special tokens: "<s>" in text is BOS, and each following segment gets its own dummy
 * prefix, so " a" after "</s>" is "▁▁a" = "▁" "▁a" (the fixture has no "▁▁" piece). */
static void test_special_segments(const sym_tokenizer *tok)
{
    int32_t a = sym_tokenizer_piece_id(tok, "\xe2\x96\x81" "a", 4);
    int32_t space = sym_tokenizer_piece_id(tok, "\xe2\x96\x81", 3);
    CHECK(a >= 0);
    CHECK(space >= 0);
    CHECK(sym_tokenizer_piece_id(tok, "\xe2\x96\x81\xe2\x96\x81", 6) < 0);
    const char *text = "<s>a</s> a";
    int32_t expected[] = {1, a, 2, space, a};
    sym_error err;
    int32_t *ids;
    size_t count;
    CHECK(sym_tokenizer_encode(tok, text, strlen(text), 0, &ids, &count, &err) == SYM_OK);
    CHECK(same_ids(ids, count, expected, 5, "special segments"));
    char *decoded;
    size_t len;
    CHECK(sym_tokenizer_decode(tok, ids, count, false, &decoded, &len, &err) == SYM_OK);
    CHECKF(strcmp(decoded, "<s> a</s>  a") == 0, "decoded '%s'", decoded);
    free(decoded);
    free(ids);

    /* The empty string gets no dummy prefix. */
    CHECK(sym_tokenizer_encode(tok, "", 0, SYM_TOKENIZE_ADD_BOS | SYM_TOKENIZE_ADD_EOS, &ids,
                               &count, &err) == SYM_OK);
    CHECK(count == 2);
    CHECK(ids[0] == 1);
    CHECK(ids[1] == 2);
    free(ids);

    /* Invalid UTF-8 bytes fall back to byte pieces. */
    const char bad[] = "a\xff\xc3(b";
    CHECK(sym_tokenizer_encode(tok, bad, 5, 0, &ids, &count, &err) == SYM_OK);
    CHECK(sym_tokenizer_decode(tok, ids, count, true, &decoded, &len, &err) == SYM_OK);
    /* 0xFF and a lone 0xC3 are not valid UTF-8, so ByteFallback yields U+FFFD for each. */
    CHECKF(strcmp(decoded, "a\xef\xbf\xbd\xef\xbf\xbd(b") == 0, "decoded '%s'", decoded);
    free(decoded);
    free(ids);

    int32_t out_of_range = 512;
    CHECK(sym_tokenizer_decode(tok, &out_of_range, 1, true, &decoded, &len, &err) ==
          SYM_ERR_INVALID);
    CHECKF(strstr(err.message, "512") != NULL, "%s", err.message);
}

/* Writes root to dir/tokenizer.json. */
static void write_json(json_t *root, const char *dir)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    CHECK(json_dump_file(root, path, JSON_COMPACT) == 0);
}

/* A Metaspace pre-tokenizer with prepend "always" and no split, with a Metaspace decoder,
 * is the Llama 2 layout for every text that does not start with a space: compare both on
 * the fixture lines. */
static void test_metaspace_equivalence(const sym_tokenizer *llama, const char *real)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/base/tokenizer.json", real);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK(root != NULL);
    if (root == NULL)
        return;
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer",
                        json_pack("{s:s, s:s, s:s, s:b}", "type", "Metaspace", "replacement",
                                  "\xe2\x96\x81", "prepend_scheme", "always", "split", 0));
    json_object_set_new(root, "decoder",
                        json_pack("{s:s, s:[{s:s, s:s, s:s}, {s:s}, {s:s}]}", "type",
                                  "Sequence", "decoders", "type", "Metaspace", "replacement",
                                  "\xe2\x96\x81", "prepend_scheme", "always", "type",
                                  "ByteFallback", "type", "Fuse"));
    const char *dir = test_tmpdir("tok-metaspace");
    write_json(root, dir);
    json_decref(root);

    sym_error err;
    sym_tokenizer *meta;
    CHECKF(sym_tokenizer_load(dir, &meta, &err) == SYM_OK, "%s", err.message);
    if (meta == NULL)
        return;
    snprintf(path, sizeof path, "%s/tokenizer-test/lines.txt", real);
    size_t text_length;
    char *text = read_file(path, &text_length);
    CHECK(text != NULL);
    int compared = 0;
    for (char *line = text; text != NULL && line < text + text_length;) {
        char *end = memchr(line, '\n', (size_t)(text + text_length - line));
        end = end == NULL ? text + text_length : end;
        size_t len = (size_t)(end - line);
        if (len > 0 && line[0] != ' ') {
            int32_t *a, *b;
            size_t a_count, b_count;
            CHECK(sym_tokenizer_encode(llama, line, len, 0, &a, &a_count, &err) == SYM_OK);
            CHECK(sym_tokenizer_encode(meta, line, len, 0, &b, &b_count, &err) == SYM_OK);
            CHECK(same_ids(b, b_count, a, a_count, "Metaspace against Prepend+Replace"));
            char *decoded;
            size_t decoded_length;
            CHECK(sym_tokenizer_decode(meta, b, b_count, true, &decoded, &decoded_length,
                                       &err) == SYM_OK);
            CHECK(decoded_length == len && memcmp(decoded, line, len) == 0);
            free(decoded);
            free(a);
            free(b);
            compared++;
        }
        line = end + 1;
    }
    CHECKF(compared > 150, "compared %d lines", compared);
    free(text);
    sym_tokenizer_free(meta);
    char command[PATH_MAX + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0);
}

/* With merges "a a" and no normalizer, "aaaaa" becomes "aa" "aa" "a": on equal rank the
 * leftmost pair merges first. The pairs format ["a", "a"] of merges is used here. */
static void test_leftmost_tie(void)
{
    const char *dir = test_tmpdir("tok-tie");
    json_t *root = json_pack("{s:{s:s, s:{s:i, s:i, s:i}, s:[[s, s]], s:s}}", "model", "type",
                             "BPE", "vocab", "<unk>", 0, "a", 1, "aa", 2, "merges", "a", "a",
                             "unk_token", "<unk>");
    CHECK(root != NULL);
    write_json(root, dir);
    json_decref(root);
    sym_error err;
    sym_tokenizer *tok;
    CHECKF(sym_tokenizer_load(dir, &tok, &err) == SYM_OK, "%s", err.message);
    if (tok == NULL)
        return;
    int32_t *ids;
    size_t count;
    CHECK(sym_tokenizer_encode(tok, "aaaaa", 5, 0, &ids, &count, &err) == SYM_OK);
    int32_t expected[] = {2, 2, 1};
    CHECK(same_ids(ids, count, expected, 3, "leftmost tie"));
    free(ids);

    /* Unknown characters fuse only when fuse_unk is set; here they stay apart. */
    CHECK(sym_tokenizer_encode(tok, "xya", 3, 0, &ids, &count, &err) == SYM_OK);
    int32_t unknown[] = {0, 0, 1};
    CHECK(same_ids(ids, count, unknown, 3, "unknown characters"));
    free(ids);

    /* Without a decoder the pieces are joined with spaces. */
    char *decoded;
    size_t len;
    int32_t pieces[] = {2, 1};
    CHECK(sym_tokenizer_decode(tok, pieces, 2, true, &decoded, &len, &err) == SYM_OK);
    CHECKF(strcmp(decoded, "aa a") == 0, "decoded '%s'", decoded);
    free(decoded);
    CHECK(sym_tokenizer_encode(tok, "a", 1, SYM_TOKENIZE_ADD_BOS, &ids, &count, &err) ==
          SYM_ERR_NOT_FOUND);
    sym_tokenizer_free(tok);
    char command[PATH_MAX + 16];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    CHECK(system(command) == 0);
}

/* Each bad file fails to load with the expected status and a message naming the cause. */
static void test_bad_files(void)
{
    static const struct {
        const char *file;
        sym_status status;
        const char *needle;
    } cases[] = {
        {"invalid-json.json", SYM_ERR_FORMAT, "invalid JSON at line 1"},
        {"missing-model.json", SYM_ERR_FORMAT, "missing \"model\""},
        {"unigram.json", SYM_ERR_UNSUPPORTED, "model type 'Unigram' is not supported"},
        {"wordpiece.json", SYM_ERR_UNSUPPORTED, "model type 'WordPiece' is not supported"},
        {"bytelevel.json", SYM_ERR_UNSUPPORTED, "pre_tokenizer type 'ByteLevel'"},
        {"nfkc-normalizer.json", SYM_ERR_UNSUPPORTED, "normalizer type 'NFKC'"},
        {"unknown-merge-piece.json", SYM_ERR_FORMAT,
         "model.merges[1]: piece 'c' is not in the vocabulary"},
        {"merged-not-in-vocab.json", SYM_ERR_FORMAT, "merged piece 'ba' is not in"},
        {"duplicate-key.json", SYM_ERR_FORMAT, "duplicate object key"},
        {"huge-id.json", SYM_ERR_LIMIT, "id 2000000000 is outside"},
        {"sparse-ids.json", SYM_ERR_LIMIT, "largest id 3000000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/fixtures/bad/tokenizer/%s", test_top(), cases[i].file);
        sym_error err;
        sym_error_clear(&err);
        sym_tokenizer *tok = NULL;
        sym_status status = sym_tokenizer_load(path, &tok, &err);
        CHECKF(status == cases[i].status, "%s: status %d (%s)", cases[i].file, (int)status,
               err.message);
        CHECKF(strstr(err.message, cases[i].needle) != NULL, "%s: message '%s'",
               cases[i].file, err.message);
        CHECKF(strstr(err.message, cases[i].file) != NULL, "%s: message without the path",
               cases[i].file);
        CHECK(tok == NULL);
    }
    sym_error err;
    sym_tokenizer *tok;
    CHECK(sym_tokenizer_load("/nonexistent/tokenizer.json", &tok, &err) == SYM_ERR_NOT_FOUND);
}

static void test_ids_parse(void)
{
    sym_error err;
    int32_t *ids;
    size_t count;
    const char *good = " 1 2\n\t3\r\n511 ";
    CHECK(sym_ids_parse(good, strlen(good), 512, "good", &ids, &count, &err) == SYM_OK);
    CHECK(count == 4);
    if (count == 4) {
        CHECK(ids[0] == 1);
        CHECK(ids[2] == 3);
        CHECK(ids[3] == 511);
    }
    free(ids);

    CHECK(sym_ids_parse("", 0, 512, "empty", &ids, &count, &err) == SYM_OK);
    CHECK(count == 0);
    free(ids);

    const char *range = "1 2\n3 512 4";
    CHECK(sym_ids_parse(range, strlen(range), 512, "range.ids", &ids, &count, &err) ==
          SYM_ERR_INVALID);
    CHECKF(strstr(err.message, "range.ids: line 2, id number 4: id 512 is out of range") !=
           NULL, "%s", err.message);
    CHECK(ids == NULL);
    CHECK(count == 0);

    const char *bad = "1 2x 3";
    CHECK(sym_ids_parse(bad, strlen(bad), 512, "bad.ids", &ids, &count, &err) ==
          SYM_ERR_FORMAT);
    CHECKF(strstr(err.message, "line 1, id number 2") != NULL, "%s", err.message);

    const char *negative = "-1";
    CHECK(sym_ids_parse(negative, 2, 512, "neg.ids", &ids, &count, &err) == SYM_ERR_FORMAT);
    const char *huge = "99999999999999999999";
    CHECK(sym_ids_parse(huge, strlen(huge), 512, "huge.ids", &ids, &count, &err) ==
          SYM_ERR_FORMAT);
}

int main(void)
{
    test_bad_files();
    test_ids_parse();
    test_leftmost_tie();

    const char *real = test_shared_real();
    if (real == NULL) {
        if (test_failures != 0)
            return test_finish("test_tokenizer");
        test_skip("the real fixtures are missing (set SYMPHONY_SHARED)");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/base", real);
    sym_error err;
    sym_tokenizer *tok;
    CHECKF(sym_tokenizer_load(path, &tok, &err) == SYM_OK, "%s", err.message);
    if (tok == NULL)
        return test_finish("test_tokenizer");
    test_real_metadata(tok);
    test_real_corpora(tok, real);
    test_real_lines(tok, real);
    test_special_segments(tok);
    test_metaspace_equivalence(tok, real);
    sym_tokenizer_free(tok);
    return test_finish("test_tokenizer");
}
