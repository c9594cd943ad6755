/* libFuzzer target: an activation statistics file (header, sizes, zstd payload, checksums)
 * as the alignment reads it back, with the reader's own payload limit. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "symphony/actstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/symphony-fuzz-actstore-%d.stats", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    sym_actstore_record record;
    sym_error err;
    if (sym_actstore_read(path, 0, &record, &err) == SYM_OK)
        sym_actstore_record_free(&record);
    return 0;
}
