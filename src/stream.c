/* Layer planner and io_uring prefetch.
 *
 * Why read mode is the default: it keeps the next layer's I/O off the compute thread and
 * bounds what is in flight to one layer's bytes, at the cost of a staging buffer of that
 * size. Measured with bench/b_eval.sh on a 2-core machine (synthetic BF16 model, hidden
 * 1024, FFN 2816, 16 layers, 377 MB, cold page cache, 1024 tokens, 2 threads), the run
 * was compute-bound and the three modes were within run-to-run noise: read 4.9 and 7.0 s,
 * advise 6.2 and 5.9 s, none 5.9 and 5.3 s; peak RSS 154 MB for read and advise, 131 MB
 * for none (no staging buffer). Peak RSS was the same for 4, 8 and 16 layers.
 * With 16 tokens on a 7B-width model from a cold cache (bench/b_eval_7b.sh, same machine,
 * 8 layers of 404 MB), none was the slowest mode in every run. Read and advise traded
 * places from run to run (4.7 to 8.2 s and 4.3 to 10.5 s) because conversion and compute,
 * not the disk, bounded the pass. A machine whose disk is slower than its CPU is still
 * unmeasured.
 */
#include "symphony/stream.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RING_ENTRIES 128u
#define MIN_CHUNK (1u << 20)
#define MAX_CHUNK (1u << 30) /* io_uring read lengths are 32-bit */

typedef struct layer_plan {
    size_t n_ranges;
    sym_stream_range *ranges;
    uint64_t bytes;
} layer_plan;

/* One read or madvise request of the layer in flight. */
typedef struct chunk {
    size_t range;
    uint64_t offset; /* within the range */
    uint64_t length;
} chunk;

struct sym_stream {
    const sym_model *model;
    sym_prefetch_mode mode;
    int n_layers;
    layer_plan *layers;
    uint64_t max_layer_bytes;
    uint8_t *staging;
    struct io_uring ring;
    bool ring_ready;
    int in_flight;    /* layer being brought in, or -1 */
    int acquired;     /* layer whose bytes are available, or -1 */
    chunk *chunks;
    size_t n_chunks;
    size_t next_submit;
    size_t completed;
};

static const char *const mode_names[SYM_PREFETCH_MODE_COUNT] = {"read", "advise", "none"};

const char *sym_prefetch_mode_name(sym_prefetch_mode mode)
{
    return mode < SYM_PREFETCH_MODE_COUNT ? mode_names[mode] : "?";
}

bool sym_prefetch_mode_from_name(const char *name, sym_prefetch_mode *mode)
{
    for (int i = 0; i < SYM_PREFETCH_MODE_COUNT; i++) {
        if (strcmp(name, mode_names[i]) == 0) {
            *mode = (sym_prefetch_mode)i;
            return true;
        }
    }
    return false;
}

static size_t shard_index(const sym_model *m, const sym_st_file *file)
{
    for (size_t i = 0; i < sym_model_shard_count(m); i++) {
        if (sym_model_shard(m, i) == file)
            return i;
    }
    return 0;
}

static int compare_ranges(const void *a, const void *b)
{
    const sym_stream_range *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return 0;
}

/* Collects the per-layer tensors of layer l as one range each. */
static size_t collect_layer(const sym_model *m, int l, sym_stream_range *out)
{
    const sym_model_config *c = sym_model_get_config(m);
    int experts = (int)c->num_local_experts;
    size_t n = 0;
    for (int role = SYM_ROLE_INPUT_NORM; role < SYM_ROLE_COUNT; role++) {
        bool ffn = role == SYM_ROLE_FFN_GATE || role == SYM_ROLE_FFN_UP ||
                   role == SYM_ROLE_FFN_DOWN;
        int first = ffn && experts > 0 ? 0 : -1;
        int last = ffn && experts > 0 ? experts - 1 : -1;
        for (int e = first; e <= last; e++) {
            const sym_tensor_ref *r = sym_model_tensor(m, (sym_role)role, l, e);
            if (r == NULL || r->info->nbytes == 0)
                continue;
            out[n].shard = shard_index(m, r->file);
            out[n].offset = r->info->offset;
            out[n].length = r->info->nbytes;
            n++;
        }
    }
    return n;
}

