/* libFuzzer target: the YAML merge config (mergekit-moe keys plus the symphony: section).
 * Relative source paths resolve against the config's directory and need not exist: the
 * loader only parses and validates. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "symphony/mergecfg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/tmp/symphony-fuzz-mergecfg-%d.yml", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    sym_merge_config cfg;
    sym_error err;
    (void)sym_merge_config_load(&cfg, path, &err);
    sym_merge_config_free(&cfg);
    return 0;
}
