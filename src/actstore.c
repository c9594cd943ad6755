/* Activation statistics files: header encoding, atomic compressed writing. */
#include "symphony/actstore.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include "actstore_internal.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the activation statistics payload is stored in host order, which must be little-endian"
#endif

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void actstore_header_encode(const actstore_header *h, unsigned char *out)
{
    memcpy(out, ACTSTORE_MAGIC, 8);
    put_u32(out + 8, h->version);
    put_u32(out + 12, h->kind);
    put_u32(out + 16, h->layer);
    put_u32(out + 20, h->source);
    put_u64(out + 24, h->d_ff);
    put_u64(out + 32, h->tokens);
    put_u64(out + 40, h->rows);
    put_u64(out + 48, h->sketch_seed);
    put_u64(out + 56, h->payload_bytes);
    put_u64(out + 64, h->compressed_bytes);
    put_u64(out + 72, h->payload_xxh3);
    put_u64(out + 80, XXH3_64bits(out, 80));
}

bool actstore_header_decode(const unsigned char *in, actstore_header *h)
{
    h->version = get_u32(in + 8);
    h->kind = get_u32(in + 12);
    h->layer = get_u32(in + 16);
    h->source = get_u32(in + 20);
    h->d_ff = get_u64(in + 24);
    h->tokens = get_u64(in + 32);
    h->rows = get_u64(in + 40);
    h->sketch_seed = get_u64(in + 48);
    h->payload_bytes = get_u64(in + 56);
    h->compressed_bytes = get_u64(in + 64);
    h->payload_xxh3 = get_u64(in + 72);
    h->header_xxh3 = get_u64(in + 80);
    return XXH3_64bits(in, 80) == h->header_xxh3;
}

uint64_t actstore_payload_bytes(uint64_t d_ff, uint64_t rows)
{
    return 2 * sizeof(double) * d_ff + sizeof(float) * rows * d_ff;
}

/* Writer state: the temporary file, the compressor and the running checksum. */
typedef struct writer {
    const char *path;
    int fd;
    ZSTD_CCtx *cctx;
    XXH3_state_t *hash;
    unsigned char *out;
    size_t out_size;
    uint64_t compressed_bytes;
} writer;

static sym_status write_all(writer *w, const void *data, size_t size, sym_error *err)
{
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t n = write(w->fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: write failed: %s", w->path,
                                 strerror(errno));
        p += n;
        size -= (size_t)n;
    }
    return SYM_OK;
}

/* Compresses size bytes (the last piece when end is set) and writes what zstd outputs. */
static sym_status compress_piece(writer *w, const void *data, size_t size, bool end,
                                 sym_error *err)
{
    ZSTD_inBuffer in = {data, size, 0};
    ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
        ZSTD_outBuffer out = {w->out, w->out_size, 0};
        size_t left = ZSTD_compressStream2(w->cctx, &out, &in, mode);
        if (ZSTD_isError(left))
            return sym_error_set(err, SYM_ERR_IO, "%s: zstd compression failed: %s", w->path,
                                 ZSTD_getErrorName(left));
        XXH3_64bits_update(w->hash, w->out, out.pos);
        w->compressed_bytes += out.pos;
        sym_status status = write_all(w, w->out, out.pos, err);
        if (status != SYM_OK)
            return status;
        bool finished = end ? left == 0 : in.pos == in.size;
        if (finished)
            return SYM_OK;
    }
}

static sym_status check_record(const char *path, const sym_actstore_record *r, sym_error *err)
{
    if (r->kind != SYM_ACTSTORE_ZSCORES && r->kind != SYM_ACTSTORE_CORRELATION)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: record kind %d; expected 1 or 2", path,
                             (int)r->kind);
    if (r->d_ff == 0 || r->d_ff > SYM_ACTSTORE_MAX_D_FF || r->rows == 0 ||
        r->rows > SYM_ACTSTORE_MAX_ROWS || r->tokens == 0)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: d_ff %llu, rows %llu, tokens %llu; expected d_ff 1 to %llu, "
                             "rows 1 to %llu and tokens at least 1",
                             path, (unsigned long long)r->d_ff, (unsigned long long)r->rows,
                             (unsigned long long)r->tokens,
                             (unsigned long long)SYM_ACTSTORE_MAX_D_FF,
                             (unsigned long long)SYM_ACTSTORE_MAX_ROWS);
    if (r->kind == SYM_ACTSTORE_CORRELATION && r->rows != r->d_ff)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "%s: correlation record with %llu rows; expected d_ff = %llu",
                             path, (unsigned long long)r->rows, (unsigned long long)r->d_ff);
    return SYM_OK;
}

