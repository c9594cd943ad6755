/* sym_find_nonfinite against a plain isfinite scan: lengths around the 1024-value block,
 * NaN, +Inf and -Inf at every kind of position, several hits, and the largest finite
 * values and subnormals, which must not count. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "symphony/fusion.h"
#include "testlib.h"

static size_t brute_force(const float *values, size_t count)
{
    for (size_t j = 0; j < count; j++)
        if (!isfinite(values[j]))
            return j;
    return count;
}

static uint64_t next_random(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

static void fill_finite(float *values, size_t count, uint64_t *state)
{
    const float extremes[] = {FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, -1e-45f, 0.0f, -0.0f};
    for (size_t j = 0; j < count; j++) {
        uint64_t r = next_random(state);
        if (r % 16 == 0)
            values[j] = extremes[r / 16 % (sizeof extremes / sizeof extremes[0])];
        else
            values[j] = (float)((double)r / 4294967296.0 - 0.25) * 1e3f;
    }
}

int main(void)
{
    const size_t lengths[] = {0, 1, 7, 1023, 1024, 1025, 2048, 2049, 5000};
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    enum { MAX_LEN = 5000 };
    static float values[MAX_LEN];
    uint64_t state = 42;

    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        size_t count = lengths[l];
        fill_finite(values, count, &state);
        CHECKF(sym_find_nonfinite(values, count) == count, "all finite, length %zu", count);

        /* One bad value at the edges of blocks and at random positions. */
        size_t positions[] = {0, 1, 1022, 1023, 1024, 1025, 2047, 2048, count - 1,
                              count / 2, (size_t)next_random(&state) % (count ? count : 1)};
        for (size_t p = 0; p < sizeof positions / sizeof positions[0]; p++) {
            size_t at = positions[p];
            if (at >= count)
                continue;
            for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
                float keep = values[at];
                values[at] = bad[b];
                size_t got = sym_find_nonfinite(values, count);
                CHECKF(got == at, "length %zu, %g at %zu: got %zu", count, (double)bad[b], at,
                       got);
                values[at] = keep;
            }
        }

        /* Several bad values: the first one is reported. */
        if (count > 3) {
            values[count - 1] = NAN;
            values[count / 3] = -INFINITY;
            size_t expected = brute_force(values, count);
            CHECKF(sym_find_nonfinite(values, count) == expected,
                   "two bad values, length %zu: expected %zu", count, expected);
        }
    }
    return test_finish("test_find_nonfinite");
}
