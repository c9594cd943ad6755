/* Layer streaming: which bytes of the shards each layer needs, brought in ahead of use.
 *
 * The planner lists, for every decoder layer, the byte ranges of its tensors in the shards
 * (adjacent tensors of one shard merged into one range). While the caller computes layer l,
 * sym_stream_prefetch(l + 1) has io_uring bring the next layer in; sym_stream_acquire waits
 * for it, and sym_stream_release drops a layer's pages from the process once its weights
 * have been converted, so resident memory does not grow with the number of layers.
 */
#ifndef SYMPHONY_STREAM_H
#define SYMPHONY_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "symphony/model.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a layer's bytes are brought in before they are converted to f32. */
typedef enum sym_prefetch_mode {
    SYM_PREFETCH_READ,   /* io_uring reads into one reused staging buffer */
    SYM_PREFETCH_ADVISE, /* io_uring madvise(MADV_POPULATE_READ) on the shard mappings */
    SYM_PREFETCH_NONE,   /* page faults on the mappings, no look-ahead */
    SYM_PREFETCH_MODE_COUNT
} sym_prefetch_mode;

/* Returns "read", "advise" or "none". */
const char *sym_prefetch_mode_name(sym_prefetch_mode mode);

/* Looks a mode up by name; returns false when unknown. */
bool sym_prefetch_mode_from_name(const char *name, sym_prefetch_mode *mode);

/* One contiguous byte range of a shard. */
typedef struct sym_stream_range {
    size_t shard;     /* index for sym_model_shard */
    uint64_t offset;  /* absolute file offset */
    uint64_t length;  /* bytes */
    uint64_t staging; /* offset of the range in the staging buffer (read mode) */
} sym_stream_range;

typedef struct sym_stream sym_stream;

/* Plans every layer of an open model and, except in none mode, sets up an io_uring.
 * The model must outlive the stream. */
sym_status sym_stream_open(sym_stream **stream, const sym_model *model, sym_prefetch_mode mode,
                           sym_error *err);

void sym_stream_close(sym_stream *stream);

sym_prefetch_mode sym_stream_mode(const sym_stream *stream);

/* The ranges of one layer, sorted by shard and offset. */
size_t sym_stream_range_count(const sym_stream *stream, int layer);
const sym_stream_range *sym_stream_ranges(const sym_stream *stream, int layer);

/* Bytes on disk of the largest layer: the staging buffer's size in read mode. */
uint64_t sym_stream_max_layer_bytes(const sym_stream *stream);

/* Bytes of memory the stream itself holds (the staging buffer in read mode, else 0). */
uint64_t sym_stream_memory_bytes(const sym_stream *stream);

/* Starts bringing a layer in. At most one layer is in flight; prefetching another first
 * waits for the one in flight. */
sym_status sym_stream_prefetch(sym_stream *stream, int layer, sym_error *err);

/* Waits until a layer's bytes are available, prefetching it now when it was not. */
sym_status sym_stream_acquire(sym_stream *stream, int layer, sym_error *err);

/* Reads count elements from element first of a tensor of the acquired layer as f32, from
 * the staging buffer in read mode and from the mapping otherwise. Tensors outside the
 * layers (embedding, final norm, lm_head) are read from the mapping. */
sym_status sym_stream_read_f32(sym_stream *stream, const sym_tensor_ref *tensor, uint64_t first,
                               uint64_t count, float *dst, sym_error *err);

/* Drops a layer's pages from the process's mappings (madvise MADV_DONTNEED). The page
 * cache keeps them while memory allows; they are reclaimable, not resident in us. */
void sym_stream_release(sym_stream *stream, int layer);

/* Drops the mapped pages of one tensor (used for the embedding and lm_head panels). */
void sym_stream_release_tensor(const sym_tensor_ref *tensor);

#ifdef __cplusplus
}
#endif

#endif
