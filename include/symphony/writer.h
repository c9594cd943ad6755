/* Output writing: the shard plan, safetensors headers, the index, config.json and the
 * checksum manifest of a Mixtral-format model directory.
 *
 * The plan lists every output tensor with its shard and its absolute offset in the shard
 * file before any data is written, so each shard's header can be written first and every
 * tensor written at its final offset with pwrite, in any order.
 */
#ifndef SYMPHONY_WRITER_H
#define SYMPHONY_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/model.h"
#include "symphony/safetensors.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One output tensor. offset is the absolute position in its shard file. */
typedef struct sym_plan_tensor {
    char *name;
    sym_dtype dtype;
    int ndim;
    uint64_t shape[2];
    uint64_t nbytes;
    uint32_t shard;
    uint64_t offset;
    uint64_t xxh3; /* checksum of the bytes, set once the tensor is written */
} sym_plan_tensor;

/* The whole output: tensors in write order and the shards that hold them. */
typedef struct sym_out_plan {
    sym_plan_tensor *tensors;
    size_t n_tensors;
    size_t capacity;
    uint32_t n_shards;
    uint64_t *shard_file_size; /* [n_shards] */
    char **shard_header;       /* [n_shards] 8-byte length + JSON + space padding */
    uint64_t *shard_header_len;
    uint64_t total_size; /* sum of tensor bytes, as the index's metadata.total_size */
} sym_out_plan;

/* Appends a tensor of rank 1 or 2 (shape[1] ignored for rank 1). */
sym_status sym_plan_add(sym_out_plan *plan, const char *name, sym_dtype dtype, int ndim,
                        const uint64_t *shape, sym_error *err);

/* Assigns shards and offsets: tensors in order, a new shard whenever the next tensor would
 * take the current one past shard_size bytes of data (a larger tensor gets a shard of its
 * own). Builds each shard's header with __metadata__ {"format": "pt"}. */
sym_status sym_plan_layout(sym_out_plan *plan, uint64_t shard_size, sym_error *err);

void sym_plan_free(sym_out_plan *plan);

/* Writes "model-0000k-of-0000n.safetensors" (k from 1) into buf. */
void sym_shard_name(uint32_t shard, uint32_t n_shards, char *buf, size_t size);

/* Writes model.safetensors.index.json into dir. */
sym_status sym_write_index(const sym_out_plan *plan, const char *dir, sym_error *err);

/* Writes the checksum manifest (SYM_MANIFEST_NAME) into dir: for every tensor its shard,
 * offset, length and xxh3-64 as 16 hex digits. */
#define SYM_MANIFEST_NAME "symphony-manifest.json"
sym_status sym_write_manifest(const sym_out_plan *plan, const char *dir, sym_error *err);

/* Settings that config.json needs beyond the anchor's own config. */
typedef struct sym_moe_config_values {
    int64_t num_local_experts;
    int64_t num_experts_per_tok;
    int64_t vocab_size;
    bool tie_word_embeddings;
    sym_dtype dtype;
} sym_moe_config_values;

/* Writes config.json for MixtralForCausalLM: the anchor's keys passed through (auto_map
 * dropped), every architecture value written explicitly from the anchor's parsed config
 * (rope_theta included), and the values above. */
sym_status sym_write_moe_config(const sym_model *anchor, const sym_moe_config_values *values,
                                const char *dir, sym_error *err);

/* Writes a JSON value to dir/name: sorted keys, 2-space indent, trailing newline, then
 * fsync. json is a jansson json_t *. */
sym_status sym_write_json_file(const void *json, const char *dir, const char *name,
                               sym_error *err);

/* Writes bytes to dir/name and fsyncs it. */
sym_status sym_write_file(const char *dir, const char *name, const void *data, size_t size,
                          sym_error *err);

/* Copies src_dir/name to dst_dir/name when it exists; *copied is set to whether it did. */
sym_status sym_copy_file_if_present(const char *src_dir, const char *dst_dir, const char *name,
                                    bool *copied, sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