static sym_status write_payload(writer *w, const sym_actstore_record *r, sym_error *err)
{
    size_t vector_bytes = (size_t)r->d_ff * sizeof(double);
    sym_status status = compress_piece(w, r->mean, vector_bytes, false, err);
    if (status == SYM_OK)
        status = compress_piece(w, r->std, vector_bytes, false, err);
    if (status == SYM_OK)
        status = compress_piece(w, r->matrix, (size_t)(r->rows * r->d_ff) * sizeof(float),
                                true, err);
    return status;
}

static sym_status write_header(writer *w, const sym_actstore_record *r, sym_error *err)
{
    actstore_header h = {
        .version = SYM_ACTSTORE_VERSION,
        .kind = (uint32_t)r->kind,
        .layer = r->layer,
        .source = r->source,
        .d_ff = r->d_ff,
        .tokens = r->tokens,
        .rows = r->rows,
        .sketch_seed = r->sketch_seed,
        .payload_bytes = actstore_payload_bytes(r->d_ff, r->rows),
        .compressed_bytes = w->compressed_bytes,
        .payload_xxh3 = XXH3_64bits_digest(w->hash),
    };
    unsigned char bytes[SYM_ACTSTORE_HEADER_BYTES];
    actstore_header_encode(&h, bytes);
    if (pwrite(w->fd, bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes)
        return sym_error_set(err, SYM_ERR_IO, "%s: write failed: %s", w->path,
                             strerror(errno));
    return SYM_OK;
}

/* Flushes the directory entry of path so that the rename survives a power loss. */
static sym_status sync_parent(const char *path, sym_error *err)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0 || fsync(fd) != 0) {
        int saved = errno;
        if (fd >= 0)
            close(fd);
        return sym_error_set(err, SYM_ERR_IO, "%s: fsync failed: %s", dir, strerror(saved));
    }
    close(fd);
    return SYM_OK;
}

static sym_status writer_open(writer *w, char *tmp_path, int zstd_level, sym_error *err)
{
    w->fd = mkstemp(tmp_path);
    if (w->fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot create: %s", tmp_path,
                             strerror(errno));
    w->cctx = ZSTD_createCCtx();
    w->hash = XXH3_createState();
    w->out_size = ZSTD_CStreamOutSize();
    w->out = malloc(w->out_size);
    if (w->cctx == NULL || w->hash == NULL || w->out == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: cannot allocate the compressor",
                             w->path);
    XXH3_64bits_reset(w->hash);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, zstd_level);

    /* Room for the header, written last once the sizes and checksum are known. */
    unsigned char zeros[SYM_ACTSTORE_HEADER_BYTES] = {0};
    return write_all(w, zeros, sizeof zeros, err);
}

static void writer_close(writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    ZSTD_freeCCtx(w->cctx);
    XXH3_freeState(w->hash);
    free(w->out);
}

sym_status sym_actstore_write(const char *path, const sym_actstore_record *record,
                              int zstd_level, sym_error *err)
{
    sym_status status = check_record(path, record, err);
    if (status != SYM_OK)
        return status;
    char tmp_path[PATH_MAX];
    if ((size_t)snprintf(tmp_path, sizeof tmp_path, "%s.tmp.XXXXXX", path) >= sizeof tmp_path)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: path too long", path);

    writer w = {.path = tmp_path, .fd = -1};
    status = writer_open(&w, tmp_path, zstd_level, err);
    if (status == SYM_OK)
        status = write_payload(&w, record, err);
    if (status == SYM_OK)
        status = write_header(&w, record, err);
    if (status == SYM_OK && fsync(w.fd) != 0)
        status = sym_error_set(err, SYM_ERR_IO, "%s: fsync failed: %s", tmp_path,
                               strerror(errno));
    bool created = w.fd >= 0;
    writer_close(&w);

    if (status == SYM_OK && rename(tmp_path, path) != 0)
        status = sym_error_set(err, SYM_ERR_IO, "%s: rename from %s failed: %s", path,
                               tmp_path, strerror(errno));
    if (status != SYM_OK) {
        if (created)
            unlink(tmp_path);
        return status;
    }
    return sync_parent(path, err);
}
