/* libFuzzer target: the merge journal as a resume reads it (records, checksums, the cut
 * of a torn tail), followed by one append as the resumed merge would make.
 *
 * When the first input byte is odd, the record checksum is recomputed for every record
 * that the rest of the input lays out (magic, name length, fields, name, checksum), so
 * that valid records with hostile names and fields get through. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "merge_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Record layout: magic (4), name length (4), offset, length, xxh3 (8 each), the name,
 * then the xxh3-64 of everything before it in the record. */
static void fix_checksums(uint8_t *p, size_t size)
{
    size_t pos = 0;
    while (size - pos >= 40) {
        uint32_t name_len = (uint32_t)p[pos + 4] | (uint32_t)p[pos + 5] << 8 |
                            (uint32_t)p[pos + 6] << 16 | (uint32_t)p[pos + 7] << 24;
        if (name_len > size - pos - 40)
            return;
        size_t body = 32 + name_len;
        uint64_t sum = XXH3_64bits(p + pos, body);
        for (int i = 0; i < 8; i++)
            p[pos + body + i] = (uint8_t)(sum >> (8 * i));
        pos += body + 8;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/symphony-fuzz-journal-%d", (int)getpid());
    if (size == 0)
        return 0;
    bool fix = data[0] & 1;
    data++;
    size--;
    uint8_t *file = malloc(size ? size : 1);
    if (file == NULL)
        abort();
    memcpy(file, data, size);
    if (fix)
        fix_checksums(file, size);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(file, 1, size, f) != size || fclose(f) != 0)
        abort();
    free(file);
    sym_journal journal = {.fd = -1};
    sym_journal_record *records = NULL;
    size_t n_records = 0;
    sym_error err;
    if (sym_journal_open(&journal, path, &records, &n_records, &err) == SYM_OK) {
        for (size_t i = 0; i < n_records; i++)
            if (records[i].name == NULL || records[i].name[0] == '\0')
                abort();
        (void)sym_journal_append(&journal, "model.norm.weight", 0, 256, 1, 2, &err);
    }
    sym_journal_records_free(records, n_records);
    sym_journal_close(&journal);
    return 0;
}
