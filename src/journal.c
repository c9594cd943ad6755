/* The merge journal: an append-only file of completed tensors.
 *
 * Record layout, little-endian: magic "SYJ2" (4 bytes), name length (u32), offset (u64),
 * length (u64), xxh3 of the tensor bytes (u64) and xxh3 of the tensor's sampled bytes
 * (u64, see sym_sample_init). Then come the name and the xxh3-64 of everything before it
 * in the record (u64). Records with magic "SYJ1", written by earlier versions, lack the sample field. A
 * record is trusted only when its own checksum matches, so a record torn by a crash is
 * detected and dropped.
 */
#include "merge_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

static bool kill_with_interrupt(void)
{
    const char *name = getenv("SYMPHONY_TEST_KILL_SIGNAL");
    return name != NULL && strcmp(name, "INT") == 0;
}

#define RECORD_MAGIC_V1 0x314a5953u /* "SYJ1" */
#define RECORD_MAGIC 0x324a5953u    /* "SYJ2" */
#define RECORD_FIXED_V1 32u         /* magic, name length, offset, length, xxh3 */
#define RECORD_FIXED 40u            /* the same and the sample's xxh3 */
#define MAX_NAME 4096u
/* A record is at most 4144 bytes, so this allows about 60,000 tensors of the longest names,
 * far more than any Mixtral-style plan has. */
#define MAX_JOURNAL_BYTES ((uint64_t)256 << 20)

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Parses the record at data[0..size); returns its total length, or 0 when it is torn or
 * corrupt. */
static size_t parse_record(const uint8_t *data, size_t size, sym_journal_record *rec)
{
    if (size < RECORD_FIXED_V1 + 8)
        return 0;
    uint32_t magic = get_u32(data);
    if (magic != RECORD_MAGIC && magic != RECORD_MAGIC_V1)
        return 0;
    size_t fixed = magic == RECORD_MAGIC ? RECORD_FIXED : RECORD_FIXED_V1;
    uint32_t name_len = get_u32(data + 4);
    if (name_len == 0 || name_len > MAX_NAME || size < fixed + name_len + 8)
        return 0;
    size_t body = fixed + name_len;
    if (XXH3_64bits(data, body) != get_u64(data + body))
        return 0;
    /* Tensor names never contain NUL, and strndup would cut the name there. */
    if (memchr(data + fixed, '\0', name_len) != NULL)
        return 0;
    rec->name = strndup((const char *)data + fixed, name_len);
    if (rec->name == NULL)
        return 0;
    rec->offset = get_u64(data + 8);
    rec->length = get_u64(data + 16);
    rec->xxh3 = get_u64(data + 24);
    rec->has_sample = magic == RECORD_MAGIC;
    rec->sample_xxh3 = rec->has_sample ? get_u64(data + 32) : 0;
    return body + 8;
}

