/* libFuzzer target: an activation statistics file (header, sizes, zstd payload, checksums)
 * as the alignment reads it back, with the reader's own payload limit.
 *
 * Random bytes almost never carry valid checksums, so half the inputs (first byte odd)
 * have the compressed size and both xxh3 checksums of the header recomputed before they
 * are read; the rest of the input is the file. That lets the fuzzer reach the size checks
 * and the zstd decompression behind them. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "symphony/actstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/symphony-fuzz-actstore-%d.stats", (int)getpid());
    if (size == 0)
        return 0;
    bool fix = data[0] & 1;
    data++;
    size--;
    uint8_t *file = malloc(size ? size : 1);
    if (file == NULL)
        abort();
    memcpy(file, data, size);
    if (fix && size >= 88) {
        put_u64(file + 64, size - 88);
        put_u64(file + 72, XXH3_64bits(file + 88, size - 88));
        put_u64(file + 80, XXH3_64bits(file, 80));
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(file, 1, size, f) != size || fclose(f) != 0)
        abort();
    free(file);
    sym_actstore_record record;
    sym_error err;
    if (sym_actstore_read(path, 0, &record, &err) == SYM_OK)
        sym_actstore_record_free(&record);
    return 0;
}
