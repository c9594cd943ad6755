/* Activation statistics files: verified reading. */
#include "symphony/actstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "actstore_internal.h"

#define READ_CHUNK_BYTES ((size_t)1 << 20)

static sym_status read_at(int fd, const char *path, void *buf, size_t size, uint64_t offset,
                          sym_error *err)
{
    unsigned char *p = buf;
    while (size > 0) {
        ssize_t n = pread(fd, p, size, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: read failed: %s", path,
                                 strerror(errno));
        if (n == 0)
            return sym_error_set(err, SYM_ERR_FORMAT, "%s: unexpected end of file", path);
        p += n;
        size -= (size_t)n;
        offset += (uint64_t)n;
    }
    return SYM_OK;
}

/* Checks every header field against the format, the limits and the file's size. */
static sym_status check_header(const char *path, const unsigned char *bytes,
                               const actstore_header *h, bool header_hash_ok,
                               uint64_t file_size, uint64_t max_payload, sym_error *err)
{
    if (memcmp(bytes, ACTSTORE_MAGIC, 8) != 0)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: not an activation statistics file (bad magic)", path);
    if (h->version != SYM_ACTSTORE_VERSION)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: format version %u; expected %d", path,
                             h->version, SYM_ACTSTORE_VERSION);
    if (!header_hash_ok)
        return sym_error_set(err, SYM_ERR_CHECKSUM,
                             "%s: header checksum mismatch; the file is corrupt, delete it "
                             "and recompute",
                             path);
    if (h->kind != SYM_ACTSTORE_ZSCORES && h->kind != SYM_ACTSTORE_CORRELATION)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: record kind %u; expected 1 or 2", path,
                             h->kind);
    if (h->d_ff == 0 || h->d_ff > SYM_ACTSTORE_MAX_D_FF || h->rows == 0 ||
        h->rows > SYM_ACTSTORE_MAX_ROWS || h->tokens == 0)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: d_ff %llu, rows %llu, tokens %llu; expected d_ff 1 to %llu, "
                             "rows 1 to %llu and tokens at least 1",
                             path, (unsigned long long)h->d_ff, (unsigned long long)h->rows,
                             (unsigned long long)h->tokens,
                             (unsigned long long)SYM_ACTSTORE_MAX_D_FF,
                             (unsigned long long)SYM_ACTSTORE_MAX_ROWS);
    if (h->kind == SYM_ACTSTORE_CORRELATION && h->rows != h->d_ff)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: correlation record with %llu rows; expected d_ff = %llu",
                             path, (unsigned long long)h->rows, (unsigned long long)h->d_ff);
    uint64_t expected = actstore_payload_bytes(h->d_ff, h->rows);
    if (h->payload_bytes != expected)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: payload of %llu bytes; expected %llu for d_ff %llu and %llu "
                             "rows",
                             path, (unsigned long long)h->payload_bytes,
                             (unsigned long long)expected, (unsigned long long)h->d_ff,
                             (unsigned long long)h->rows);
    if (h->payload_bytes > max_payload)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: payload of %llu bytes exceeds the limit of %llu", path,
                             (unsigned long long)h->payload_bytes,
                             (unsigned long long)max_payload);
    if (h->compressed_bytes != file_size - SYM_ACTSTORE_HEADER_BYTES)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: header gives %llu compressed bytes but the file holds %llu "
                             "after the header (truncated or extended)",
                             path, (unsigned long long)h->compressed_bytes,
                             (unsigned long long)(file_size - SYM_ACTSTORE_HEADER_BYTES));
    return SYM_OK;
}

/* Hashes the compressed bytes before anything is allocated for the payload. */
static sym_status verify_payload(int fd, const char *path, const actstore_header *h,
                                 unsigned char *chunk, sym_error *err)
{
    XXH3_state_t *state = XXH3_createState();
    if (state == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: cannot allocate the hash state", path);
    XXH3_64bits_reset(state);
    sym_status status = SYM_OK;
    for (uint64_t done = 0; status == SYM_OK && done < h->compressed_bytes;) {
        uint64_t left = h->compressed_bytes - done;
        size_t size = left < READ_CHUNK_BYTES ? (size_t)left : READ_CHUNK_BYTES;
        status = read_at(fd, path, chunk, size, SYM_ACTSTORE_HEADER_BYTES + done, err);
        XXH3_64bits_update(state, chunk, size);
        done += size;
    }
    uint64_t digest = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    if (status == SYM_OK && digest != h->payload_xxh3)
        status = sym_error_set(err, SYM_ERR_CHECKSUM,
                               "%s: payload checksum %016llx; expected %016llx; the file is "
                               "corrupt, delete it and recompute",
                               path, (unsigned long long)digest,
                               (unsigned long long)h->payload_xxh3);
    return status;
}

/* The destinations of the decompressed payload, filled in order. */
typedef struct payload_sink {
    void *part[3];
    size_t size[3];
    int current;
} payload_sink;

/* Decompresses one input buffer into the sink, failing if the output overruns it. */
static sym_status inflate_chunk(ZSTD_DCtx *dctx, ZSTD_inBuffer *in, payload_sink *sink,
                                size_t *frame_left, const char *path, sym_error *err)
{
    while (in->pos < in->size) {
        unsigned char overflow;
        ZSTD_outBuffer out = {&overflow, 1, 0};
        if (sink->current < 3)
            out = (ZSTD_outBuffer){sink->part[sink->current], sink->size[sink->current], 0};
        size_t ret = ZSTD_decompressStream(dctx, &out, in);
        if (ZSTD_isError(ret))
            return sym_error_set(err, SYM_ERR_FORMAT, "%s: zstd payload is invalid: %s",
                                 path, ZSTD_getErrorName(ret));
        if (sink->current == 3 && out.pos != 0)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "%s: payload decompresses to more bytes than the header "
                                 "gives",
                                 path);
        if (sink->current < 3) {
            sink->part[sink->current] = (unsigned char *)sink->part[sink->current] + out.pos;
            sink->size[sink->current] -= out.pos;
            while (sink->current < 3 && sink->size[sink->current] == 0)
                sink->current++;
        }
        *frame_left = ret;
        if (ret == 0 && in->pos < in->size)
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "%s: bytes follow the end of the zstd frame", path);
    }
    return SYM_OK;
}

