/* Dumps every tensor of a model directory as f32, for comparison with an independent
 * reader. usage: tool_dump MODEL_DIR OUT_FILE
 * OUT_FILE gets, per tensor in name order: a line "name numel\n" followed by numel
 * little-endian f32 values. Tensors of other dtypes are skipped. */
#include <stdio.h>
#include <stdlib.h>

#include "symphony/model.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR OUT_FILE\n", argv[0]);
        return 2;
    }
    sym_model *m;
    sym_error err;
    if (sym_model_open(&m, argv[1], &err) != SYM_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    if (out == NULL) {
        perror(argv[2]);
        return 1;
    }
    int rc = 0;
    for (size_t s = 0; s < sym_model_shard_count(m) && rc == 0; s++) {
        const sym_st_file *f = sym_model_shard(m, s);
        for (size_t i = 0; i < f->header.n_tensors && rc == 0; i++) {
            sym_tensor_ref ref = {f, &f->header.tensors[i]};
            float *buf = malloc(ref.info->numel * sizeof *buf + 1);
            if (sym_tensor_read_f32(&ref, 0, ref.info->numel, buf, &err) != SYM_OK) {
                free(buf);
                continue;
            }
            fprintf(out, "%s %llu\n", ref.info->name, (unsigned long long)ref.info->numel);
            if (fwrite(buf, sizeof *buf, ref.info->numel, out) != ref.info->numel)
                rc = 1;
            free(buf);
        }
    }
    if (fclose(out) != 0)
        rc = 1;
    sym_model_close(m);
    return rc;
}
