/* Shared between the model modules; not part of the public API. */
#ifndef SYMPHONY_MODEL_INTERNAL_H
#define SYMPHONY_MODEL_INTERNAL_H

#include <jansson.h>

#include "symphony/model.h"

/* Largest config.json and model.safetensors.index.json accepted. */
#define SYM_MAX_CONFIG_BYTES (16u << 20)
#define SYM_MAX_INDEX_BYTES (256u << 20)

/* Fills c from a parsed config.json; path is used in messages. */
sym_status sym_config_parse(json_t *root, sym_model_config *c, const char *path, sym_error *err);

/* Loads a JSON file of at most max_bytes, rejecting duplicate keys. */
sym_status sym_json_load_file(const char *path, size_t max_bytes, json_t **root, sym_error *err);

/* Returns the Levenshtein distance between a and b, capped at limit + 1. */
size_t sym_edit_distance(const char *a, const char *b, size_t limit);

#endif
