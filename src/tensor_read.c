/* Reading mapped tensors as f32. Source bytes may be unaligned, so every element is
 * assembled from bytes (or copied with memcpy), never loaded through a cast pointer. */
#include "symphony/model.h"

#include <math.h>
#include <string.h>

static float f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static float bf16_to_f32(const uint8_t *p)
{
    return f32_from_bits((uint32_t)(p[0] | (p[1] << 8)) << 16);
}

static float f16_to_f32(const uint8_t *p)
{
    uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f)
        return f32_from_bits(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) {
        /* Zero or subnormal: mantissa x 2^-24, exact in f32. */
        float value = ldexpf((float)mantissa, -24);
        return sign ? -value : value;
    }
    return f32_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

sym_status sym_tensor_read_f32(const sym_tensor_ref *tensor, uint64_t first, uint64_t count,
                               float *dst, sym_error *err)
{
    const sym_st_tensor *t = tensor->info;
    if (first > t->numel || count > t->numel - first)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "tensor '%s': elements %llu..%llu requested, it has %llu", t->name,
                             (unsigned long long)first, (unsigned long long)(first + count),
                             (unsigned long long)t->numel);
    const uint8_t *src = sym_st_data(tensor->file, t);
    switch (t->dtype) {
    case SYM_DTYPE_F32:
        memcpy(dst, src + first * 4, count * 4);
        return SYM_OK;
    case SYM_DTYPE_BF16:
        src += first * 2;
        for (uint64_t i = 0; i < count; i++)
            dst[i] = bf16_to_f32(src + 2 * i);
        return SYM_OK;
    case SYM_DTYPE_F16:
        src += first * 2;
        for (uint64_t i = 0; i < count; i++)
            dst[i] = f16_to_f32(src + 2 * i);
        return SYM_OK;
    default:
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16",
                             tensor->file->path, t->name, sym_dtype_name(t->dtype));
    }
}
