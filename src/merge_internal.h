/* Shared between the merge modules (journal, driver, verify); not part of the public API. */
#ifndef SYMPHONY_MERGE_INTERNAL_H
#define SYMPHONY_MERGE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/merge.h"
#include "symphony/status.h"

#define SYM_JOURNAL_NAME ".symphony-journal"
#define SYM_STATE_NAME "symphony-merge.json"

/* One completed tensor as the journal records it. */
typedef struct sym_journal_record {
    char *name;
    uint64_t offset;
    uint64_t length;
    uint64_t xxh3;
    bool has_sample;      /* false for records of the older format without sample_xxh3 */
    uint64_t sample_xxh3; /* xxh3 of the sampled bytes, see sym_sample_init */
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
                              uint64_t length, uint64_t xxh3, uint64_t sample_xxh3,
                              sym_error *err);

void sym_journal_close(sym_journal *journal);
void sym_journal_records_free(sym_journal_record *records, size_t n_records);

/* Resume checks (merge_resume.c). */

/* Bytes per sampled block, and blocks per sample: the tensor's first and last block and
 * one block at a seeded position in each of six equal stretches between them. */
#define SYM_SAMPLE_BLOCK 4096u
#define SYM_SAMPLE_REGIONS 8u

/* The sampled bytes of one tensor. A tensor of at most SYM_SAMPLE_REGIONS blocks is
 * sampled whole. */
typedef struct sym_sample {
    size_t n_regions;
    uint64_t start[SYM_SAMPLE_REGIONS]; /* bytes from the tensor's first byte */
    uint64_t length[SYM_SAMPLE_REGIONS];
    uint8_t bytes[SYM_SAMPLE_REGIONS * SYM_SAMPLE_BLOCK]; /* the regions, in order */
} sym_sample;

/* Chooses the sampled regions of a tensor of nbytes bytes. The seeded positions depend on
 * the tensor's name and size only, so the writer and a later resume pick the same ones. */
void sym_sample_init(sym_sample *sample, const char *name, uint64_t nbytes);

/* Copies the sampled bytes inside data, the tensor's bytes starting at position. */
void sym_sample_feed(sym_sample *sample, uint64_t position, const uint8_t *data, size_t size);

/* Returns the xxh3-64 of the sampled bytes, once every region has been fed. */
uint64_t sym_sample_digest(const sym_sample *sample);

/* Checks a journaled tensor in an output shard whose size was file_size before this run
 * touched it. Both modes require the tensor to lie inside file_size. Quick mode then
 * compares the sampled bytes with rec->sample_xxh3 (the whole tensor when rec has no
 * sample); full mode re-hashes the whole tensor. Sets *intact; an error is returned only
 * when reading fails. */
sym_status sym_resume_check_tensor(int fd, uint64_t file_size, const sym_journal_record *rec,
                                   sym_resume_check mode, bool *intact, sym_error *err);

/* Checks before a merge (merge_check.c). */
#include "symphony/merge.h"
#include "symphony/model.h"

/* Rejects an empty output path, and one that equals, contains or lies inside a source,
 * base_model or anchor directory (compared by realpath). */
sym_status sym_merge_check_output(const sym_merge_config *cfg, const char *output,
                                  sym_error *err);

/* Rejects a source whose sliding_window is below its max_position_embeddings. */
sym_status sym_merge_check_sliding_window(const sym_model *model, sym_error *err);

