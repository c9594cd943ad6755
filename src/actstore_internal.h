/* Header encoding shared by the activation statistics writer and reader. */
#ifndef SYMPHONY_ACTSTORE_INTERNAL_H
#define SYMPHONY_ACTSTORE_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#define ACTSTORE_MAGIC "SYMACTS\0"

/* The fixed 88-byte header, little-endian on disk (layout in docs/ALIGNMENT.md). */
typedef struct actstore_header {
    uint32_t version;
    uint32_t kind;
    uint32_t layer;
    uint32_t source;
    uint64_t d_ff;
    uint64_t tokens;
    uint64_t rows;
    uint64_t sketch_seed;
    uint64_t payload_bytes;    /* decompressed: mean, std, matrix */
    uint64_t compressed_bytes; /* the zstd frame after the header */
    uint64_t payload_xxh3;     /* xxh3-64 (seed 0) of the compressed bytes */
    uint64_t header_xxh3;      /* xxh3-64 of header bytes 0..79 */
} actstore_header;

/* Writes h into out [88], computing header_xxh3 (h's own value is ignored). */
void actstore_header_encode(const actstore_header *h, unsigned char *out);

/* Decodes in [88] into h (the magic is not checked here). Returns whether the stored
 * header checksum matches bytes 0..79. */
bool actstore_header_decode(const unsigned char *in, actstore_header *h);

/* Decompressed payload size of a record: two f64 vectors and an f32 matrix. The caller
 * keeps d_ff and rows within the SYM_ACTSTORE_MAX_* limits, so this cannot overflow. */
uint64_t actstore_payload_bytes(uint64_t d_ff, uint64_t rows);

#endif
