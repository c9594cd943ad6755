/* Activation statistics files: round trip of both record kinds, rejection of flipped
 * bytes, truncation, trailing bytes, a wrong version and hostile sizes, and atomic
 * replacement when the writer is killed part way. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "symphony/actstore.h"
#include "testlib.h"

static const char *dir;

static void make_record(sym_actstore_record *r, sym_actstore_kind kind, uint64_t d_ff,
                        uint64_t rows, float base)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->layer = 3;
    r->source = 2;
    r->d_ff = d_ff;
    r->tokens = 1234;
    r->rows = rows;
    r->sketch_seed = 77;
    r->mean = malloc(d_ff * sizeof(double));
    r->std = malloc(d_ff * sizeof(double));
    r->matrix = malloc(rows * d_ff * sizeof(float));
    if (r->mean == NULL || r->std == NULL || r->matrix == NULL)
        abort();
    for (uint64_t j = 0; j < d_ff; j++) {
        r->mean[j] = sin((double)j) * 1e3;
        r->std[j] = j % 5 == 0 ? 0 : 1.0 / (1 + (double)j);
    }
    for (uint64_t i = 0; i < rows * d_ff; i++)
        r->matrix[i] = base + (float)(i % 1000) * 0.001f + (float)(i / 1000);
}

static int records_equal(const sym_actstore_record *a, const sym_actstore_record *b)
{
    return a->kind == b->kind && a->layer == b->layer && a->source == b->source &&
           a->d_ff == b->d_ff && a->tokens == b->tokens && a->rows == b->rows &&
           a->sketch_seed == b->sketch_seed &&
           memcmp(a->mean, b->mean, a->d_ff * sizeof(double)) == 0 &&
           memcmp(a->std, b->std, a->d_ff * sizeof(double)) == 0 &&
           memcmp(a->matrix, b->matrix, a->rows * a->d_ff * sizeof(float)) == 0;
}

static unsigned char *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        abort();
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc(*size + 16);
    if (bytes == NULL || fread(bytes, 1, *size, f) != *size)
        abort();
    fclose(f);
    return bytes;
}

static void spill(const char *path, const unsigned char *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(bytes, 1, size, f) != size)
        abort();
    fclose(f);
}

/* Reads path expecting status and a message that names the file and contains needle. */
static void expect_reject(const char *path, uint64_t max_payload, sym_status expected,
                          const char *needle)
{
    sym_actstore_record r;
    sym_error err;
    sym_error_clear(&err);
    sym_status status = sym_actstore_read(path, max_payload, &r, &err);
    CHECKF(status == expected, "%s: status %s, expected %s (%s)", needle,
           sym_status_str(status), sym_status_str(expected), err.message);
    CHECKF(strstr(err.message, path) != NULL, "message does not name the file: %s",
           err.message);
    CHECKF(strstr(err.message, needle) != NULL, "message lacks '%s': %s", needle, err.message);
    CHECK(r.mean == NULL && r.matrix == NULL);
}

static void test_round_trip(void)
{
    char path[512];
    sym_actstore_record out, in;
    sym_error err;
    sym_actstore_kind kinds[2] = {SYM_ACTSTORE_ZSCORES, SYM_ACTSTORE_CORRELATION};
    for (int k = 0; k < 2; k++) {
        uint64_t d_ff = 172, rows = kinds[k] == SYM_ACTSTORE_ZSCORES ? 301 : 172;
        snprintf(path, sizeof path, "%s/round-%d.acts", dir, k);
        make_record(&out, kinds[k], d_ff, rows, 0.5f);
        CHECK(sym_actstore_write(path, &out, 3, &err) == SYM_OK);
        CHECKF(sym_actstore_read(path, 0, &in, &err) == SYM_OK, "%s", err.message);
        CHECK(records_equal(&out, &in));
        sym_actstore_record_free(&in);
        sym_actstore_record_free(&out);
    }

    make_record(&out, SYM_ACTSTORE_CORRELATION, 8, 9, 0);
    CHECK(sym_actstore_write(path, &out, 0, &err) == SYM_ERR_INVALID);
    sym_actstore_record_free(&out);

    /* No temporary file is left behind. */
    DIR *d = opendir(dir);
    struct dirent *entry;
    size_t leftovers = 0;
    while ((entry = readdir(d)) != NULL)
        leftovers += strstr(entry->d_name, ".tmp.") != NULL;
    closedir(d);
    CHECK(leftovers == 0);
}

