/* Hidden-state cache files: one matrix [rows, cols] of hidden states per file, stored as
 * f32 or bf16, zstd-compressed, with xxh3 checksums of the header and of the payload.
 *
 * Layout (little-endian): the 8-byte magic "SYMHC\0\0\1", u32 dtype (0 f32, 1 bf16),
 * u32 zero, u64 rows, u64 cols, u64 raw payload bytes, u64 compressed bytes, u64 xxh3 of
 * the raw payload, u64 xxh3 of the 56 bytes before it; then the compressed payload.
 *
 * Writing is atomic (temporary name, fsync, rename). Reading rejects a file whose header,
 * sizes or payload do not check out, with a message naming it.
 */
#ifndef SYMPHONY_HCACHE_H
#define SYMPHONY_HCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SYM_HCACHE_HEADER_BYTES 64

typedef enum sym_hcache_dtype {
    SYM_HCACHE_F32 = 0,
    SYM_HCACHE_BF16 = 1,
} sym_hcache_dtype;

/* Rounds values in place to what a cache file of this dtype stores (bf16:
 * round-to-nearest-even), so that a value read back equals the value kept in memory. */
void sym_hcache_round(float *values, size_t count, sym_hcache_dtype dtype);

/* Writes h [rows, cols] to path atomically. h is read only; bf16 files round it. */
sym_status sym_hcache_write(const char *path, const float *h, uint64_t rows, uint64_t cols,
                            sym_hcache_dtype dtype, sym_error *err);

/* Reads path into h [rows, cols], which the caller sizes: the file's shape must equal
 * rows x cols. SYM_ERR_NOT_FOUND when the file is absent. */
sym_status sym_hcache_read(const char *path, float *h, uint64_t rows, uint64_t cols,
                           sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
