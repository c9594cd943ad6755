/* libFuzzer target: tokenizer.json loading, then encoding and decoding a fixed text with
 * whatever tokenizer the input describes. The loader reads a path, so each input is
 * written to a per-process temporary file first. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "symphony/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char sample[] = "Once upon a time, x = {1}; caf\xc3\xa9 \xe4\xb8\xad <s> \xf0\x9f\x98\x80";

static void write_input(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A directory of its own, so that no tokenizer_config.json is found next to it. */
    char dir[PATH_MAX], path[PATH_MAX + 32];
    snprintf(dir, sizeof dir, "/tmp/symphony-fuzz-tokenizer-%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_input(path, data, size);
    sym_tokenizer *tok;
    sym_error err;
    if (sym_tokenizer_load(path, &tok, &err) != SYM_OK)
        return 0;
    int32_t *ids = NULL;
    size_t count = 0;
    if (sym_tokenizer_encode(tok, sample, sizeof sample - 1, 0, &ids, &count,
                             &err) == SYM_OK) {
        char *text = NULL;
        size_t len = 0;
        if (sym_tokenizer_decode(tok, ids, count, false, &text, &len, &err) == SYM_OK)
            free(text);
        free(ids);
    }
    sym_tokenizer_free(tok);
    return 0;
}
