/* Hidden-state cache files (see hcache.h for the layout). */
#include "symphony/hcache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>


static const uint8_t magic[8] = {'S', 'Y', 'M', 'H', 'C', 0, 0, 1};

static uint16_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_value(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

void sym_hcache_round(float *values, size_t count, sym_hcache_dtype dtype)
{
    if (dtype != SYM_HCACHE_BF16)
        return;
    for (size_t i = 0; i < count; i++)
        values[i] = bf16_value(bf16_bits(values[i]));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Packs h into raw payload bytes of the file's dtype. */
static void *pack(const float *h, size_t count, sym_hcache_dtype dtype, size_t *size)
{
    size_t elem = dtype == SYM_HCACHE_BF16 ? 2 : 4;
    uint8_t *raw = malloc(count * elem + 1);
    if (raw == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        if (dtype == SYM_HCACHE_BF16) {
            uint16_t b = bf16_bits(h[i]);
            raw[2 * i] = (uint8_t)b;
            raw[2 * i + 1] = (uint8_t)(b >> 8);
        } else {
            memcpy(raw + 4 * i, &h[i], 4);
        }
    }
    *size = count * elem;
    return raw;
}

static sym_status write_all(int fd, const void *data, size_t size, const char *path,
                            sym_error *err)
{
    const uint8_t *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: write failed: %s", path,
                                 n < 0 ? strerror(errno) : "no progress");
        p += n;
        size -= (size_t)n;
    }
    return SYM_OK;
}

static sym_status write_atomic(const char *path, const uint8_t *header, const void *body,
                               size_t body_size, sym_error *err)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    sym_status s = write_all(fd, header, SYM_HCACHE_HEADER_BYTES, tmp, err);
    if (s == SYM_OK)
        s = write_all(fd, body, body_size, tmp, err);
    if (s == SYM_OK && fdatasync(fd) != 0)
        s = sym_error_set(err, SYM_ERR_IO, "%s: fdatasync failed: %s", tmp, strerror(errno));
    close(fd);
    if (s == SYM_OK && rename(tmp, path) != 0)
        s = sym_error_set(err, SYM_ERR_IO, "%s: cannot rename to %s: %s", tmp, path,
                          strerror(errno));
    if (s != SYM_OK)
        unlink(tmp);
    return s;
}

sym_status sym_hcache_write(const char *path, const float *h, uint64_t rows, uint64_t cols,
                            sym_hcache_dtype dtype, sym_error *err)
{
    size_t raw_size = 0;
    void *raw = pack(h, (size_t)(rows * cols), dtype, &raw_size);
    size_t bound = ZSTD_compressBound(raw_size);
    void *packed = malloc(bound + 1);
    if (raw == NULL || packed == NULL) {
        free(raw);
        free(packed);
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t packed_size = ZSTD_compress(packed, bound, raw, raw_size, 1);
    sym_status s = SYM_OK;
    if (ZSTD_isError(packed_size))
        s = sym_error_set(err, SYM_ERR_IO, "%s: zstd: %s", path,
                          ZSTD_getErrorName(packed_size));
    uint8_t header[SYM_HCACHE_HEADER_BYTES] = {0};
    memcpy(header, magic, sizeof magic);
    header[8] = (uint8_t)dtype;
    put64(header + 16, rows);
    put64(header + 24, cols);
    put64(header + 32, raw_size);
    put64(header + 40, s == SYM_OK ? packed_size : 0);
    put64(header + 48, XXH3_64bits(raw, raw_size));
    put64(header + 56, XXH3_64bits(header, 56));
    if (s == SYM_OK)
        s = write_atomic(path, header, packed, packed_size, err);
    free(raw);
    free(packed);
    return s;
}

static sym_status read_file(const char *path, uint8_t **data, size_t *size, sym_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    sym_status s = SYM_OK;
    long end = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    *data = end >= 0 ? malloc((size_t)end + 1) : NULL;
    if (end < 0 || *data == NULL)
        s = sym_error_set(err, end < 0 ? SYM_ERR_IO : SYM_ERR_NOMEM, "%s: cannot read", path);
    if (s == SYM_OK && (fseek(f, 0, SEEK_SET) != 0 ||
                        fread(*data, 1, (size_t)end, f) != (size_t)end))
        s = sym_error_set(err, SYM_ERR_IO, "%s: read failed", path);
    fclose(f);
    *size = (size_t)end;
    return s;
}

static sym_status check_header(const char *path, const uint8_t *d, size_t size, uint64_t rows,
                               uint64_t cols, sym_error *err)
{
    if (size < SYM_HCACHE_HEADER_BYTES || memcmp(d, magic, sizeof magic) != 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: not a hidden-state cache file", path);
    if (get64(d + 56) != XXH3_64bits(d, 56))
        return sym_error_set(err, SYM_ERR_CHECKSUM, "%s: header checksum mismatch", path);
    uint64_t elem = d[8] == SYM_HCACHE_BF16 ? 2 : d[8] == SYM_HCACHE_F32 ? 4 : 0;
    if (elem == 0)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: unknown dtype %u", path, d[8]);
    if (get64(d + 16) != rows || get64(d + 24) != cols)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: shape [%llu, %llu], expected [%llu, %llu]",
                             path, (unsigned long long)get64(d + 16),
                             (unsigned long long)get64(d + 24), (unsigned long long)rows,
                             (unsigned long long)cols);
    if (get64(d + 32) != rows * cols * elem || get64(d + 40) != size - SYM_HCACHE_HEADER_BYTES)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: sizes do not match the header "
                             "(truncated file?)", path);
    return SYM_OK;
}

static void unpack(const uint8_t *raw, size_t count, int dtype, float *h)
{
    for (size_t i = 0; i < count; i++) {
        if (dtype == SYM_HCACHE_BF16)
            h[i] = bf16_value((uint16_t)(raw[2 * i] | (raw[2 * i + 1] << 8)));
        else
            memcpy(&h[i], raw + 4 * i, 4);
    }
}

sym_status sym_hcache_read(const char *path, float *h, uint64_t rows, uint64_t cols,
                           sym_error *err)
{
    uint8_t *d = NULL, *raw = NULL;
    size_t size = 0;
    sym_status s = read_file(path, &d, &size, err);
    if (s == SYM_OK)
        s = check_header(path, d, size, rows, cols, err);
    size_t raw_size = s == SYM_OK ? (size_t)get64(d + 32) : 0;
    if (s == SYM_OK && (raw = malloc(raw_size + 1)) == NULL)
        s = sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    if (s == SYM_OK) {
        size_t n = ZSTD_decompress(raw, raw_size, d + SYM_HCACHE_HEADER_BYTES,
                                   size - SYM_HCACHE_HEADER_BYTES);
        if (ZSTD_isError(n) || n != raw_size)
            s = sym_error_set(err, SYM_ERR_FORMAT, "%s: corrupt compressed payload", path);
    }
    if (s == SYM_OK && XXH3_64bits(raw, raw_size) != get64(d + 48))
        s = sym_error_set(err, SYM_ERR_CHECKSUM, "%s: payload checksum mismatch", path);
    if (s == SYM_OK)
        unpack(raw, (size_t)(rows * cols), d[8], h);
    free(raw);
    free(d);
    return s;
}
