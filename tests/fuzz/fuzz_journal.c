/* libFuzzer target: the merge journal as a resume reads it (records, checksums, the cut
 * of a torn tail), followed by one append as the resumed merge would make. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "merge_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/symphony-fuzz-journal-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    sym_journal journal = {.fd = -1};
    sym_journal_record *records = NULL;
    size_t n_records = 0;
    sym_error err;
    if (sym_journal_open(&journal, path, &records, &n_records, &err) == SYM_OK) {
        for (size_t i = 0; i < n_records; i++)
            if (records[i].name == NULL || records[i].name[0] == '\0')
                abort();
        (void)sym_journal_append(&journal, "model.norm.weight", 0, 256, 1, &err);
    }
    sym_journal_records_free(records, n_records);
    sym_journal_close(&journal);
    return 0;
}
