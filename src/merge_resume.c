/* Resume checks of journaled tensors.
 *
 * Every journal record is appended only after an fdatasync of the tensor bytes it
 * describes, so after a kill or a power loss the journaled bytes are already on disk. What
 * a resume still has to catch is damage from outside the merge: a shard file truncated or
 * replaced, or bytes overwritten by another program or a faulty disk. The quick check
 * compares each shard's size and a sample of each tensor (about 32 KiB); the full check
 * re-hashes every journaled byte. `verify` re-hashes every byte of the finished output
 * against the manifest in either case.
 */
#include "merge_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

/* Seeded blocks between the first and the last block, one per stretch. */
#define SEEDED_REGIONS (SYM_SAMPLE_REGIONS - 2)

void sym_sample_init(sym_sample *sample, const char *name, uint64_t nbytes)
{
    const uint64_t block = SYM_SAMPLE_BLOCK;
    memset(sample, 0, sizeof *sample);
    if (nbytes <= SYM_SAMPLE_REGIONS * block) {
        sample->n_regions = 1;
        sample->length[0] = nbytes;
        return;
    }

    /* The stretch [block, nbytes - block) is split into SEEDED_REGIONS equal parts, each
     * at least one block long because nbytes > SYM_SAMPLE_REGIONS blocks. */
    uint64_t seed = XXH3_64bits(name, strlen(name)) ^ nbytes;
    uint64_t stretch = (nbytes - 2 * block) / SEEDED_REGIONS;
    sample->start[0] = 0;
    for (size_t k = 0; k < SEEDED_REGIONS; k++) {
        uint64_t key = k;
        uint64_t h = XXH3_64bits_withSeed(&key, sizeof key, seed);
        sample->start[k + 1] = block + k * stretch + h % (stretch - block + 1);
    }
    sample->start[SYM_SAMPLE_REGIONS - 1] = nbytes - block;
    for (size_t r = 0; r < SYM_SAMPLE_REGIONS; r++)
        sample->length[r] = block;
    sample->n_regions = SYM_SAMPLE_REGIONS;
}

void sym_sample_feed(sym_sample *sample, uint64_t position, const uint8_t *data, size_t size)
{
    uint64_t end = position + size;
    size_t slot = 0;
    for (size_t r = 0; r < sample->n_regions; r++) {
        uint64_t from = sample->start[r];
        uint64_t to = from + sample->length[r];
        uint64_t lo = from > position ? from : position;
        uint64_t hi = to < end ? to : end;
        if (lo < hi)
            memcpy(sample->bytes + slot + (lo - from), data + (lo - position), hi - lo);
        slot += (size_t)sample->length[r];
    }
}

uint64_t sym_sample_digest(const sym_sample *sample)
{
    size_t total = 0;
    for (size_t r = 0; r < sample->n_regions; r++)
        total += (size_t)sample->length[r];
    return XXH3_64bits(sample->bytes, total);
}

static sym_status pread_all(int fd, uint8_t *buf, size_t size, uint64_t offset,
                            const char *name, sym_error *err)
{
    for (size_t done = 0; done < size;) {
        ssize_t n = pread(fd, buf + done, size - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sym_error_set(err, SYM_ERR_IO, "tensor '%s': reading it back failed at "
                                 "offset %llu: %s", name, (unsigned long long)(offset + done),
                                 n < 0 ? strerror(errno) : "unexpected end of file");
        done += (size_t)n;
    }
    return SYM_OK;
}

static sym_status hash_sample(int fd, const sym_journal_record *rec, uint64_t *hash,
                              sym_error *err)
{
    sym_sample sample;
    sym_sample_init(&sample, rec->name, rec->length);
    size_t slot = 0;
    for (size_t r = 0; r < sample.n_regions; r++) {
        sym_status s = pread_all(fd, sample.bytes + slot, (size_t)sample.length[r],
                                 rec->offset + sample.start[r], rec->name, err);
        if (s != SYM_OK)
            return s;
        slot += (size_t)sample.length[r];
    }
    *hash = sym_sample_digest(&sample);
    return SYM_OK;
}

static sym_status hash_whole(int fd, const sym_journal_record *rec, uint64_t *hash,
                             sym_error *err)
{
    XXH3_state_t *state = XXH3_createState();
    if (state == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "out of memory");
    XXH3_64bits_reset(state);
    /* Read the whole range ahead, not 64 KiB at a time, and leave no cache behind: a
     * resume checks every journaled tensor once. */
    (void)posix_fadvise(fd, (off_t)rec->offset, (off_t)rec->length, POSIX_FADV_WILLNEED);
    uint8_t buf[65536];
    sym_status s = SYM_OK;
    for (uint64_t done = 0; done < rec->length && s == SYM_OK;) {
        uint64_t left = rec->length - done;
        size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
        s = pread_all(fd, buf, want, rec->offset + done, rec->name, err);
        if (s == SYM_OK)
            XXH3_64bits_update(state, buf, want);
        done += want;
    }
    *hash = XXH3_64bits_digest(state);
    XXH3_freeState(state);
    (void)posix_fadvise(fd, (off_t)rec->offset, (off_t)rec->length, POSIX_FADV_DONTNEED);
    return s;
}

sym_status sym_resume_check_tensor(int fd, uint64_t file_size, const sym_journal_record *rec,
                                   sym_resume_check mode, bool *intact, sym_error *err)
{
    *intact = false;
    if (rec->offset > file_size || rec->length > file_size - rec->offset)
        return SYM_OK;
    uint64_t hash;
    if (mode == SYM_RESUME_CHECK_QUICK && rec->has_sample) {
        sym_status s = hash_sample(fd, rec, &hash, err);
        *intact = s == SYM_OK && hash == rec->sample_xxh3;
        return s;
    }
    sym_status s = hash_whole(fd, rec, &hash, err);
    *intact = s == SYM_OK && hash == rec->xxh3;
    return s;
}
