/* libFuzzer target: a whole model directory whose model.safetensors.index.json is the
 * input; the shards are the valid ones of the sharded-good corpus case, linked in. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "symphony/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[PATH_MAX];

static void prepare(void)
{
    const char *top = getenv("SYMPHONY_TOP");
    snprintf(dir, sizeof dir, "/tmp/symphony-fuzz-index-%d", (int)getpid());
    char cmd[3 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s/fixtures/bad/cases/sharded-good %s", dir,
             top ? top : ".", dir);
    if (system(cmd) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (dir[0] == '\0')
        prepare();
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    sym_model *m;
    sym_error err;
    if (sym_model_open(&m, dir, &err) == SYM_OK)
        sym_model_close(m);
    return 0;
}
