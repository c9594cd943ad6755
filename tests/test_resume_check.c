/* Resume checks of journaled tensors. The sampled regions are checked against their
 * specification and the sample digest against a brute-force copy of those regions. Journal
 * records must round-trip with their sample hash. sym_resume_check_tensor runs on a file
 * with a byte flipped at known places: the quick check catches damage in its regions and
 * truncation but not a byte outside the regions, which the full check catches. */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "merge_internal.h"
#include "testlib.h"

#define TENSOR_BYTES ((size_t)1 << 20)
#define TENSOR_OFFSET 4096u

static uint64_t next_random(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 11;
}

static bool in_sample(const sym_sample *sample, uint64_t position)
{
    for (size_t r = 0; r < sample->n_regions; r++)
        if (position >= sample->start[r] && position < sample->start[r] + sample->length[r])
            return true;
    return false;
}

static void check_regions(const char *name, uint64_t nbytes)
{
    sym_sample sample;
    sym_sample_init(&sample, name, nbytes);
    const uint64_t block = SYM_SAMPLE_BLOCK;
    if (nbytes <= SYM_SAMPLE_REGIONS * block) {
        CHECK(sample.n_regions == 1);
        CHECK(sample.start[0] == 0);
        CHECKF(sample.length[0] == nbytes, "%llu bytes sampled of %llu",
               (unsigned long long)sample.length[0], (unsigned long long)nbytes);
        return;
    }
    CHECK(sample.n_regions == SYM_SAMPLE_REGIONS);
    CHECK(sample.start[0] == 0);
    CHECK(sample.start[SYM_SAMPLE_REGIONS - 1] == nbytes - block);
    uint64_t stretch = (nbytes - 2 * block) / (SYM_SAMPLE_REGIONS - 2);
    for (size_t r = 0; r < SYM_SAMPLE_REGIONS; r++)
        CHECK(sample.length[r] == block);
    for (size_t k = 0; k + 2 < SYM_SAMPLE_REGIONS; k++) {
        uint64_t start = sample.start[k + 1];
        CHECKF(start >= block + k * stretch, "region %zu of %llu bytes starts at %llu", k,
               (unsigned long long)nbytes, (unsigned long long)start);
        CHECKF(start + block <= block + (k + 1) * stretch, "region %zu of %llu bytes ends at "
               "%llu", k, (unsigned long long)nbytes, (unsigned long long)(start + block));
    }

    /* The same name and size give the same regions; another name other ones, where the
     * stretches leave room to move. */
    sym_sample again, other;
    sym_sample_init(&again, name, nbytes);
    sym_sample_init(&other, "another.weight", nbytes);
    CHECK(memcmp(again.start, sample.start, sizeof sample.start) == 0);
    if (stretch >= 64 * block)
        CHECK(memcmp(other.start, sample.start, sizeof sample.start) != 0);
}

/* Feeds data in blocks of random sizes and compares the digest with the xxh3 of the
 * regions copied out directly. */
static void check_digest(const uint8_t *data, size_t nbytes, uint64_t seed)
{
    sym_sample sample;
    sym_sample_init(&sample, "model.layers.0.mlp.w1", nbytes);
    uint64_t state = seed;
    for (size_t position = 0; position < nbytes;) {
        size_t size = 1 + (size_t)(next_random(&state) % 20000);
        if (size > nbytes - position)
            size = nbytes - position;
        sym_sample_feed(&sample, position, data + position, size);
        position += size;
    }

    static uint8_t expected[SYM_SAMPLE_REGIONS * SYM_SAMPLE_BLOCK];
    size_t total = 0;
    for (size_t r = 0; r < sample.n_regions; r++) {
        memcpy(expected + total, data + sample.start[r], (size_t)sample.length[r]);
        total += (size_t)sample.length[r];
    }
    CHECKF(sym_sample_digest(&sample) == XXH3_64bits(expected, total),
           "digest of %zu bytes fed in random blocks", nbytes);
}

static void check_journal_round_trip(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/journal", dir);
    sym_journal journal = {.fd = -1};
    sym_journal_record *records = NULL;
    size_t n = 0;
    sym_error err;
    CHECK(sym_journal_open(&journal, path, &records, &n, &err) == SYM_OK);
    CHECK(n == 0);
    CHECK(sym_journal_append(&journal, "a.weight", 100, 200, 0x1111, 0x2222, &err) == SYM_OK);
    CHECK(sym_journal_append(&journal, "b.weight", 300, 400, 0x3333, 0x4444, &err) == SYM_OK);
    sym_journal_close(&journal);
    sym_journal_records_free(records, n);

    CHECK(sym_journal_open(&journal, path, &records, &n, &err) == SYM_OK);
    CHECK(n == 2);
    if (n == 2) {
        CHECK(strcmp(records[1].name, "b.weight") == 0);
        CHECK(records[1].offset == 300);
        CHECK(records[1].length == 400);
        CHECK(records[1].xxh3 == 0x3333);
        CHECK(records[1].has_sample);
        CHECK(records[1].sample_xxh3 == 0x4444);
    }
    sym_journal_close(&journal);
    sym_journal_records_free(records, n);
}