static sym_status read_whole(int fd, const char *path, uint8_t **data, size_t *size,
                             sym_error *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: stat failed: %s", path, strerror(errno));
    if ((uint64_t)st.st_size > MAX_JOURNAL_BYTES)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: the journal is %lld bytes, more than the limit of %llu; "
                             "rerun with --restart to start over", path, (long long)st.st_size,
                             (unsigned long long)MAX_JOURNAL_BYTES);
    *size = (size_t)st.st_size;
    *data = malloc(*size ? *size : 1);
    if (*data == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    size_t done = 0;
    while (done < *size) {
        ssize_t n = pread(fd, *data + done, *size - done, (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: read failed: %s", path,
                                 n < 0 ? strerror(errno) : "unexpected end of file");
        done += (size_t)n;
    }
    return SYM_OK;
}

static sym_status parse_records(const uint8_t *data, size_t size, sym_journal_record **records,
                                size_t *n_records, size_t *valid_end, const char *path,
                                sym_error *err)
{
    size_t capacity = 0, pos = 0;
    *records = NULL;
    *n_records = 0;
    for (;;) {
        sym_journal_record rec;
        size_t len = parse_record(data + pos, size - pos, &rec);
        if (len == 0)
            break;
        if (*n_records == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            sym_journal_record *grown = realloc(*records, capacity * sizeof *grown);
            if (grown == NULL) {
                free(rec.name);
                return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
            }
            *records = grown;
        }
        (*records)[(*n_records)++] = rec;
        pos += len;
    }
    *valid_end = pos;
    return SYM_OK;
}

sym_status sym_journal_open(sym_journal *journal, const char *path, sym_journal_record **records,
                            size_t *n_records, sym_error *err)
{
    *records = NULL;
    *n_records = 0;
    journal->path = strdup(path);
    journal->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (journal->path == NULL || journal->fd < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot open the journal: %s", path,
                             strerror(errno));
    uint8_t *data = NULL;
    size_t size = 0, valid_end = 0;
    sym_status s = read_whole(journal->fd, path, &data, &size, err);
    if (s == SYM_OK)
        s = parse_records(data, size, records, n_records, &valid_end, path, err);
    free(data);
    if (s != SYM_OK)
        return s;
    if (valid_end != size && ftruncate(journal->fd, (off_t)valid_end) != 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: cannot cut the torn record: %s", path,
                             strerror(errno));
    if (lseek(journal->fd, (off_t)valid_end, SEEK_SET) < 0)
        return sym_error_set(err, SYM_ERR_IO, "%s: seek failed: %s", path, strerror(errno));
    return SYM_OK;
}

static sym_status write_all(int fd, const uint8_t *p, size_t size, const char *path,
                            sym_error *err)
{
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, p + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sym_error_set(err, SYM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        done += (size_t)n;
    }
    return SYM_OK;
}

sym_status sym_journal_append(sym_journal *journal, const char *name, uint64_t offset,
                              uint64_t length, uint64_t xxh3, uint64_t sample_xxh3,
                              sym_error *err)
{
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > MAX_NAME)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: tensor name of %zu bytes",
                             journal->path, name_len);
    size_t size = RECORD_FIXED + name_len + 8;
    uint8_t *rec = malloc(size);
    if (rec == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", journal->path);
    put_u32(rec, RECORD_MAGIC);
    put_u32(rec + 4, (uint32_t)name_len);
    put_u64(rec + 8, offset);
    put_u64(rec + 16, length);
    put_u64(rec + 24, xxh3);
    put_u64(rec + 32, sample_xxh3);
    memcpy(rec + RECORD_FIXED, name, name_len);
    put_u64(rec + RECORD_FIXED + name_len, XXH3_64bits(rec, RECORD_FIXED + name_len));

    if (sym_kill_point_reached()) {
        /* A torn record, as a crash in the middle of the write would leave it. */
        if (!kill_with_interrupt()) {
            (void)write_all(journal->fd, rec, size / 2, journal->path, err);
            (void)fdatasync(journal->fd);
        }
        sym_kill_now();
    }
    sym_status s = write_all(journal->fd, rec, size, journal->path, err);
    free(rec);
    if (s == SYM_OK && fdatasync(journal->fd) != 0)
        s = sym_error_set(err, SYM_ERR_IO, "%s: fdatasync failed: %s", journal->path,
                          strerror(errno));
    return s;
}

void sym_journal_close(sym_journal *journal)
{
    if (journal->fd >= 0)
        close(journal->fd);
    free(journal->path);
    journal->fd = -1;
    journal->path = NULL;
}

void sym_journal_records_free(sym_journal_record *records, size_t n_records)
{
    for (size_t i = 0; i < n_records; i++)
        free(records[i].name);
    free(records);
}

static long kill_target = -1;
static long kill_count;

bool sym_kill_point_reached(void)
{
    if (kill_target < 0) {
        const char *text = getenv("SYMPHONY_TEST_KILL_AT");
        kill_target = text != NULL ? atol(text) : 0;
    }
    if (kill_target == 0)
        return false;
    return ++kill_count == kill_target;
}

void sym_kill_point(void)
{
    if (sym_kill_point_reached())
        sym_kill_now();
}

void sym_kill_now(void)
{
    if (kill_with_interrupt()) {
        raise(SIGINT);
        return;
    }
    raise(SIGKILL);
    _exit(137);
}
