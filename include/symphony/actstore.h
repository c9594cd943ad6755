/* Activation statistics on disk: one zstd-compressed, xxh3-checksummed file per layer and
 * source, holding per-neuron mean and standard deviation and one f32 matrix.
 *
 * The matrix is either the z-scored activations [rows, d_ff] (rows = tokens when exact,
 * k for a token sketch, see align.h), from which the correlation of any two sources is
 * Ya^T Yb / tokens, or the correlation with the anchor [d_ff, d_ff]. docs/ALIGNMENT.md
 * describes the byte layout.
 *
 * Writing is atomic: the file is written under a temporary name in the same directory,
 * flushed to disk and renamed, so a killed writer leaves the old file or the new one.
 * Reading checks the header, its checksum, every size against the header and the file, and
 * the payload checksum, and rejects a bad file with a message naming it.
 */
#ifndef SYMPHONY_ACTSTORE_H
#define SYMPHONY_ACTSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SYM_ACTSTORE_VERSION 1
#define SYM_ACTSTORE_HEADER_BYTES 88

/* Limits the reader enforces before it allocates, so that a hostile header cannot make it
 * allocate without bound: at most 2^20 neurons, 2^26 matrix rows, and a decompressed
 * payload of at most SYM_ACTSTORE_MAX_PAYLOAD bytes unless the caller sets a lower limit. */
#define SYM_ACTSTORE_MAX_D_FF ((uint64_t)1 << 20)
#define SYM_ACTSTORE_MAX_ROWS ((uint64_t)1 << 26)
#define SYM_ACTSTORE_MAX_PAYLOAD ((uint64_t)1 << 36)

typedef enum sym_actstore_kind {
    SYM_ACTSTORE_ZSCORES = 1,     /* matrix [rows, d_ff]: z-scores or sketch rows */
    SYM_ACTSTORE_CORRELATION = 2, /* matrix [d_ff, d_ff]: anchor x this source */
} sym_actstore_kind;

/* One file's contents. The reader allocates mean, std and matrix; free them with
 * sym_actstore_record_free. The writer only reads them. */
typedef struct sym_actstore_record {
    sym_actstore_kind kind;
    uint32_t layer;
    uint32_t source;       /* index of the source model; the anchor is usually 0 */
    uint64_t d_ff;
    uint64_t tokens;       /* calibration tokens the statistics cover */
    uint64_t rows;         /* matrix rows: tokens, sketch rows k, or d_ff */
    uint64_t sketch_seed;  /* seed of the token sketch; 0 when rows are exact */
    double *mean;          /* [d_ff] */
    double *std;           /* [d_ff] */
    float *matrix;         /* [rows, d_ff] */
} sym_actstore_record;

/* Writes record to path atomically. zstd_level is zstd's compression level (0 for its
 * default). A correlation record must have rows == d_ff. */
sym_status sym_actstore_write(const char *path, const sym_actstore_record *record,
                              int zstd_level, sym_error *err);

/* Reads and verifies path into record. max_payload caps the decompressed payload in bytes
 * (0 means SYM_ACTSTORE_MAX_PAYLOAD). Errors: SYM_ERR_IO, SYM_ERR_NOT_FOUND,
 * SYM_ERR_FORMAT (bad magic, version, kind or sizes), SYM_ERR_CHECKSUM, SYM_ERR_LIMIT,
 * SYM_ERR_NOMEM; each message names the file. On failure record is empty. */
sym_status sym_actstore_read(const char *path, uint64_t max_payload,
                             sym_actstore_record *record, sym_error *err);

void sym_actstore_record_free(sym_actstore_record *record);

#ifdef __cplusplus
}
#endif

#endif
