/* Shared between the merge modules (journal, driver, verify); not part of the public API. */
#ifndef SYMPHONY_MERGE_INTERNAL_H
#define SYMPHONY_MERGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#define SYM_JOURNAL_NAME ".symphony-journal"
#define SYM_STATE_NAME "symphony-merge.json"

/* One completed tensor as the journal records it. */
typedef struct sym_journal_record {
    char *name;
    uint64_t offset;
    uint64_t length;
    uint64_t xxh3;
} sym_journal_record;

typedef struct sym_journal {
    int fd;
    char *path;
} sym_journal;

/* Opens (creating it if needed) the journal at path and returns its valid records. A torn
 * or corrupt record ends the list and is cut off, so appends continue after the last
 * valid record. Free the records with sym_journal_records_free. */
sym_status sym_journal_open(sym_journal *journal, const char *path, sym_journal_record **records,
                            size_t *n_records, sym_error *err);

/* Appends a record and makes it durable (fdatasync) before returning. */
sym_status sym_journal_append(sym_journal *journal, const char *name, uint64_t offset,
                              uint64_t length, uint64_t xxh3, sym_error *err);

void sym_journal_close(sym_journal *journal);
void sym_journal_records_free(sym_journal_record *records, size_t n_records);

/* Test kill points: when the environment variable SYMPHONY_TEST_KILL_AT is N > 0, the
 * N-th call of sym_kill_point_reached in the process returns true, and sym_kill_point
 * raises SIGKILL there. Without the variable both cost one comparison. */
bool sym_kill_point_reached(void);
void sym_kill_point(void);
void sym_kill_now(void) __attribute__((noreturn));

#endif
