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

/* Where a merge is, for a progress display. */
typedef struct sym_merge_progress {
    const char *stage;     /* "calibrate" (layer l's alignment and router) or "write" */
    int layer;             /* layer in progress; -1 for the tensors outside the layers */
    int n_layers;
    size_t tensors_done;   /* output tensors written, resumed ones included */
    size_t tensors_total;
    uint64_t bytes_done;   /* output tensor bytes written by this run */
    uint64_t bytes_total;  /* output tensor bytes this run has to write */
    uint64_t tokens_done;  /* calibration tokens passed through a layer, every model */
    uint64_t tokens_total;
    const char *tensor;    /* the tensor just written, or NULL */
    const char *step;      /* the calibration step starting ("source forward", ...), or NULL */
} sym_merge_progress;

/* How a resume checks the tensors that the journal records as written. */
typedef enum sym_resume_check {
    /* Shard sizes, and xxh3 of each tensor's first and last 4 KiB and of six 4 KiB blocks
     * at seeded positions between them: about 32 KiB read per tensor. */
    SYM_RESUME_CHECK_QUICK,
    /* xxh3 of every byte of every journaled tensor. */
    SYM_RESUME_CHECK_FULL,
} sym_resume_check;

typedef struct sym_merge_options {
    const char *output;
    uint64_t shard_size;   /* bytes of tensor data per shard */
    uint64_t memory_limit; /* 0: no limit */
    int threads;           /* part of the resume fingerprint */
    bool force;            /* replace an existing output directory */
    bool restart;          /* discard an interrupted merge instead of resuming it */
    sym_resume_check resume_check; /* not part of the resume fingerprint */
    /* Set to nonzero (by a signal handler) to stop after the tensor in progress. */
    volatile sig_atomic_t *interrupt;
    /* Called before and after each layer's calibration and after each tensor; may be
     * NULL. */
    void (*progress)(void *context, const sym_merge_progress *progress);
    void *progress_context;
} sym_merge_options;

typedef struct sym_merge_result {
    bool already_complete; /* the output existed with the same fingerprint */
    size_t tensors_total;
    size_t tensors_resumed; /* verified from the journal and skipped */
    size_t tensors_failed_check; /* journaled, but failed the resume check: written again */
    char first_failed_check[256]; /* name of the first of those, "" when none */
    uint64_t bytes_total;
    uint64_t bytes_written; /* tensor bytes this run wrote (resumed ones excluded) */
    uint64_t bytes_read;    /* tensor bytes of every source */
    uint32_t shards;
} sym_merge_result;

/* Runs a merge. SYM_ERR_INTERRUPTED means the state on disk is resumable. */
sym_status sym_merge_run(const sym_merge_config *cfg, const sym_merge_options *opts,
                         sym_merge_result *result, sym_error *err);

/* What `merge --check` found and estimated. Every problem is one line; any problem means
 * the merge cannot run as configured. Sizes are bytes, FLOPs count a multiply-add as 2,
 * rates are per second, and NAN marks a value that could not be measured. */
typedef struct sym_merge_plan {
    size_t n_problems;
    char **problems;

    size_t n_sources; /* models read: the experts, and base_model when it is not one */
    int n_layers;
    size_t n_tensors;
    uint32_t n_shards;
    uint64_t calibration_tokens; /* whole sequences, an equal number per expert */

    uint64_t read_bytes;   /* tensor bytes of every source, each read once */
    uint64_t output_bytes; /* shard files of the output */
    uint64_t cache_bytes;  /* upper bound of the work directory (before zstd) */
    uint64_t disk_needed;  /* output + caches + 1 MiB of metadata */
    uint64_t disk_free;    /* statvfs of the output's parent; UINT64_MAX: not checked */
    char disk_path[4096];  /* that parent directory */

    uint64_t memory_tensor;      /* largest working set of one output tensor */
    uint64_t memory_calibration; /* calibration buffers (estimate) */
    uint64_t memory_total;
    uint64_t memory_limit; /* --memory-limit; 0: none */

    double flops_source_forward, flops_merged_forward, flops_correlation;
    double flops_assignment, flops_router, flops_total;

    uint64_t probe_bytes;    /* bytes the disk probe read */
    double read_bytes_per_s; /* measured on the largest source shard */
    double gemm_flops_per_s; /* best of a few 256^3 cblas_sgemm calls */
    double seconds_read, seconds_write, seconds_compute, seconds_total; /* estimates */
} sym_merge_plan;

/* Validates a merge without running it: the config's settings, the output path, every
 * source's headers and their compatibility, memory against opts->memory_limit and disk
 * space against the output's parent directory (when opts->output is set), and fills plan.
 * Reads headers and a few MB of one source for the disk probe, never the weights.
 * Problems are listed in plan (status SYM_OK); an error is returned only when the check
 * itself fails. Free plan with sym_merge_plan_free, also after a failure. */
sym_status sym_merge_check(const sym_merge_config *cfg, const sym_merge_options *opts,
                           sym_merge_plan *plan, sym_error *err);

void sym_merge_plan_free(sym_merge_plan *plan);

/* Formats a byte count for people: "512 bytes", "1.50 KiB", "12.3 MiB", "4.00 GiB".
 * Returns buf. */
const char *sym_format_size(uint64_t bytes, char *buf, size_t size);

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
