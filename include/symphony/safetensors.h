/* safetensors files: strict header parsing and memory-mapped tensor access.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON (an object mapping
 * tensor names to {dtype, shape, data_offsets}, plus an optional "__metadata__" object),
 * then the data. The rules are those of the reference implementation
 * (huggingface/safetensors): the header is at most SYM_ST_MAX_HEADER bytes, starts with
 * '{' and lies inside the file; names are unique; sorted by offset, the tensors tile the
 * data exactly (no hole, no overlap, no trailing byte) with end - begin equal to the
 * element count times the dtype size; data need not be aligned.
 */
#ifndef SYMPHONY_SAFETENSORS_H
#define SYMPHONY_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header accepted, as in the reference implementation. */
#define SYM_ST_MAX_HEADER 100000000u

/* Largest tensor count accepted in one file. Checkpoints contain a few thousand tensors (a
 * Mixtral-style MoE with 256 experts and 64 layers about 50,000); parsing a header near
 * the byte limit with a million one-byte tensors takes tens of seconds and gigabytes. */
#define SYM_ST_MAX_TENSORS 262144u

/* Largest tensor rank accepted; a checkpoint's tensors have at most 2 dimensions. */
#define SYM_ST_MAX_DIMS 8

typedef enum sym_dtype {
    SYM_DTYPE_BOOL,
    SYM_DTYPE_U8,
    SYM_DTYPE_I8,
    SYM_DTYPE_F8_E5M2,
    SYM_DTYPE_F8_E4M3,
    SYM_DTYPE_F8_E8M0,
    SYM_DTYPE_F4,
    SYM_DTYPE_F6_E2M3,
    SYM_DTYPE_F6_E3M2,
    SYM_DTYPE_I16,
    SYM_DTYPE_U16,
    SYM_DTYPE_F16,
    SYM_DTYPE_BF16,
    SYM_DTYPE_I32,
    SYM_DTYPE_U32,
    SYM_DTYPE_F32,
    SYM_DTYPE_F64,
    SYM_DTYPE_I64,
    SYM_DTYPE_U64,
    SYM_DTYPE_C64,
    SYM_DTYPE_COUNT
} sym_dtype;

/* Returns the safetensors name of a dtype ("BF16"). */
const char *sym_dtype_name(sym_dtype dtype);

/* Returns the size of one element in bits (4 for F4, 16 for BF16). */
unsigned sym_dtype_bits(sym_dtype dtype);

/* Looks a dtype up by its safetensors name; returns false when unknown. */
bool sym_dtype_from_name(const char *name, sym_dtype *dtype);

/* One tensor of a file. Offsets are absolute positions in the file. */
typedef struct sym_st_tensor {
    char *name;
    sym_dtype dtype;
    int ndim;
    uint64_t shape[SYM_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t offset;
    uint64_t nbytes;
} sym_st_tensor;

/* One "__metadata__" entry. */
typedef struct sym_st_meta {
    char *key;
    char *value;
} sym_st_meta;

/* A parsed header: the tensors sorted by name, and the metadata. */
typedef struct sym_st_header {
    size_t n_tensors;
    sym_st_tensor *tensors;
    size_t n_meta;
    sym_st_meta *meta;
    /* False when "__metadata__" is not an object of strings; such entries are skipped. */
    bool meta_strict;
    uint64_t header_bytes; /* N, the JSON length */
    uint64_t data_start;   /* 8 + N */
} sym_st_header;

/* Parses and validates a header from the first bytes of a file of file_size bytes.
 * prefix contains at least the first min(file_size, 8 + N) bytes; the file name is used only
 * in messages. The header owns its strings; free it with sym_st_header_free. */
sym_status sym_st_header_parse(sym_st_header *header, const uint8_t *prefix, size_t prefix_len,
                               uint64_t file_size, const char *name, sym_error *err);

void sym_st_header_free(sym_st_header *header);

/* Returns the tensor with this name, or NULL. */
const sym_st_tensor *sym_st_header_find(const sym_st_header *header, const char *name);

/* An open, memory-mapped safetensors file. */
typedef struct sym_st_file {
    char *path;
    int fd;
    uint64_t file_size;
    const uint8_t *map; /* the whole file, read-only; NULL only if file_size is 0 */
    sym_st_header header;
} sym_st_file;

/* Opens, maps and validates a file. */
sym_status sym_st_open(sym_st_file **file, const char *path, sym_error *err);

void sym_st_close(sym_st_file *file);

/* Returns a pointer to a tensor's bytes in the mapping. The pointer may be unaligned:
 * copy with memcpy, never cast to a wider type. */
static inline const uint8_t *sym_st_data(const sym_st_file *file, const sym_st_tensor *t)
{
    return file->map + t->offset;
}

#ifdef __cplusplus
}
#endif

#endif
