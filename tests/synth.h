/* Writes small deterministic synthetic Llama checkpoints for tests and benchmarks. */
#ifndef SYMPHONY_SYNTH_H
#define SYMPHONY_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "symphony/safetensors.h"

typedef struct synth_spec {
    int layers;
    int hidden;
    int intermediate;
    int heads;
    int kv_heads;
    int vocab;
    sym_dtype dtype;     /* F32, F16 or BF16 */
    bool tied;           /* tie_word_embeddings true and no lm_head tensor */
    int shards;          /* 1 writes model.safetensors; more write an index */
    uint64_t seed;
    const char *prefix;  /* tensor-name prefix, "model." when NULL */
    bool omit_rope_theta;
    double rope_theta;   /* used when not omitted; 0 means 10000 */
    bool with_inv_freq;  /* also store rotary_emb.inv_freq (older checkpoints do) */
    bool sparse;         /* write headers only and extend the files with holes */
    int max_position;    /* max_position_embeddings; 0 means 256 */
    /* Related sources: with base_seed nonzero, every value comes from base_seed, and seed
     * only chooses the perturbation and the FFN permutation, so checkpoints with one
     * base_seed behave like fine-tunes of one base model. */
    uint64_t base_seed;
    int perturb;         /* adds k/1024, |k| <= perturb (at most 64), to non-norm values */
    bool permute_ffn;    /* stores base FFN neuron synth_ffn_perm(i) at position i */
} synth_spec;

/* Fills a spec with a tiny default model (2 layers, hidden 16, F32, one file). */
void synth_default(synth_spec *spec);

/* Writes config.json, the weights, tokenizer.json, tokenizer_config.json and
 * generation_config.json into dir (created if missing). Returns 0 or -1 with errno. */
int synth_write(const char *dir, const synth_spec *spec);

/* Returns the value synth_write stores at element i of the tensor with this name; exact in
 * F32, F16 and BF16. */
float synth_value(const synth_spec *spec, const char *name, uint64_t i);

/* Returns the base neuron stored at FFN position i: (a i + b) mod intermediate with a and b
 * from the seed, gcd(a, intermediate) = 1; i itself when permute_ffn is off. */
uint64_t synth_ffn_perm(const synth_spec *spec, uint64_t i);

#endif