static void flip(int fd, uint64_t offset)
{
    uint8_t byte;
    CHECK(pread(fd, &byte, 1, (off_t)offset) == 1);
    byte ^= 0x10;
    CHECK(pwrite(fd, &byte, 1, (off_t)offset) == 1);
}

static bool check_tensor(int fd, uint64_t file_size, const sym_journal_record *rec,
                         sym_resume_check mode)
{
    bool intact = true;
    sym_error err;
    sym_status s = sym_resume_check_tensor(fd, file_size, rec, mode, &intact, &err);
    CHECKF(s == SYM_OK, "%s", err.message);
    return intact;
}

/* Flips the byte at position of the tensor, checks both modes, and flips it back. */
static void check_flip(int fd, const sym_journal_record *rec, uint64_t position,
                       bool quick_catches)
{
    uint64_t file_size = TENSOR_OFFSET + TENSOR_BYTES;
    flip(fd, TENSOR_OFFSET + position);
    CHECKF(check_tensor(fd, file_size, rec, SYM_RESUME_CHECK_QUICK) == !quick_catches,
           "quick check, byte %llu flipped", (unsigned long long)position);
    CHECKF(!check_tensor(fd, file_size, rec, SYM_RESUME_CHECK_FULL),
           "full check, byte %llu flipped", (unsigned long long)position);
    flip(fd, TENSOR_OFFSET + position);
}

/* Returns a position in the middle of the tensor that no region covers. */
static uint64_t unsampled_position(const sym_sample *sample)
{
    for (uint64_t p = TENSOR_BYTES / 2; p < TENSOR_BYTES; p++)
        if (!in_sample(sample, p))
            return p;
    return 0;
}

static void check_damage(const char *dir, const uint8_t *data)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/shard", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    CHECK(pwrite(fd, data, TENSOR_BYTES, TENSOR_OFFSET) == (ssize_t)TENSOR_BYTES);

    char name[] = "model.layers.3.mlp.w2";
    sym_sample sample;
    sym_sample_init(&sample, name, TENSOR_BYTES);
    sym_sample_feed(&sample, 0, data, TENSOR_BYTES);
    sym_journal_record rec = {
        .name = name,
        .offset = TENSOR_OFFSET,
        .length = TENSOR_BYTES,
        .xxh3 = XXH3_64bits(data, TENSOR_BYTES),
        .has_sample = true,
        .sample_xxh3 = sym_sample_digest(&sample),
    };
    uint64_t file_size = TENSOR_OFFSET + TENSOR_BYTES;
    CHECK(check_tensor(fd, file_size, &rec, SYM_RESUME_CHECK_QUICK));
    CHECK(check_tensor(fd, file_size, &rec, SYM_RESUME_CHECK_FULL));

    check_flip(fd, &rec, 0, true);
    check_flip(fd, &rec, TENSOR_BYTES - 1, true);
    check_flip(fd, &rec, sample.start[3] + 17, true);
    uint64_t hidden = unsampled_position(&sample);
    CHECK(hidden > 0);
    check_flip(fd, &rec, hidden, false);

    /* A shard that was shorter than the tensor's end fails both checks without a read. */
    CHECK(!check_tensor(fd, file_size - 1, &rec, SYM_RESUME_CHECK_QUICK));
    CHECK(!check_tensor(fd, file_size - 1, &rec, SYM_RESUME_CHECK_FULL));
    CHECK(!check_tensor(fd, TENSOR_OFFSET / 2, &rec, SYM_RESUME_CHECK_QUICK));

    /* A record of the older format has no sample, so the quick check hashes it whole. */
    sym_journal_record old = rec;
    old.has_sample = false;
    old.sample_xxh3 = 0;
    CHECK(check_tensor(fd, file_size, &old, SYM_RESUME_CHECK_QUICK));
    flip(fd, TENSOR_OFFSET + hidden);
    CHECK(!check_tensor(fd, file_size, &old, SYM_RESUME_CHECK_QUICK));
    close(fd);
}

int main(void)
{
    const char *dir = test_tmpdir("resume-check");
    static const uint64_t sizes[] = {
        1, 4096, 8 * 4096, 8 * 4096 + 1, 8 * 4096 + 6, 9 * 4096, 100000, 1 << 20,
        283115520ull, 5ull << 30,
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        check_regions("model.layers.0.mlp.w1", sizes[i]);

    uint8_t *data = malloc(TENSOR_BYTES);
    CHECK(data != NULL);
    if (data == NULL)
        return test_finish("test_resume_check");
    uint64_t state = 42;
    for (size_t i = 0; i < TENSOR_BYTES; i++)
        data[i] = (uint8_t)next_random(&state);
    static const size_t digest_sizes[] = {10, 8 * 4096, 8 * 4096 + 1, 300000, TENSOR_BYTES};
    for (size_t i = 0; i < sizeof digest_sizes / sizeof digest_sizes[0]; i++)
        check_digest(data, digest_sizes[i], 7 + i);

    check_journal_round_trip(dir);
    check_damage(dir, data);
    free(data);
    return test_finish("test_resume_check");
}