void sym_merge_plan_add_problem(sym_merge_plan *plan, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Fills the byte, memory, FLOP and time figures of plan; plan->memory_tensor and
 * plan->output_bytes must be set. models: every source read, the anchor among them. */
void sym_merge_estimate(const sym_merge_config *cfg, const sym_merge_options *opts,
                        sym_model *const *models, size_t n_models, const sym_model *anchor,
                        sym_merge_plan *plan);

/* Fills the memory and disk figures of plan (memory_calibration, memory_total, cache_bytes,
 * disk_needed) and calibration_tokens, without the time measurements; plan->memory_tensor
 * and plan->output_bytes must be set. */
void sym_merge_estimate_needs(const sym_merge_config *cfg, size_t n_models,
                              const sym_model *anchor, sym_merge_plan *plan);

/* Returns the sum of the tensor bytes of a model's shards. */
uint64_t sym_merge_source_bytes(const sym_model *model);

/* Returns the calibration tokens the pipeline takes at most: whole sequences, an equal
 * number per expert (fewer when a domain has too little text). */
uint64_t sym_merge_calibration_tokens(const sym_merge_config *cfg);

/* Returns the free bytes of the output's parent directory (written into parent), or
 * UINT64_MAX when statvfs fails. */
uint64_t sym_merge_free_space(const char *output, char *parent, size_t size);

/* Test kill points: when the environment variable SYMPHONY_TEST_KILL_AT is N > 0, the
 * N-th call of sym_kill_point_reached in the process returns true, and sym_kill_point
 * raises SIGKILL there (SIGINT instead when SYMPHONY_TEST_KILL_SIGNAL is INT, and the
 * process carries on to its signal handler). Without the variable both cost one
 * comparison. */
bool sym_kill_point_reached(void);
void sym_kill_point(void);
void sym_kill_now(void);


/* Tensor production: the sources of a merge and one job per output tensor. */
#include "symphony/mergecfg.h"
#include "symphony/model.h"

/* What calibration decided for the layer being written: the permutation of each expert's
 * FFN neurons (NULL for none) and the trained router [n_experts, hidden] (NULL: the
 * router settings without calibration). */
typedef struct sym_layer_state {
    int layer;
    const int32_t *perm[SYM_MAX_SOURCES];
    const float *router;
} sym_layer_state;

typedef struct sym_merge_sources {
    sym_model *const *experts; /* expert e's FFN becomes expert e */
    size_t n_experts;
    const sym_model *anchor;
    const sym_model *base; /* base_model (task arithmetic subtracts it), or NULL */
    const sym_merge_config *cfg;
    int n_layers;
    uint64_t vocab_out; /* rows of the output embedding and lm_head */
    uint64_t hidden;
    const sym_layer_state *layer_state; /* NULL without calibration */
} sym_merge_sources;

typedef enum sym_job_kind {
    SYM_JOB_EMBED,     /* selective linear over the union vocabulary */
    SYM_JOB_LM_HEAD,   /* the same, from each source's lm_head (its embedding if tied) */
    SYM_JOB_NORM,      /* weighted mean */
    SYM_JOB_ATTENTION, /* symphony.attention: slerp, linear or base */
    SYM_JOB_EXPERT,    /* expert e's FFN tensor, converted */
    SYM_JOB_ROUTER,    /* [n_experts, hidden] rows from the router settings */
} sym_job_kind;

typedef struct sym_tensor_job {
    sym_job_kind kind;
    sym_role role;
    int layer;
    int expert;
} sym_tensor_job;

/* Receives a tensor's f32 values in order, in blocks. */
typedef struct sym_tensor_sink {
    sym_status (*write)(void *context, const float *values, size_t count, sym_error *err);
    void *context;
} sym_tensor_sink;

/* Computes one output tensor and passes its values, row-major, to sink. */
sym_status sym_produce_tensor(const sym_merge_sources *src, const sym_tensor_job *job,
                              const sym_tensor_sink *sink, sym_error *err);

/* Starts reading a job's source tensors into the page cache without waiting, so that the
 * reads overlap the work on the job before it. */
void sym_job_prefetch(const sym_merge_sources *src, const sym_tensor_job *job);

/* Returns the f32 working memory, in bytes, that producing a job needs at most. */
uint64_t sym_job_memory(const sym_merge_sources *src, const sym_tensor_job *job,
                        uint64_t numel);

/* What the model card describes (merge_card.c). */
typedef struct sym_card_facts {
    const sym_merge_config *cfg;
    sym_model *const *experts;
    const sym_model *base; /* base_model when it is not an expert, or NULL */
    const sym_model *anchor;
    const sym_model *vocab_donor;
    bool tied;
    bool calibrated; /* merge-report.json is in the directory */
    uint64_t vocab_rows;
    const struct sym_out_plan *plan;
} sym_card_facts;

/* Writes README.md into dir; a calibrated merge's card reads dir/merge-report.json. */
sym_status sym_merge_write_card(const sym_card_facts *facts, const char *dir, sym_error *err);

#endif
