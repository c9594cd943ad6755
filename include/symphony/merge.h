/* The merge pipeline and output verification.
 *
 * sym_merge_run builds OUTPUT.partial beside OUTPUT, writes every tensor at its planned
 * offset, journals each completed tensor, and renames the directory into place when it
 * is complete. Rerunning the same merge resumes from the journal.
 */
#ifndef SYMPHONY_MERGE_H
#define SYMPHONY_MERGE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/mergecfg.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sym_merge_options {
    const char *output;
    uint64_t shard_size;   /* bytes of tensor data per shard */
    uint64_t memory_limit; /* 0: no limit */
    int threads;           /* part of the resume fingerprint */
    bool force;            /* replace an existing output directory */
    bool restart;          /* discard an interrupted merge instead of resuming it */
    /* Set to nonzero (by a signal handler) to stop after the tensor in progress. */
    volatile sig_atomic_t *interrupt;
    /* Called after each tensor; may be NULL. */
    void (*progress)(void *context, size_t done, size_t total, const char *tensor);
    void *progress_context;
} sym_merge_options;

typedef struct sym_merge_result {
    bool already_complete; /* the output existed with the same fingerprint */
    size_t tensors_total;
    size_t tensors_resumed; /* verified from the journal and skipped */
    uint64_t bytes_total;
    uint32_t shards;
} sym_merge_result;

/* Runs a merge. SYM_ERR_INTERRUPTED means the state on disk is resumable. */
sym_status sym_merge_run(const sym_merge_config *cfg, const sym_merge_options *opts,
                         sym_merge_result *result, sym_error *err);

/* One problem that verify found. */
typedef struct sym_verify_problem {
    char *file;   /* file name inside the directory */
    char *tensor; /* damaged tensor, or NULL for a problem of the file itself */
    char *message;
} sym_verify_problem;

typedef struct sym_verify_report {
    size_t n_problems;
    sym_verify_problem *problems;
    size_t tensors_checked;
    uint64_t bytes_checked;
} sym_verify_report;

/* Re-reads a merged directory: every shard's structure, the index, config.json against
 * the tensors, and every tensor's xxh3 against the manifest. Damage is listed in the
 * report (status SYM_OK); errors are returned only when verification itself fails. */
sym_status sym_verify_dir(const char *dir, sym_verify_report *report,
                          void (*progress)(void *context, uint64_t done, uint64_t total),
                          void *context, sym_error *err);

void sym_verify_report_free(sym_verify_report *report);

#ifdef __cplusplus
}
#endif

#endif
