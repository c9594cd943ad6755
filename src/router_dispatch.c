/* The router kernel table of each SIMD variant. The CPU check is the elementwise kernels'
 * (sym_kernels_get), so both tables always agree on what this machine supports. */
#include "router_internal.h"

static const sym_router_kernels *const router_tables[SYM_SIMD_VARIANT_COUNT] = {
    [SYM_SIMD_SCALAR] = &sym_router_kernels_scalar,
    [SYM_SIMD_AVX2] = &sym_router_kernels_avx2,
    [SYM_SIMD_AVX512] = &sym_router_kernels_avx512,
};

sym_status sym_router_kernels_get(sym_simd_variant variant,
                                  const sym_router_kernels **kernels, sym_error *err)
{
    const sym_kernels *elementwise;
    sym_status status = sym_kernels_get(variant, &elementwise, err);
    if (status != SYM_OK)
        return status;
    *kernels = router_tables[variant];
    return SYM_OK;
}