/* Sorts the ranges and merges those that touch, then lays them out in staging order. */
static size_t merge_ranges(sym_stream_range *r, size_t n, uint64_t *total)
{
    qsort(r, n, sizeof *r, compare_ranges);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        sym_stream_range *prev = out > 0 ? &r[out - 1] : NULL;
        if (prev != NULL && prev->shard == r[i].shard &&
            prev->offset + prev->length >= r[i].offset) {
            uint64_t end = r[i].offset + r[i].length;
            if (end > prev->offset + prev->length)
                prev->length = end - prev->offset;
            continue;
        }
        r[out++] = r[i];
    }
    *total = 0;
    for (size_t i = 0; i < out; i++) {
        r[i].staging = *total;
        *total += r[i].length;
    }
    return out;
}

static sym_status plan_layers(sym_stream *s, sym_error *err)
{
    const sym_model_config *c = sym_model_get_config(s->model);
    size_t per_layer = (size_t)SYM_ROLE_COUNT * (size_t)(c->num_local_experts + 1);
    s->layers = calloc((size_t)s->n_layers, sizeof *s->layers);
    if (s->layers == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory planning the layers");
    for (int l = 0; l < s->n_layers; l++) {
        layer_plan *p = &s->layers[l];
        p->ranges = calloc(per_layer, sizeof *p->ranges);
        if (p->ranges == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM, "out of memory planning the layers");
        p->n_ranges = merge_ranges(p->ranges, collect_layer(s->model, l, p->ranges), &p->bytes);
        if (p->bytes > s->max_layer_bytes)
            s->max_layer_bytes = p->bytes;
    }
    return SYM_OK;
}

static sym_status setup_io(sym_stream *s, sym_error *err)
{
    if (s->mode == SYM_PREFETCH_NONE)
        return SYM_OK;
    int rc = io_uring_queue_init(RING_ENTRIES, &s->ring, 0);
    if (rc < 0)
        return sym_error_set(err, SYM_ERR_IO,
                             "io_uring setup failed: %s; use prefetch mode 'none'",
                             strerror(-rc));
    s->ring_ready = true;
    if (s->mode == SYM_PREFETCH_READ && s->max_layer_bytes > 0) {
        s->staging = malloc(s->max_layer_bytes);
        if (s->staging == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM,
                                 "out of memory for a %llu-byte layer staging buffer",
                                 (unsigned long long)s->max_layer_bytes);
    }
    return SYM_OK;
}

sym_status sym_stream_open(sym_stream **stream, const sym_model *model, sym_prefetch_mode mode,
                           sym_error *err)
{
    *stream = NULL;
    sym_stream *s = calloc(1, sizeof *s);
    if (s == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory opening the layer stream");
    s->model = model;
    s->mode = mode;
    s->n_layers = (int)sym_model_get_config(model)->num_hidden_layers;
    s->in_flight = -1;
    s->acquired = -1;
    sym_status st = plan_layers(s, err);
    if (st == SYM_OK)
        st = setup_io(s, err);
    if (st != SYM_OK) {
        sym_stream_close(s);
        return st;
    }
    *stream = s;
    return SYM_OK;
}

void sym_stream_close(sym_stream *stream)
{
    if (stream == NULL)
        return;
    if (stream->ring_ready) {
        /* Drain requests still in flight before their buffers go away. */
        sym_error ignored;
        if (stream->in_flight >= 0)
            sym_stream_acquire(stream, stream->in_flight, &ignored);
        io_uring_queue_exit(&stream->ring);
    }
    for (int l = 0; stream->layers != NULL && l < stream->n_layers; l++)
        free(stream->layers[l].ranges);
    free(stream->layers);
    free(stream->chunks);
    free(stream->staging);
    free(stream);
}

sym_prefetch_mode sym_stream_mode(const sym_stream *stream)
{
    return stream->mode;
}

size_t sym_stream_range_count(const sym_stream *stream, int layer)
{
    return stream->layers[layer].n_ranges;
}

const sym_stream_range *sym_stream_ranges(const sym_stream *stream, int layer)
{
    return stream->layers[layer].ranges;
}

uint64_t sym_stream_max_layer_bytes(const sym_stream *stream)
{
    return stream->max_layer_bytes;
}

uint64_t sym_stream_memory_bytes(const sym_stream *stream)
{
    return stream->mode == SYM_PREFETCH_READ ? stream->max_layer_bytes : 0;
}

/* Splits a layer into requests so that the ring can contain all of them at once where it can. */
static sym_status plan_chunks(sym_stream *s, const layer_plan *p, sym_error *err)
{
    uint64_t size = p->bytes / (RING_ENTRIES / 2) + 1;
    if (size < MIN_CHUNK)
        size = MIN_CHUNK;
    if (size > MAX_CHUNK)
        size = MAX_CHUNK;
    size_t count = 0;
    for (size_t i = 0; i < p->n_ranges; i++)
        count += (size_t)((p->ranges[i].length + size - 1) / size);
    free(s->chunks);
    s->chunks = calloc(count > 0 ? count : 1, sizeof *s->chunks);
    if (s->chunks == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory planning layer reads");
    s->n_chunks = 0;
    for (size_t i = 0; i < p->n_ranges; i++) {
        for (uint64_t off = 0; off < p->ranges[i].length; off += size) {
            uint64_t left = p->ranges[i].length - off;
            s->chunks[s->n_chunks++] = (chunk){i, off, left < size ? left : size};
        }
    }
    s->next_submit = 0;
    s->completed = 0;
    return SYM_OK;
}

/* The page-aligned span of a mapping that covers a byte range. */
static void mapped_span(const sym_st_file *f, uint64_t offset, uint64_t length, void **addr,
                        size_t *len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)(f->map + offset) & ~(page - 1);
    uintptr_t end = (uintptr_t)(f->map + offset + length);
    *addr = (void *)start;
    *len = (size_t)(end - start);
}

static void prep_chunk(sym_stream *s, struct io_uring_sqe *sqe, const layer_plan *p, size_t i)
{
    const chunk *c = &s->chunks[i];
    const sym_stream_range *r = &p->ranges[c->range];
    const sym_st_file *f = sym_model_shard(s->model, r->shard);
    if (s->mode == SYM_PREFETCH_READ) {
        io_uring_prep_read(sqe, f->fd, s->staging + r->staging + c->offset,
                           (unsigned)c->length, r->offset + c->offset);
    } else {
        void *addr;
        size_t len;
        mapped_span(f, r->offset + c->offset, c->length, &addr, &len);
        io_uring_prep_madvise(sqe, addr, (off_t)len, MADV_POPULATE_READ);
    }
    io_uring_sqe_set_data64(sqe, i);
}

static void submit_pending(sym_stream *s)
{
    const layer_plan *p = &s->layers[s->in_flight];
    while (s->next_submit < s->n_chunks) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
        if (sqe == NULL)
            break;
        prep_chunk(s, sqe, p, s->next_submit++);
    }
    io_uring_submit(&s->ring);
}

sym_status sym_stream_prefetch(sym_stream *stream, int layer, sym_error *err)
{
    if (layer < 0 || layer >= stream->n_layers)
        return sym_error_set(err, SYM_ERR_INVALID, "layer %d out of range 0..%d", layer,
                             stream->n_layers - 1);
    if (stream->mode == SYM_PREFETCH_NONE || stream->in_flight == layer ||
        stream->acquired == layer)
        return SYM_OK;
    if (stream->in_flight >= 0) {
        sym_status st = sym_stream_acquire(stream, stream->in_flight, err);
        if (st != SYM_OK)
            return st;
    }
    /* The staging buffer is reused: the acquired layer's bytes are gone from here on. */
    stream->acquired = -1;
    sym_status st = plan_chunks(stream, &stream->layers[layer], err);
    if (st != SYM_OK)
        return st;
    stream->in_flight = layer;
    submit_pending(stream);
    return SYM_OK;
}

/* Finishes a short read synchronously. */
static sym_status finish_read(sym_stream *s, size_t i, uint64_t done, sym_error *err)
{
    const chunk *c = &s->chunks[i];
    const sym_stream_range *r = &s->layers[s->in_flight].ranges[c->range];
    const sym_st_file *f = sym_model_shard(s->model, r->shard);
    while (done < c->length) {
        ssize_t n = pread(f->fd, s->staging + r->staging + c->offset + done,
                          (size_t)(c->length - done), (off_t)(r->offset + c->offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: read at offset %llu failed: %s",
                                 f->path, (unsigned long long)(r->offset + c->offset + done),
                                 n < 0 ? strerror(errno) : "unexpected end of file");
        done += (uint64_t)n;
    }
    return SYM_OK;
}

static sym_status check_completion(sym_stream *s, struct io_uring_cqe *cqe, sym_error *err)
{
    size_t i = (size_t)io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    const chunk *c = &s->chunks[i];
    const sym_stream_range *r = &s->layers[s->in_flight].ranges[c->range];
    const char *path = sym_model_shard(s->model, r->shard)->path;
    if (res < 0 && s->mode == SYM_PREFETCH_ADVISE && (res == -EINVAL || res == -EOPNOTSUPP))
        return SYM_OK; /* an older kernel without MADV_POPULATE_READ: pages fault in later */
    if (res < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: %s at offset %llu failed: %s", path,
                             s->mode == SYM_PREFETCH_READ ? "read" : "madvise",
                             (unsigned long long)(r->offset + c->offset), strerror(-res));
    if (s->mode == SYM_PREFETCH_READ && (uint64_t)res < c->length)
        return finish_read(s, i, (uint64_t)res, err);
    return SYM_OK;
}

sym_status sym_stream_acquire(sym_stream *stream, int layer, sym_error *err)
{
    if (stream->mode == SYM_PREFETCH_NONE || stream->acquired == layer)
        return SYM_OK;
    if (stream->in_flight != layer) {
        sym_status st = sym_stream_prefetch(stream, layer, err);
        if (st != SYM_OK)
            return st;
    }
    sym_status status = SYM_OK;
    while (stream->completed < stream->next_submit) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&stream->ring, &cqe);
        if (rc == -EINTR)
            continue;
        if (rc < 0) {
            status = sym_error_set(err, SYM_ERR_IO, "io_uring wait failed: %s", strerror(-rc));
            break;
        }
        sym_status st = check_completion(stream, cqe, err);
        if (status == SYM_OK)
            status = st;
        io_uring_cqe_seen(&stream->ring, cqe);
        stream->completed++;
        if (stream->completed == stream->next_submit && status == SYM_OK)
            submit_pending(stream);
    }
    stream->in_flight = -1;
    if (status == SYM_OK)
        stream->acquired = layer;
    return status;
}

