/* Internal to the kernel variants: their tables and the helpers they share. */
#ifndef SYMPHONY_KERNELS_IMPL_H
#define SYMPHONY_KERNELS_IMPL_H

#include <math.h>
#include <stddef.h>

#include "symphony/kernels.h"

extern const sym_kernels sym_kernels_scalar;
extern const sym_kernels sym_kernels_avx2;
extern const sym_kernels sym_kernels_avx512;

/* Lowest and highest arguments that the vector exp handles before clamping: below -104
 * the result rounds to +0, above 89 it overflows to +Inf. */
#define SYM_EXP_ARG_MIN (-104.0f)
#define SYM_EXP_ARG_MAX 89.0f

/* log(sum(exp(x))) for a row whose maximum m is not finite: NaN when m or any element is
 * NaN, else m (+Inf, or -Inf for a row of -Inf). The vector variants reach this rarely. */
static inline float sym_logsumexp_nonfinite(const float *x, size_t n, float m)
{
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            return x[i];
    }
    return m;
}

#endif
