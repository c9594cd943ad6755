/* Reading mapped tensors as f32. Source bytes may be unaligned; the conversion kernels
 * load them with memcpy or unaligned loads, never through a cast pointer. */
#include <string.h>

#include "symphony/kernels.h"
#include "symphony/model.h"

sym_status sym_tensor_read_f32(const sym_tensor_ref *tensor, uint64_t first, uint64_t count,
                               float *dst, sym_error *err)
{
    const sym_st_tensor *t = tensor->info;
    if (first > t->numel || count > t->numel - first)
        return sym_error_set(err, SYM_ERR_INVALID,
                             "tensor '%s': elements %llu..%llu requested, it has %llu", t->name,
                             (unsigned long long)first, (unsigned long long)(first + count),
                             (unsigned long long)t->numel);
    if (t->dtype != SYM_DTYPE_F32 && t->dtype != SYM_DTYPE_F16 && t->dtype != SYM_DTYPE_BF16)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16",
                             tensor->file->path, t->name, sym_dtype_name(t->dtype));

    const uint8_t *src = sym_st_data(tensor->file, t);
    if (t->dtype == SYM_DTYPE_F32) {
        memcpy(dst, src + first * 4, count * 4);
        return SYM_OK;
    }
    const sym_kernels *k;
    sym_status s = sym_kernels_select(&k, err);
    if (s != SYM_OK)
        return s;
    if (t->dtype == SYM_DTYPE_BF16)
        k->bf16_to_f32(dst, src + first * 2, count);
    else
        k->f16_to_f32(dst, src + first * 2, count);
    return SYM_OK;
}
