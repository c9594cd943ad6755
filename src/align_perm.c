/* Permutations of FFN neurons: checking, inverting and applying them to weights. */
#include "symphony/align.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

sym_status sym_align_check_perm(const int32_t *perm, size_t n, sym_error *err)
{
    bool *seen = calloc(n != 0 ? n : 1, sizeof *seen);
    if (seen == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "permutation: cannot allocate %zu flags", n);
    sym_status status = SYM_OK;
    for (size_t i = 0; i < n && status == SYM_OK; i++) {
        if (perm[i] < 0 || (size_t)perm[i] >= n)
            status = sym_error_set(err, SYM_ERR_INVALID,
                                   "permutation entry %zu is %d; expected 0 to %zu", i,
                                   (int)perm[i], n - 1);
        else if (seen[perm[i]])
            status = sym_error_set(err, SYM_ERR_INVALID,
                                   "permutation entry %zu repeats %d; expected each of 0 to "
                                   "%zu once",
                                   i, (int)perm[i], n - 1);
        else
            seen[perm[i]] = true;
    }
    free(seen);
    return status;
}

void sym_align_invert_perm(const int32_t *perm, size_t n, int32_t *inverse)
{
    for (size_t i = 0; i < n; i++)
        inverse[perm[i]] = (int32_t)i;
}

/* Moves items of size bytes so that new item i is old item perm[i], following each cycle
 * with one item of scratch. done has n flags, all false on entry. */
static void permute_items(unsigned char *base, size_t n, size_t size, const int32_t *perm,
                          unsigned char *scratch, bool *done)
{
    for (size_t start = 0; start < n; start++) {
        if (done[start])
            continue;
        memcpy(scratch, base + start * size, size);
        size_t i = start;
        for (;;) {
            size_t from = (size_t)perm[i];
            done[i] = true;
            if (from == start) {
                memcpy(base + i * size, scratch, size);
                break;
            }
            memcpy(base + i * size, base + from * size, size);
            i = from;
        }
    }
}

sym_status sym_align_permute_rows(float *w, size_t d_ff, size_t hidden, const int32_t *perm,
                                  sym_error *err)
{
    sym_status status = sym_align_check_perm(perm, d_ff, err);
    if (status != SYM_OK)
        return status;
    size_t row_bytes = hidden * sizeof *w;
    unsigned char *scratch = malloc(row_bytes != 0 ? row_bytes : 1);
    bool *done = calloc(d_ff != 0 ? d_ff : 1, sizeof *done);
    if (scratch == NULL || done == NULL) {
        free(scratch);
        free(done);
        return sym_error_set(err, SYM_ERR_NOMEM, "permute rows: cannot allocate %zu bytes",
                             row_bytes + d_ff);
    }
    permute_items((unsigned char *)w, d_ff, row_bytes, perm, scratch, done);
    free(scratch);
    free(done);
    return SYM_OK;
}

sym_status sym_align_permute_cols(float *w, size_t hidden, size_t d_ff, const int32_t *perm,
                                  sym_error *err)
{
    sym_status status = sym_align_check_perm(perm, d_ff, err);
    if (status != SYM_OK)
        return status;
    float *row = malloc((d_ff != 0 ? d_ff : 1) * sizeof *row);
    if (row == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "permute columns: cannot allocate %zu floats",
                             d_ff);
    for (size_t r = 0; r < hidden; r++) {
        float *dst = w + r * d_ff;
        memcpy(row, dst, d_ff * sizeof *row);
        for (size_t i = 0; i < d_ff; i++)
            dst[i] = row[perm[i]];
    }
    free(row);
    return SYM_OK;
}
