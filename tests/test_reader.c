/* Checkpoint reader on synthetic models of every layout: dtypes, sharding, tied and
 * untied embeddings, name prefixes and ignored tensors. Also safetensors edge cases that
 * are valid input: unaligned data, empty and 0-rank tensors. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "symphony/model.h"
#include "synth.h"
#include "testlib.h"

static void check_values(const sym_model *m, const synth_spec *spec, sym_role role, int layer)
{
    const sym_tensor_ref *r = sym_model_tensor(m, role, layer, -1);
    CHECK(r != NULL);
    if (r == NULL)
        return;
    uint64_t n = r->info->numel;
    float *buf = malloc(n * sizeof *buf);
    sym_error err;
    CHECK(sym_tensor_read_f32(r, 0, n, buf, &err) == SYM_OK);
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++)
        bad += buf[i] != synth_value(spec, r->info->name, i);
    CHECKF(bad == 0, "%s: %llu of %llu values differ", r->info->name, (unsigned long long)bad,
           (unsigned long long)n);

    /* A partial read from the middle returns the same values. */
    if (n > 3) {
        float part[2];
        CHECK(sym_tensor_read_f32(r, n / 2, 2, part, &err) == SYM_OK);
        CHECK(part[0] == buf[n / 2]);
        CHECK(part[1] == buf[n / 2 + 1]);
        CHECK(sym_tensor_read_f32(r, n - 1, 2, part, &err) == SYM_ERR_INVALID);
    }
    free(buf);
}

static void check_layout(sym_dtype dtype, bool tied, int shards, const char *prefix)
{
    synth_spec spec;
    synth_default(&spec);
    spec.dtype = dtype;
    spec.tied = tied;
    spec.shards = shards;
    spec.prefix = prefix;
    spec.with_inv_freq = true;
    const char *dir = test_tmpdir("reader");
    CHECK(synth_write(dir, &spec) == 0);

    sym_model *m;
    sym_error err;
    sym_status s = sym_model_open(&m, dir, &err);
    CHECKF(s == SYM_OK, "%s %s shards=%d prefix='%s': %s", sym_dtype_name(dtype),
           tied ? "tied" : "untied", shards, prefix ? prefix : "model.", err.message);
    if (s != SYM_OK)
        return;
    const sym_model_config *c = sym_model_get_config(m);
    CHECK(c->num_hidden_layers == spec.layers);
    CHECK(c->hidden_size == spec.hidden);
    CHECK(c->head_dim == spec.hidden / spec.heads);
    CHECK(sym_model_shard_count(m) == (size_t)shards);
    CHECK(sym_model_lm_head_tied(m) == tied);
    CHECK(strcmp(sym_model_prefix(m), prefix ? prefix : "model.") == 0);
    CHECK(sym_model_ignored_count(m) == (size_t)spec.layers);

    const sym_tensor_ref *head = sym_model_tensor(m, SYM_ROLE_LM_HEAD, 0, -1);
    const sym_tensor_ref *embed = sym_model_tensor(m, SYM_ROLE_EMBED, 0, -1);
    CHECK((head->info == embed->info) == tied);
    CHECK(sym_model_tensor(m, SYM_ROLE_ROUTER, 0, -1) == NULL);
    CHECK(sym_model_tensor(m, SYM_ROLE_FFN_UP, 0, 0) == NULL);
    CHECK(sym_model_tensor(m, SYM_ROLE_Q, spec.layers, -1) == NULL);

    check_values(m, &spec, SYM_ROLE_EMBED, 0);
    check_values(m, &spec, SYM_ROLE_LM_HEAD, 0);
    check_values(m, &spec, SYM_ROLE_FINAL_NORM, 0);
    for (int l = 0; l < spec.layers; l++) {
        for (int role = SYM_ROLE_INPUT_NORM; role <= SYM_ROLE_FFN_DOWN; role++)
            check_values(m, &spec, (sym_role)role, l);
    }
    sym_model_close(m);
}

/* Writes a safetensors file from a header text and data bytes. */
static void write_raw(const char *path, const char *header, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint64_t n = strlen(header);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(n >> (8 * i));
    CHECK(write(fd, le, 8) == 8);
    CHECK(write(fd, header, n) == (ssize_t)n);
    if (len)
        CHECK(write(fd, data, len) == (ssize_t)len);
    close(fd);
}