/* Rewrites the header checksum after a deliberate header edit. */
static void rehash_header(unsigned char *bytes)
{
    uint64_t h = XXH3_64bits(bytes, 80);
    for (int i = 0; i < 8; i++)
        bytes[80 + i] = (unsigned char)(h >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void test_corruption(void)
{
    char good[512], bad[512];
    snprintf(good, sizeof good, "%s/good.acts", dir);
    snprintf(bad, sizeof bad, "%s/bad.acts", dir);
    sym_actstore_record r;
    sym_error err;
    make_record(&r, SYM_ACTSTORE_ZSCORES, 64, 50, 1);
    CHECK(sym_actstore_write(good, &r, 1, &err) == SYM_OK);
    sym_actstore_record_free(&r);
    size_t size;
    unsigned char *bytes = slurp(good, &size);
    unsigned char *copy = malloc(size + 16);

    /* A flipped bit in every payload position class: start, middle, end. */
    size_t offsets[3] = {88, 88 + (size - 88) / 2, size - 1};
    for (int i = 0; i < 3; i++) {
        memcpy(copy, bytes, size);
        copy[offsets[i]] ^= 0x10;
        spill(bad, copy, size);
        expect_reject(bad, 0, SYM_ERR_CHECKSUM, "payload checksum");
    }

    /* A flipped byte in the header's layer field. */
    memcpy(copy, bytes, size);
    copy[16] ^= 1;
    spill(bad, copy, size);
    expect_reject(bad, 0, SYM_ERR_CHECKSUM, "header checksum");

    memcpy(copy, bytes, size);
    copy[0] = 'X';
    spill(bad, copy, size);
    expect_reject(bad, 0, SYM_ERR_FORMAT, "bad magic");

    memcpy(copy, bytes, size);
    copy[8] = 2;
    rehash_header(copy);
    spill(bad, copy, size);
    expect_reject(bad, 0, SYM_ERR_FORMAT, "version 2; expected 1");

    spill(bad, bytes, size - 7);
    expect_reject(bad, 0, SYM_ERR_FORMAT, "truncated or extended");
    spill(bad, bytes, 40);
    expect_reject(bad, 0, SYM_ERR_FORMAT, "truncated");
    memcpy(copy, bytes, size);
    memset(copy + size, 0, 16);
    spill(bad, copy, size + 16);
    expect_reject(bad, 0, SYM_ERR_FORMAT, "truncated or extended");

    /* Hostile sizes with a valid header checksum: rejected before any allocation. */
    memcpy(copy, bytes, size);
    put_u64(copy + 24, (uint64_t)1 << 40);
    rehash_header(copy);
    spill(bad, copy, size);
    expect_reject(bad, 0, SYM_ERR_LIMIT, "expected d_ff 1 to");

    memcpy(copy, bytes, size);
    put_u64(copy + 56, 999);
    rehash_header(copy);
    spill(bad, copy, size);
    expect_reject(bad, 0, SYM_ERR_FORMAT, "payload of 999 bytes");

    expect_reject(good, 1000, SYM_ERR_LIMIT, "exceeds the limit of 1000");

    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.acts", dir);
    expect_reject(missing, 0, SYM_ERR_NOT_FOUND, "cannot open");
    free(bytes);
    free(copy);
}

/* A payload whose zstd frame decodes to fewer bytes than the header gives. */
static void test_short_frame(void)
{
    char small[512], large[512];
    snprintf(small, sizeof small, "%s/small.acts", dir);
    snprintf(large, sizeof large, "%s/large.acts", dir);
    sym_actstore_record r;
    sym_error err;
    make_record(&r, SYM_ACTSTORE_ZSCORES, 16, 10, 0);
    CHECK(sym_actstore_write(small, &r, 1, &err) == SYM_OK);
    sym_actstore_record_free(&r);

    /* Claim 11 rows over the 10-row frame, with consistent sizes and checksums. */
    size_t size;
    unsigned char *bytes = slurp(small, &size);
    put_u64(bytes + 40, 11);
    put_u64(bytes + 56, 2 * 8 * 16 + 4 * 11 * 16);
    rehash_header(bytes);
    spill(large, bytes, size);
    expect_reject(large, 0, SYM_ERR_FORMAT, "fewer bytes than the header gives");
    free(bytes);
}

/* Kills a child while it replaces a file; the file must read as the old or the new one. */
static void test_killed_writer(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/atomic.acts", dir);
    sym_actstore_record old_record, new_record, in;
    sym_error err;
    make_record(&old_record, SYM_ACTSTORE_ZSCORES, 1024, 2048, 1);
    make_record(&new_record, SYM_ACTSTORE_ZSCORES, 1024, 2048, 2);
    CHECK(sym_actstore_write(path, &old_record, 1, &err) == SYM_OK);

    size_t saw_old = 0, saw_new = 0;
    for (int attempt = 0; attempt < 6; attempt++) {
        CHECK(sym_actstore_write(path, &old_record, 1, &err) == SYM_OK);
        pid_t pid = fork();
        if (pid == 0)
            _exit(sym_actstore_write(path, &new_record, 3, NULL) == SYM_OK ? 0 : 1);
        struct timespec pause = {0, 3000000L * attempt * attempt};
        nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);

        CHECKF(sym_actstore_read(path, 0, &in, &err) == SYM_OK, "after kill %d: %s", attempt,
               err.message);
        int is_old = records_equal(&in, &old_record);
        int is_new = records_equal(&in, &new_record);
        CHECKF(is_old || is_new, "after kill %d the file is neither record", attempt);
        saw_old += is_old;
        saw_new += is_new;
        sym_actstore_record_free(&in);
    }
    printf("killed writers: %zu left the old file, %zu the new one\n", saw_old, saw_new);
    sym_actstore_record_free(&old_record);
    sym_actstore_record_free(&new_record);
}

int main(void)
{
    dir = test_tmpdir("align-store");
    test_round_trip();
    test_corruption();
    test_short_frame();
    test_killed_writer();
    return test_finish("test_align_store");
}