static sym_status decompress_payload(int fd, const char *path, const actstore_header *h,
                                     unsigned char *chunk, sym_actstore_record *r,
                                     sym_error *err)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (dctx == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: cannot allocate the decompressor",
                             path);
    payload_sink sink = {
        .part = {r->mean, r->std, r->matrix},
        .size = {h->d_ff * sizeof(double), h->d_ff * sizeof(double),
                 h->rows * h->d_ff * sizeof(float)},
    };
    size_t frame_left = 1;
    sym_status status = SYM_OK;
    for (uint64_t done = 0; status == SYM_OK && done < h->compressed_bytes;) {
        uint64_t left = h->compressed_bytes - done;
        size_t size = left < READ_CHUNK_BYTES ? (size_t)left : READ_CHUNK_BYTES;
        status = read_at(fd, path, chunk, size, SYM_ACTSTORE_HEADER_BYTES + done, err);
        ZSTD_inBuffer in = {chunk, size, 0};
        if (status == SYM_OK)
            status = inflate_chunk(dctx, &in, &sink, &frame_left, path, err);
        done += size;
    }
    ZSTD_freeDCtx(dctx);
    if (status == SYM_OK && (frame_left != 0 || sink.current != 3))
        status = sym_error_set(err, SYM_ERR_FORMAT,
                               "%s: payload decompresses to fewer bytes than the header gives",
                               path);
    return status;
}

static sym_status allocate_record(const char *path, const actstore_header *h,
                                  sym_actstore_record *r, sym_error *err)
{
    r->kind = (sym_actstore_kind)h->kind;
    r->layer = h->layer;
    r->source = h->source;
    r->d_ff = h->d_ff;
    r->tokens = h->tokens;
    r->rows = h->rows;
    r->sketch_seed = h->sketch_seed;
    r->mean = malloc(h->d_ff * sizeof(double));
    r->std = malloc(h->d_ff * sizeof(double));
    r->matrix = malloc(h->rows * h->d_ff * sizeof(float));
    if (r->mean == NULL || r->std == NULL || r->matrix == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: cannot allocate %llu payload bytes",
                             path, (unsigned long long)h->payload_bytes);
    return SYM_OK;
}

static sym_status read_open_file(int fd, const char *path, uint64_t max_payload,
                                 sym_actstore_record *record, sym_error *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: stat failed: %s", path, strerror(errno));
    uint64_t file_size = (uint64_t)st.st_size;
    if (file_size < SYM_ACTSTORE_HEADER_BYTES)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: %llu bytes, shorter than the %d-byte header (truncated)",
                             path, (unsigned long long)file_size, SYM_ACTSTORE_HEADER_BYTES);

    unsigned char bytes[SYM_ACTSTORE_HEADER_BYTES];
    actstore_header h;
    sym_status status = read_at(fd, path, bytes, sizeof bytes, 0, err);
    if (status != SYM_OK)
        return status;
    bool hash_ok = actstore_header_decode(bytes, &h);
    status = check_header(path, bytes, &h, hash_ok, file_size, max_payload, err);
    if (status != SYM_OK)
        return status;

    unsigned char *chunk = malloc(READ_CHUNK_BYTES);
    if (chunk == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: cannot allocate a read buffer", path);
    status = verify_payload(fd, path, &h, chunk, err);
    if (status == SYM_OK)
        status = allocate_record(path, &h, record, err);
    if (status == SYM_OK)
        status = decompress_payload(fd, path, &h, chunk, record, err);
    free(chunk);
    return status;
}

sym_status sym_actstore_read(const char *path, uint64_t max_payload,
                             sym_actstore_record *record, sym_error *err)
{
    memset(record, 0, sizeof *record);
    if (max_payload == 0 || max_payload > SYM_ACTSTORE_MAX_PAYLOAD)
        max_payload = SYM_ACTSTORE_MAX_PAYLOAD;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    sym_status status = read_open_file(fd, path, max_payload, record, err);
    close(fd);
    if (status != SYM_OK)
        sym_actstore_record_free(record);
    return status;
}

void sym_actstore_record_free(sym_actstore_record *record)
{
    if (record == NULL)
        return;
    free(record->mean);
    free(record->std);
    free(record->matrix);
    memset(record, 0, sizeof *record);
}
