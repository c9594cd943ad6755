/* libFuzzer target: config.json parsing (JSON text to the validated architecture). */
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "model_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (root == NULL)
        return 0;
    sym_model_config config;
    sym_error err;
    (void)sym_config_parse(root, &config, "fuzz", &err);
    json_decref(root);
    return 0;
}
