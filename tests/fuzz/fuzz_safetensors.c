/* libFuzzer target: the safetensors header parser on arbitrary bytes. The input is the
 * start of a file whose size is the input length. */
#include <stddef.h>
#include <stdint.h>

#include "symphony/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sym_st_header header;
    sym_error err;
    if (sym_st_header_parse(&header, data, size, size, "fuzz", &err) == SYM_OK) {
        for (size_t i = 0; i < header.n_tensors; i++)
            (void)sym_st_header_find(&header, header.tensors[i].name);
        sym_st_header_free(&header);
    }
    return 0;
}
