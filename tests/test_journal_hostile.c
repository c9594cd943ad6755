/* The merge journal reader on hostile records: a record whose checksum is valid but whose
 * name contains a NUL byte ends the list like a torn record, and the fuzzer input that
 * found it (fixtures/bad/journal/nul-in-name.fuzz) yields only names without NUL. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "merge_internal.h"
#include "testlib.h"

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

/* Lays out one record with a correct checksum at p; returns its length. */
static size_t make_record(uint8_t *p, const char *name, size_t name_len, uint64_t offset)
{
    put_u32(p, 0x314a5953u); /* "SYJ1" */
    put_u32(p + 4, (uint32_t)name_len);
    put_u64(p + 8, offset);
    put_u64(p + 16, 64);
    put_u64(p + 24, 0x1234);
    memcpy(p + 32, name, name_len);
    put_u64(p + 32 + name_len, XXH3_64bits(p, 32 + name_len));
    return 32 + name_len + 8;
}

static void write_bytes(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f == NULL)
        return;
    CHECK(fwrite(data, 1, size, f) == size);
    fclose(f);
}

static void check_nul_record_dropped(const char *dir)
{
    uint8_t data[512];
    size_t first = make_record(data, "model.norm.weight", 17, 0);
    static const char with_nul[] = "model.norm.weight\0tail";
    size_t second = make_record(data + first, with_nul, sizeof with_nul - 1, 64);
    size_t third = make_record(data + first + second, "lm_head.weight", 14, 128);
    char path[4096];
    snprintf(path, sizeof path, "%s/journal-nul", dir);
    write_bytes(path, data, first + second + third);

    sym_journal journal = {.fd = -1};
    sym_journal_record *records = NULL;
    size_t n = 0;
    sym_error err;
    CHECK(sym_journal_open(&journal, path, &records, &n, &err) == SYM_OK);
    CHECKF(n == 1, "%zu records, expected 1", n);
    if (n >= 1)
        CHECK(strcmp(records[0].name, "model.norm.weight") == 0);
    sym_journal_records_free(records, n);
    sym_journal_close(&journal);

    /* The bad record and everything after it are cut off. */
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECKF((size_t)st.st_size == first, "journal is %lld bytes, expected %zu",
           (long long)st.st_size, first);
}

/* Replays the fuzzer input as fuzz_journal does: the first byte odd means the record
 * checksums of the rest are recomputed. */
static void check_fuzz_input(const char *dir)
{
    char input[4096];
    snprintf(input, sizeof input, "%s/fixtures/bad/journal/nul-in-name.fuzz", test_top());
    FILE *f = fopen(input, "rb");
    CHECKF(f != NULL, "cannot open %s", input);
    if (f == NULL)
        return;
    static uint8_t data[65536];
    size_t size = fread(data, 1, sizeof data, f);
    fclose(f);
    CHECKF(size > 41, "the fuzzer input has only %zu bytes", size);
    CHECK(data[0] & 1);
    if (size <= 41)
        return;
    uint8_t *p = data + 1;
    size--;
    for (size_t pos = 0; size - pos >= 40;) {
        uint32_t name_len = (uint32_t)p[pos + 4] | (uint32_t)p[pos + 5] << 8 |
                            (uint32_t)p[pos + 6] << 16 | (uint32_t)p[pos + 7] << 24;
        if (name_len > size - pos - 40)
            break;
        put_u64(p + pos + 32 + name_len, XXH3_64bits(p + pos, 32 + name_len));
        pos += 32 + name_len + 8;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/journal-fuzz", dir);
    write_bytes(path, p, size);

    sym_journal journal = {.fd = -1};
    sym_journal_record *records = NULL;
    size_t n = 0;
    sym_error err;
    CHECK(sym_journal_open(&journal, path, &records, &n, &err) == SYM_OK);
    for (size_t i = 0; i < n; i++)
        CHECKF(records[i].name[0] != '\0', "record %zu has an empty name", i);
    sym_journal_records_free(records, n);
    sym_journal_close(&journal);
}

int main(void)
{
    const char *dir = test_tmpdir("journal");
    check_nul_record_dropped(dir);
    check_fuzz_input(dir);
    return test_finish("test_journal_hostile");
}
