/* Choice of the kernel variant: what the CPU offers (cpuid), what the OS saves on a
 * context switch (XGETBV), and the SYMPHONY_SIMD override. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "simd/kernels_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SYM_HAVE_X86 1
#else
#define SYM_HAVE_X86 0
#endif

static const sym_kernels *const variant_tables[SYM_SIMD_VARIANT_COUNT] = {
    [SYM_SIMD_SCALAR] = &sym_kernels_scalar,
    [SYM_SIMD_AVX2] = &sym_kernels_avx2,
    [SYM_SIMD_AVX512] = &sym_kernels_avx512,
};

const char *sym_simd_variant_str(sym_simd_variant variant)
{
    if ((unsigned)variant >= SYM_SIMD_VARIANT_COUNT)
        return "unknown";
    return variant_tables[variant]->name;
}

#if SYM_HAVE_X86

/* XCR0 state components. AVX2 needs SSE and AVX (the YMM upper halves). AVX-512 also
 * needs the opmask registers and both ZMM halves. */
#define XCR0_YMM_STATE 0x06u
#define XCR0_ZMM_STATE 0xe6u

static uint64_t read_xcr0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* CPU features that the variants need, as cpuid and XGETBV report them. */
typedef struct cpu_features {
    bool osxsave, avx, fma, f16c, avx2;
    bool avx512f, avx512bw, avx512vl, avx512dq;
    uint64_t xcr0;
} cpu_features;

static cpu_features read_cpu_features(void)
{
    cpu_features f = {0};
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return f;
    f.fma = (ecx & bit_FMA) != 0;
    f.osxsave = (ecx & bit_OSXSAVE) != 0;
    f.avx = (ecx & bit_AVX) != 0;
    f.f16c = (ecx & bit_F16C) != 0;
    if (f.osxsave)
        f.xcr0 = read_xcr0();
    if (__get_cpuid_max(0, NULL) < 7 || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return f;
    f.avx2 = (ebx & bit_AVX2) != 0;
    f.avx512f = (ebx & bit_AVX512F) != 0;
    f.avx512dq = (ebx & bit_AVX512DQ) != 0;
    f.avx512bw = (ebx & bit_AVX512BW) != 0;
    f.avx512vl = (ebx & bit_AVX512VL) != 0;
    return f;
}

/* Returns NULL when the CPU and OS support the variant, else what is missing. */
static const char *missing_feature(sym_simd_variant variant)
{
    cpu_features f = read_cpu_features();
    if (variant == SYM_SIMD_SCALAR)
        return NULL;
    if (!f.avx || !f.avx2)
        return "this CPU lacks AVX2";
    if (!f.fma)
        return "this CPU lacks FMA";
    if (!f.f16c)
        return "this CPU lacks F16C";
    if (!f.osxsave || (f.xcr0 & XCR0_YMM_STATE) != XCR0_YMM_STATE)
        return "the OS does not save the AVX (YMM) registers (XCR0)";
    if (variant == SYM_SIMD_AVX2)
        return NULL;
    if (!f.avx512f)
        return "this CPU lacks AVX-512F";
    if (!f.avx512bw)
        return "this CPU lacks AVX-512BW";
    if (!f.avx512vl)
        return "this CPU lacks AVX-512VL";
    if (!f.avx512dq)
        return "this CPU lacks AVX-512DQ";
    if ((f.xcr0 & XCR0_ZMM_STATE) != XCR0_ZMM_STATE)
        return "the OS does not save the AVX-512 (ZMM and opmask) registers (XCR0)";
    return NULL;
}

#else

static const char *missing_feature(sym_simd_variant variant)
{
    return variant == SYM_SIMD_SCALAR ? NULL : "not an x86 CPU";
}

#endif

sym_status sym_kernels_get(sym_simd_variant variant, const sym_kernels **kernels,
                           sym_error *err)
{
    if ((unsigned)variant >= SYM_SIMD_VARIANT_COUNT)
        return sym_error_set(err, SYM_ERR_INVALID, "kernel variant %d out of range",
                             (int)variant);
    const char *missing = missing_feature(variant);
    if (missing != NULL)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED, "%s: %s",
                             sym_simd_variant_str(variant), missing);
    *kernels = variant_tables[variant];
    return SYM_OK;
}

sym_status sym_simd_choose(const char *request, sym_simd_variant *variant, sym_error *err)
{
    if (request == NULL || request[0] == '\0') {
        for (int v = SYM_SIMD_VARIANT_COUNT - 1; v > SYM_SIMD_SCALAR; v--) {
            if (missing_feature((sym_simd_variant)v) == NULL) {
                *variant = (sym_simd_variant)v;
                return SYM_OK;
            }
        }
        *variant = SYM_SIMD_SCALAR;
        return SYM_OK;
    }

    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
        if (strcmp(request, variant_tables[v]->name) != 0)
            continue;
        const char *missing = missing_feature((sym_simd_variant)v);
        if (missing != NULL)
            return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                                 "SYMPHONY_SIMD=%s: %s; unset it or choose scalar",
                                 request, missing);
        *variant = (sym_simd_variant)v;
        return SYM_OK;
    }
    return sym_error_set(err, SYM_ERR_INVALID,
                         "SYMPHONY_SIMD='%s' is not a kernel variant; expected scalar, "
                         "avx2 or avx512", request);
}

/* The process-wide choice, made once under pthread_once. */
static pthread_once_t selection_once = PTHREAD_ONCE_INIT;
static sym_status selection_status;
static sym_error selection_error;
static const sym_kernels *selection_table;

static void select_once(void)
{
    sym_simd_variant variant;
    selection_status = sym_simd_choose(getenv("SYMPHONY_SIMD"), &variant, &selection_error);
    if (selection_status == SYM_OK)
        selection_table = variant_tables[variant];
}

sym_status sym_kernels_select(const sym_kernels **kernels, sym_error *err)
{
    pthread_once(&selection_once, select_once);
    if (selection_status != SYM_OK) {
        if (err != NULL)
            *err = selection_error;
        return selection_status;
    }
    *kernels = selection_table;
    return SYM_OK;
}

const char *sym_kernels_variant_name(void)
{
    const sym_kernels *kernels;
    if (sym_kernels_select(&kernels, NULL) != SYM_OK)
        return NULL;
    return kernels->name;
}
