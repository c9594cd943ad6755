/* Synthetic checkpoints: every value is a small multiple of 1/1024 (or 1 + k/64 for norm
 * weights), so it is exact in F32, F16 and BF16 and a reader can be checked bit for bit. */
#include "synth.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void synth_default(synth_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->layers = 2;
    spec->hidden = 16;
    spec->intermediate = 40;
    spec->heads = 4;
    spec->kv_heads = 2;
    spec->vocab = 300;
    spec->dtype = SYM_DTYPE_F32;
    spec->tied = false;
    spec->shards = 1;
    spec->seed = 1;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 1099511628211ull;
    return h;
}

static bool is_norm(const char *name)
{
    return strstr(name, "norm") != NULL;
}

/* How the values of one tensor are computed. */
typedef struct tensor_gen {
    uint64_t key;       /* per-tensor hash of the values (of the base, for related sources) */
    uint64_t delta_key; /* per-tensor hash of the perturbation */
    int perturb;
    bool norm;
    int neurons;        /* 0: no permutation, 1: rows are FFN neurons, 2: columns are */
    uint64_t cols;
    uint64_t mul, add, n; /* the neuron permutation (a i + b) mod n */
} tensor_gen;

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b != 0) {
        uint64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

/* Multiplier and offset of the FFN permutation; a = 1 and b = 0 when it is off. */
static void perm_params(const synth_spec *spec, uint64_t *mul, uint64_t *add)
{
    uint64_t n = (uint64_t)spec->intermediate;
    *mul = 1;
    *add = 0;
    if (!spec->permute_ffn || n < 3)
        return;
    *mul = 2 + mix64(spec->seed ^ 0x7065726dull) % (n - 2);
    while (gcd(*mul, n) != 1)
        *mul = *mul + 1 < n ? *mul + 1 : 2;
    *add = mix64(spec->seed ^ 0x6f6666ull) % n;
}

uint64_t synth_ffn_perm(const synth_spec *spec, uint64_t i)
{
    uint64_t mul, add;
    perm_params(spec, &mul, &add);
    return (mul * i + add) % (uint64_t)spec->intermediate;
}

static int neuron_axis(const synth_spec *spec, const char *name)
{
    if (!spec->permute_ffn)
        return 0;
    if (strstr(name, "mlp.gate_proj") != NULL || strstr(name, "mlp.up_proj") != NULL)
        return 1;
    return strstr(name, "mlp.down_proj") != NULL ? 2 : 0;
}

/* The per-tensor part of the hashes, so that encode() computes it once per tensor. */
static tensor_gen tensor_setup(const synth_spec *spec, const char *name)
{
    tensor_gen g = {0};
    uint64_t h = name_hash(name);
    g.norm = is_norm(name);
    if (spec->base_seed == 0) {
        g.key = h ^ mix64(spec->seed);
        return g;
    }
    g.key = h ^ mix64(spec->base_seed);
    g.delta_key = h ^ mix64(spec->seed ^ 0x64656c7461ull);
    g.perturb = g.norm ? 0 : spec->perturb;
    g.neurons = neuron_axis(spec, name);
    g.n = (uint64_t)spec->intermediate;
    g.cols = g.neurons == 2 ? g.n : (uint64_t)spec->hidden;
    perm_params(spec, &g.mul, &g.add);
    return g;
}

/* Level k of element i: the value is k / 1024, or 1 + k / 64 for norm weights. */
static int level_at(uint64_t key, bool norm, uint64_t i)
{
    uint64_t h = mix64(key ^ (i * 0x2545f4914f6cdd1dull));
    return norm ? (int)(h & 15) - 8 : (int)(h & 255) - 128;
}

static float gen_value(const tensor_gen *g, uint64_t i)
{
    uint64_t src = i;
    if (g->neurons == 1)
        src = (g->mul * (i / g->cols) + g->add) % g->n * g->cols + i % g->cols;
    else if (g->neurons == 2)
        src = i / g->cols * g->cols + (g->mul * (i % g->cols) + g->add) % g->n;
    int k = level_at(g->key, g->norm, src);
    if (g->norm)
        return 1.0f + (float)k / 64.0f;
    if (g->perturb > 0) {
        uint64_t h = mix64(g->delta_key ^ (i * 0x9e3779b97f4a7c15ull));
        k += (int)(h % (uint64_t)(2 * g->perturb + 1)) - g->perturb;
    }
    return (float)k / 1024.0f;
}

float synth_value(const synth_spec *spec, const char *name, uint64_t i)
{
    tensor_gen g = tensor_setup(spec, name);
    return gen_value(&g, i);
}

typedef struct synth_tensor {
    char name[256];
    uint64_t rows, cols; /* cols 0: a vector */
} synth_tensor;

static int add(synth_tensor *list, int *n, const char *prefix, const char *name, uint64_t rows,
               uint64_t cols)
{
    snprintf(list[*n].name, sizeof list[*n].name, "%s%s", prefix, name);
    list[*n].rows = rows;
    list[*n].cols = cols;
    return (*n)++;
}

static int plan_tensors(const synth_spec *s, synth_tensor *list)
{
    const char *p = s->prefix ? s->prefix : "model.";
    uint64_t h = (uint64_t)s->hidden, ff = (uint64_t)s->intermediate;
    uint64_t hd = h / (uint64_t)s->heads, kv = hd * (uint64_t)s->kv_heads;
    int n = 0;
    char name[96];
    add(list, &n, p, "embed_tokens.weight", (uint64_t)s->vocab, h);
    add(list, &n, p, "norm.weight", h, 0);
    if (!s->tied)
        add(list, &n, "", "lm_head.weight", (uint64_t)s->vocab, h);
    for (int l = 0; l < s->layers; l++) {
        const struct {
            const char *suffix;
            uint64_t rows, cols;
        } per_layer[] = {
            {"input_layernorm.weight", h, 0},      {"self_attn.q_proj.weight", h, h},
            {"self_attn.k_proj.weight", kv, h},    {"self_attn.v_proj.weight", kv, h},
            {"self_attn.o_proj.weight", h, h},     {"post_attention_layernorm.weight", h, 0},
            {"mlp.gate_proj.weight", ff, h},       {"mlp.up_proj.weight", ff, h},
            {"mlp.down_proj.weight", h, ff},
        };
        for (size_t i = 0; i < sizeof per_layer / sizeof per_layer[0]; i++) {
            snprintf(name, sizeof name, "layers.%d.%s", l, per_layer[i].suffix);
            add(list, &n, p, name, per_layer[i].rows, per_layer[i].cols);
        }
        if (s->with_inv_freq) {
            snprintf(name, sizeof name, "layers.%d.self_attn.rotary_emb.inv_freq", l);
            add(list, &n, p, name, hd / 2, 0);
        }
    }
    return n;
}

static uint16_t f32_to_half_exact(float f)
{
    /* Only values of the form k/1024 or 1 + k/64 occur, all normal or zero in f16. */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    if ((x & 0x7fffffffu) == 0)
        return (uint16_t)sign;
    int32_t exponent = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    return (uint16_t)(sign | ((uint32_t)exponent << 10) | ((x >> 13) & 0x3ffu));
}

static size_t elem_size(sym_dtype d)
{
    return d == SYM_DTYPE_F32 ? 4 : 2;
}

static void encode(const synth_spec *s, const synth_tensor *t, uint8_t *out)
{
    uint64_t count = t->rows * (t->cols ? t->cols : 1);
    tensor_gen g = tensor_setup(s, t->name);
    for (uint64_t i = 0; i < count; i++) {
        float v = gen_value(&g, i);
        uint32_t bits;
        memcpy(&bits, &v, 4);
        if (s->dtype == SYM_DTYPE_F32) {
            memcpy(out + 4 * i, &bits, 4);
        } else {
            uint16_t h = s->dtype == SYM_DTYPE_BF16 ? (uint16_t)(bits >> 16) : f32_to_half_exact(v);
            out[2 * i] = (uint8_t)(h & 0xff);
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
}

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_shard(const char *path, const synth_spec *s, const synth_tensor *list, int first,
                       int last)
{
    json_t *header = json_object();
    json_t *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(header, "__metadata__", meta);
    uint64_t offset = 0;
    for (int i = first; i < last; i++) {
        uint64_t count = list[i].rows * (list[i].cols ? list[i].cols : 1);
        json_t *shape = json_array();
        json_array_append_new(shape, json_integer((json_int_t)list[i].rows));
        if (list[i].cols)
            json_array_append_new(shape, json_integer((json_int_t)list[i].cols));
        json_t *offsets = json_array();
        json_array_append_new(offsets, json_integer((json_int_t)offset));
        offset += count * elem_size(s->dtype);
        json_array_append_new(offsets, json_integer((json_int_t)offset));
        json_t *entry = json_object();
        json_object_set_new(entry, "dtype", json_string(sym_dtype_name(s->dtype)));
        json_object_set_new(entry, "shape", shape);
        json_object_set_new(entry, "data_offsets", offsets);
        json_object_set_new(header, list[i].name, entry);
    }
    char *text = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(header);
    size_t len = strlen(text);
    size_t padded = (len + 7) / 8 * 8;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(text);
        return -1;
    }
    uint8_t size_le[8];
    for (int i = 0; i < 8; i++)
        size_le[i] = (uint8_t)(padded >> (8 * i));
    int rc = write_all(fd, size_le, 8) || write_all(fd, text, len);
    for (size_t i = len; i < padded && rc == 0; i++)
        rc = write_all(fd, " ", 1);
    free(text);
    if (s->sparse) {
        /* Headers-only files for timing the header parser: the data is a hole. */
        if (rc == 0 && ftruncate(fd, (off_t)(8 + padded + offset)) != 0)
            rc = -1;
        return close(fd) != 0 ? -1 : rc;
    }
    for (int i = first; i < last && rc == 0; i++) {
        uint64_t count = list[i].rows * (list[i].cols ? list[i].cols : 1);
        size_t bytes = count * elem_size(s->dtype);
        uint8_t *buf = malloc(bytes ? bytes : 1);
        if (buf == NULL) {
            rc = -1;
            break;
        }
        encode(s, &list[i], buf);
        rc = write_all(fd, buf, bytes);
        free(buf);
    }
    return close(fd) != 0 ? -1 : rc;
}

static int write_json(const char *dir, const char *file, json_t *doc)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int rc = json_dump_file(doc, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    return rc;
}

static int write_config(const char *dir, const synth_spec *s)
{
    json_t *c = json_object();
    json_object_set_new(c, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(c, "model_type", json_string("llama"));
    json_object_set_new(c, "hidden_size", json_integer(s->hidden));
    json_object_set_new(c, "intermediate_size", json_integer(s->intermediate));
    json_object_set_new(c, "num_hidden_layers", json_integer(s->layers));
    json_object_set_new(c, "num_attention_heads", json_integer(s->heads));
    json_object_set_new(c, "num_key_value_heads", json_integer(s->kv_heads));
    json_object_set_new(c, "vocab_size", json_integer(s->vocab));
    json_object_set_new(c, "max_position_embeddings", json_integer(s->max_position > 0 ? s->max_position : 256));
    json_object_set_new(c, "rms_norm_eps", json_real(1e-5));
    if (!s->omit_rope_theta)
        json_object_set_new(c, "rope_theta", json_real(s->rope_theta > 0 ? s->rope_theta : 1e4));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    json_object_set_new(c, "tie_word_embeddings", json_boolean(s->tied));
    json_object_set_new(c, "bos_token_id", json_integer(1));
    json_object_set_new(c, "eos_token_id", json_integer(2));
    json_object_set_new(c, "torch_dtype", json_string(s->dtype == SYM_DTYPE_F32 ? "float32"
                                                      : s->dtype == SYM_DTYPE_F16 ? "float16"
                                                                                  : "bfloat16"));
    json_object_set_new(c, "synthetic_generator_seed", json_integer((json_int_t)s->seed));
    if (s->base_seed != 0) {
        uint64_t mul, add;
        perm_params(s, &mul, &add);
        json_object_set_new(c, "synthetic_base_seed", json_integer((json_int_t)s->base_seed));
        json_object_set_new(c, "synthetic_perturbation", json_integer(s->perturb));
        /* FFN position i stores base neuron (multiplier i + offset) mod d_ff. */
        json_object_set_new(c, "synthetic_ffn_permutation",
                            json_pack("{s:I,s:I}", "multiplier", (json_int_t)mul, "offset",
                                      (json_int_t)add));
    }
    return write_json(dir, "config.json", c);
}

/* A byte-fallback BPE vocabulary: special tokens, 256 byte pieces, then word pieces. */
static int write_tokenizer(const char *dir, const synth_spec *s)
{
    json_t *vocab = json_object();
    const char *special[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++)
        json_object_set_new(vocab, special[i], json_integer(i));
    char piece[32];
    for (int b = 0; b < 256 && 3 + b < s->vocab; b++) {
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        json_object_set_new(vocab, piece, json_integer(3 + b));
    }
    for (int id = 259; id < s->vocab; id++) {
        snprintf(piece, sizeof piece, "\xe2\x96\x81w%d", id);
        json_object_set_new(vocab, piece, json_integer(id));
    }
    json_t *added = json_array();
    for (int i = 0; i < 3; i++)
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content",
                                               special[i], "single_word", 0, "lstrip", 0,
                                               "rstrip", 0, "normalized", 0, "special", 1));
    json_t *model = json_pack("{s:s,s:n,s:n,s:n,s:s,s:b,s:b,s:b,s:o,s:[]}", "type", "BPE",
                              "dropout", "continuing_subword_prefix", "end_of_word_suffix",
                              "unk_token", "<unk>", "fuse_unk", 1, "byte_fallback", 1,
                              "ignore_merges", 0, "vocab", vocab, "merges");
    json_t *normalizer = json_pack(
        "{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence", "normalizers", "type",
        "Prepend", "prepend", "\xe2\x96\x81", "type", "Replace", "pattern", "String", " ",
        "content", "\xe2\x96\x81");
    json_t *tok = json_pack("{s:s,s:n,s:n,s:o,s:o,s:n,s:n,s:o}", "version", "1.0", "truncation",
                            "padding", "added_tokens", added, "normalizer", normalizer,
                            "pre_tokenizer", "post_processor", "model", model);
    if (write_json(dir, "tokenizer.json", tok) != 0)
        return -1;
    json_t *tc = json_pack("{s:b,s:b,s:s,s:s,s:s,s:s}", "add_bos_token", 1, "add_eos_token", 0,
                           "bos_token", "<s>", "eos_token", "</s>", "unk_token", "<unk>",
                           "tokenizer_class", "LlamaTokenizer");
    if (write_json(dir, "tokenizer_config.json", tc) != 0)
        return -1;
    return write_json(dir, "generation_config.json",
                      json_pack("{s:i,s:i}", "bos_token_id", 1, "eos_token_id", 2));
}

static int write_index(const char *dir, const synth_spec *s, const synth_tensor *list, int n,
                       const int *shard_of)
{
    json_t *map = json_object();
    uint64_t total = 0;
    char shard[64];
    for (int i = 0; i < n; i++) {
        snprintf(shard, sizeof shard, "model-%05d-of-%05d.safetensors", shard_of[i] + 1,
                 s->shards);
        json_object_set_new(map, list[i].name, json_string(shard));
        total += list[i].rows * (list[i].cols ? list[i].cols : 1) * elem_size(s->dtype);
    }
    json_t *doc = json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total,
                            "weight_map", map);
    return write_json(dir, "model.safetensors.index.json", doc);
}

int synth_write(const char *dir, const synth_spec *s)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return -1;
    int capacity = 3 + s->layers * 10;
    synth_tensor *list = calloc((size_t)capacity, sizeof *list);
    int *shard_of = calloc((size_t)capacity, sizeof *shard_of);
    if (list == NULL || shard_of == NULL) {
        free(list);
        free(shard_of);
        return -1;
    }
    int n = plan_tensors(s, list);
    int rc = write_config(dir, s) || write_tokenizer(dir, s);
    char path[4096];
    if (rc == 0 && s->shards <= 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = write_shard(path, s, list, 0, n);
    } else if (rc == 0) {
        /* Contiguous runs of tensors, about n / shards each. */
        for (int k = 0; k < s->shards && rc == 0; k++) {
            int first = n * k / s->shards, last = n * (k + 1) / s->shards;
            for (int i = first; i < last; i++)
                shard_of[i] = k;
            snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, k + 1,
                     s->shards);
            rc = write_shard(path, s, list, first, last);
        }
        if (rc == 0)
            rc = write_index(dir, s, list, n, shard_of);
    }
    free(list);
    free(shard_of);
    return rc ? -1 : 0;
}
