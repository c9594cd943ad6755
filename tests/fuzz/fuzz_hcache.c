/* libFuzzer target: a hidden-state cache file as a resumed merge reads it back into a
 * [4, 8] buffer.
 *
 * Random bytes almost never carry a valid header checksum, so half the inputs (first byte
 * odd) get the header's xxh3 recomputed before they are read; the rest of the input is the
 * file. That lets the fuzzer reach the size checks, the zstd decompression and the payload
 * checksum behind them. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "symphony/hcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/symphony-fuzz-hcache-%d.hc", (int)getpid());
    bool fix = data[0] & 1;
    data++;
    size--;
    uint8_t *file = malloc(size ? size : 1);
    if (file == NULL)
        abort();
    memcpy(file, data, size);
    if (fix && size >= SYM_HCACHE_HEADER_BYTES) {
        uint64_t sum = XXH3_64bits(file, 56);
        for (int i = 0; i < 8; i++)
            file[56 + i] = (uint8_t)(sum >> (8 * i));
    }
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        abort();
    fwrite(file, 1, size, f);
    fclose(f);
    free(file);

    float h[4 * 8];
    sym_error err;
    (void)sym_hcache_read(path, h, 4, 8, &err);
    unlink(path);
    return 0;
}