static void check_unaligned_and_empty(void)
{
    const char *dir = test_tmpdir("unaligned");
    char path[512];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
        const char *header = "{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]},"
                         "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                         "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[13,13]},"
                         "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[13,15]}}";
    /* Pad the header with spaces so that "b" starts at an offset of 1 mod 4. */
    char padded[512];
    snprintf(padded, sizeof padded, "%s", header);
    while ((8 + strlen(padded) + 1) % 4 != 1)
        strcat(padded, " ");
    header = padded;
    uint8_t data[15] = {7};
    float values[3] = {1.5f, -2.25f, 1e-30f};
    memcpy(data + 1, values, sizeof values);
    data[13] = 0x80; /* bf16 0x3f80 = 1.0 */
    data[14] = 0x3f;
    write_raw(path, header, data, sizeof data);

    sym_st_file *f;
    sym_error err;
    sym_status s = sym_st_open(&f, path, &err);
    CHECKF(s == SYM_OK, "%s", err.message);
    if (s != SYM_OK)
        return;
    CHECK(f->header.n_tensors == 4);
    CHECK(strcmp(f->header.tensors[0].name, "a") == 0); /* sorted by name */
    const sym_st_tensor *b = sym_st_header_find(&f->header, "b");
    CHECK(b != NULL);
    CHECK(b != NULL && (b->offset % 4) != 0);
    sym_tensor_ref ref = {f, b};
    float got[3];
    CHECK(sym_tensor_read_f32(&ref, 0, 3, got, &err) == SYM_OK);
    CHECK(memcmp(got, values, sizeof values) == 0);

    const sym_st_tensor *e = sym_st_header_find(&f->header, "e");
    CHECK(e != NULL);
    if (e != NULL) {
        CHECK(e->numel == 0);
        CHECK(e->nbytes == 0);
        CHECK(e->ndim == 2);
    }
    const sym_st_tensor *scalar = sym_st_header_find(&f->header, "s");
    CHECK(scalar != NULL);
    if (scalar != NULL) {
        CHECK(scalar->ndim == 0);
        CHECK(scalar->numel == 1);
    }
    ref.info = scalar;
    CHECK(sym_tensor_read_f32(&ref, 0, 1, got, &err) == SYM_OK);
    CHECK(got[0] == 1.0f);
    ref.info = sym_st_header_find(&f->header, "a");
    CHECK(sym_tensor_read_f32(&ref, 0, 1, got, &err) == SYM_ERR_UNSUPPORTED);
    CHECK(strstr(err.message, "dtype U8") != NULL);
    CHECK(f->header.meta_strict);
    sym_st_close(f);
}

static void check_metadata_lenient(void)
{
    const char *dir = test_tmpdir("meta");
    char path[512];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    write_raw(path, "{\"__metadata__\":{\"format\":\"pt\",\"n\":3},"
                    "\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
              "\0\0\0\0", 4);
    sym_st_file *f;
    sym_error err;
    CHECK(sym_st_open(&f, path, &err) == SYM_OK);
    CHECK(!f->header.meta_strict);
    CHECK(f->header.n_meta == 1);
    CHECK(f->header.n_meta >= 1 && strcmp(f->header.meta[0].value, "pt") == 0);
    sym_st_close(f);
}

static void check_missing_tensor_hint(void)
{
    synth_spec spec;
    synth_default(&spec);
    spec.tied = false;
    const char *dir = test_tmpdir("hint");
    CHECK(synth_write(dir, &spec) == 0);
    /* Claim tied embeddings false but remove lm_head by rewriting as tied=true weights with
     * tie_word_embeddings false in the config. */
    spec.tied = true;
    CHECK(synth_write(dir, &spec) == 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "sed -i 's/\"tie_word_embeddings\": true/\"tie_word_embeddings\": false/' "
             "%s/config.json", dir);
    CHECK(system(cmd) == 0);
    sym_model *m;
    sym_error err;
    CHECK(sym_model_open(&m, dir, &err) == SYM_ERR_NOT_FOUND);
    CHECKF(strstr(err.message, "lm_head.weight") != NULL, "%s", err.message);
    CHECKF(strstr(err.message, "tie_word_embeddings is false") != NULL, "%s", err.message);
}

int main(void)
{
    const sym_dtype dtypes[] = {SYM_DTYPE_F32, SYM_DTYPE_F16, SYM_DTYPE_BF16};
    for (int d = 0; d < 3; d++) {
        for (int tied = 0; tied < 2; tied++) {
            check_layout(dtypes[d], tied, 1, NULL);
            check_layout(dtypes[d], tied, 3, NULL);
        }
    }
    check_layout(SYM_DTYPE_F32, false, 2, "");
    check_layout(SYM_DTYPE_BF16, true, 1, "base_model.model.model.");
    check_unaligned_and_empty();
    check_metadata_lenient();
    check_missing_tensor_hint();
    return test_finish("test_reader");
}
