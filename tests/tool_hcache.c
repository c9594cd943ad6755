/* Decodes a hidden-state cache file to raw little-endian f32, for independent checks of
 * what the merge computed from it. usage: tool_hcache FILE ROWS COLS OUT_FILE */
#include <stdio.h>
#include <stdlib.h>

#include "symphony/hcache.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s FILE ROWS COLS OUT_FILE\n", argv[0]);
        return 2;
    }
    unsigned long long rows = strtoull(argv[2], NULL, 10), cols = strtoull(argv[3], NULL, 10);
    float *h = malloc(rows * cols * sizeof *h + 1);
    if (h == NULL) {
        fprintf(stderr, "%s: out of memory for %llu x %llu\n", argv[1], rows, cols);
        return 1;
    }
    sym_error err;
    if (sym_hcache_read(argv[1], h, rows, cols, &err) != SYM_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    FILE *out = fopen(argv[4], "wb");
    if (out == NULL || fwrite(h, sizeof *h, rows * cols, out) != rows * cols ||
        fclose(out) != 0) {
        perror(argv[4]);
        return 1;
    }
    free(h);
    return 0;
}
