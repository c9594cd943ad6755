/* Encoding throughput: loads a tokenizer, repeats the given text files up to a target size,
 * encodes the whole buffer as one string and prints MB/s (1 MB = 10^6 bytes).
 * usage: bench_tokenizer MODEL MEGABYTES TEXT_FILE... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "symphony/tokenizer.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *read_all(const char *path, size_t *len)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return NULL;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *data = size > 0 ? malloc((size_t)size) : NULL;
    if (data != NULL && fread(data, 1, (size_t)size, file) != (size_t)size) {
        free(data);
        data = NULL;
    }
    fclose(file);
    *len = data != NULL ? (size_t)size : 0;
    return data;
}

/* Fills a buffer of target bytes with the files, one after another, repeated. */
static char *build_text(char **paths, int count, size_t target)
{
    char *text = malloc(target);
    size_t length = 0;
    while (text != NULL && length < target) {
        for (int i = 0; i < count && length < target; i++) {
            size_t len;
            char *data = read_all(paths[i], &len);
            if (data == NULL) {
                fprintf(stderr, "bench_tokenizer: cannot read '%s'\n", paths[i]);
                free(text);
                return NULL;
            }
            size_t take = len < target - length ? len : target - length;
            memcpy(text + length, data, take);
            length += take;
            free(data);
        }
    }
    return text;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_tokenizer MODEL MEGABYTES TEXT_FILE...\n");
        return 2;
    }
    size_t target = (size_t)(atof(argv[2]) * 1e6);
    sym_error err;
    sym_tokenizer *tok;
    double start = now_seconds();
    if (sym_tokenizer_load(argv[1], &tok, &err) != SYM_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.message);
        return 1;
    }
    double load_seconds = now_seconds() - start;
    char *text = build_text(argv + 3, argc - 3, target);
    if (text == NULL)
        return 1;

    int32_t *ids;
    size_t count;
    start = now_seconds();
    sym_status status = sym_tokenizer_encode(tok, text, target, 0, &ids, &count, &err);
    double encode_seconds = now_seconds() - start;
    if (status != SYM_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.message);
        return 1;
    }
    char *decoded;
    size_t decoded_length;
    start = now_seconds();
    status = sym_tokenizer_decode(tok, ids, count, true, &decoded, &decoded_length, &err);
    double decode_seconds = now_seconds() - start;
    if (status != SYM_OK) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.message);
        return 1;
    }
    printf("vocabulary %zu ids, load %.3f s\n", sym_tokenizer_vocab_size(tok), load_seconds);
    printf("encode %zu bytes -> %zu ids in %.3f s: %.2f MB/s\n", target, count,
           encode_seconds, (double)target / 1e6 / encode_seconds);
    printf("decode %zu ids in %.3f s: %.2f MB/s, round trip %s\n", count, decode_seconds,
           (double)decoded_length / 1e6 / decode_seconds,
           decoded_length == target && memcmp(decoded, text, target) == 0 ? "exact" : "differs");
    free(decoded);
    free(ids);
    free(text);
    sym_tokenizer_free(tok);
    return 0;
}