/* Finds the staged copy of a tensor of the acquired layer, or NULL. */
static const uint8_t *staged_bytes(const sym_stream *s, const sym_tensor_ref *t)
{
    if (s->mode != SYM_PREFETCH_READ || s->acquired < 0)
        return NULL;
    const layer_plan *p = &s->layers[s->acquired];
    for (size_t i = 0; i < p->n_ranges; i++) {
        const sym_stream_range *r = &p->ranges[i];
        if (sym_model_shard(s->model, r->shard) != t->file)
            continue;
        if (t->info->offset >= r->offset &&
            t->info->offset + t->info->nbytes <= r->offset + r->length)
            return s->staging + r->staging + (t->info->offset - r->offset);
    }
    return NULL;
}

sym_status sym_stream_read_f32(sym_stream *stream, const sym_tensor_ref *tensor, uint64_t first,
                               uint64_t count, float *dst, sym_error *err)
{
    const uint8_t *bytes = staged_bytes(stream, tensor);
    if (bytes == NULL)
        return sym_tensor_read_f32(tensor, first, count, dst, err);
    /* The converter addresses data as file->map + offset: point both at the staged copy. */
    sym_st_file file = *tensor->file;
    sym_st_tensor info = *tensor->info;
    file.map = bytes;
    info.offset = 0;
    sym_tensor_ref staged = {&file, &info};
    return sym_tensor_read_f32(&staged, first, count, dst, err);
}

static void drop_span(const sym_st_file *f, uint64_t offset, uint64_t length)
{
    if (f->map == NULL || length == 0)
        return;
    void *addr;
    size_t len;
    mapped_span(f, offset, length, &addr, &len);
    /* Failure only leaves pages mapped; there is nothing to undo. */
    (void)madvise(addr, len, MADV_DONTNEED);
}

void sym_stream_release(sym_stream *stream, int layer)
{
    const layer_plan *p = &stream->layers[layer];
    for (size_t i = 0; i < p->n_ranges; i++) {
        const sym_stream_range *r = &p->ranges[i];
        drop_span(sym_model_shard(stream->model, r->shard), r->offset, r->length);
    }
}

void sym_stream_release_tensor(const sym_tensor_ref *tensor)
{
    drop_span(tensor->file, tensor->info->offset, tensor->info->nbytes);
}
