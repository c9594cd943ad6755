/* Elementwise kernels on the real fixture weights: f32 -> bf16 in every variant against the
 * BF16 copy of the legal expert (written by torch-identical RNE), bf16 -> f32 back, RMSNorm
 * on real embedding rows, and log-sum-exp on llama2.c's reference logits, each against a
 * double-precision formula. Skips when the fixtures are absent. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/kernels.h"
#include "testlib.h"

/* A whole safetensors file in memory, with its parsed header. */
typedef struct st_file {
    unsigned char *bytes;
    size_t size;
    json_t *header;
    const unsigned char *data; /* first byte after the header */
} st_file;

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long length = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = length > 0 ? malloc((size_t)length) : NULL;
    if (bytes != NULL && fread(bytes, 1, (size_t)length, f) != (size_t)length) {
        free(bytes);
        bytes = NULL;
    }
    fclose(f);
    *size = (size_t)length;
    return bytes;
}

static int st_open(st_file *st, const char *path)
{
    uint64_t header_length = 0;
    st->bytes = read_file(path, &st->size);
    if (st->bytes == NULL || st->size < 8)
        return -1;
    for (int i = 7; i >= 0; i--)
        header_length = (header_length << 8) | st->bytes[i];
    if (header_length > st->size - 8)
        return -1;
    st->header = json_loadb((const char *)st->bytes + 8, header_length, 0, NULL);
    st->data = st->bytes + 8 + header_length;
    return st->header != NULL ? 0 : -1;
}

static void st_close(st_file *st)
{
    json_decref(st->header);
    free(st->bytes);
}

/* Returns the data of a tensor of the given dtype and sets its byte length, or returns
 * NULL when the tensor is missing, of another dtype or out of bounds. */
static const unsigned char *st_tensor(const st_file *st, const char *name, const char *dtype,
                                      size_t *length)
{
    json_t *entry = json_object_get(st->header, name);
    const char *found = json_string_value(json_object_get(entry, "dtype"));
    json_t *offsets = json_object_get(entry, "data_offsets");
    if (found == NULL || strcmp(found, dtype) != 0 || json_array_size(offsets) != 2)
        return NULL;
    json_int_t begin = json_integer_value(json_array_get(offsets, 0));
    json_int_t end = json_integer_value(json_array_get(offsets, 1));
    if (begin < 0 || end < begin || (size_t)end > st->size - (size_t)(st->data - st->bytes))
        return NULL;
    *length = (size_t)(end - begin);
    return st->data + begin;
}

/* Converts every F32 tensor of f32_file to bf16 and compares with bf16_file. */
static void check_bf16_copy(const sym_kernels *k, const st_file *f32_file,
                            const st_file *bf16_file)
{
    const char *name;
    json_t *entry;
    size_t tensors = 0, bad_narrow = 0, bad_widen = 0;
    json_object_foreach(f32_file->header, name, entry) {
        size_t f32_length, bf16_length;
        const unsigned char *f32_data = st_tensor(f32_file, name, "F32", &f32_length);
        const unsigned char *bf16_data = st_tensor(bf16_file, name, "BF16", &bf16_length);
        if (f32_data == NULL)
            continue;
        CHECKF(bf16_data != NULL, "tensor '%s' missing from the BF16 file", name);
        CHECKF(bf16_data == NULL || bf16_length * 2 == f32_length, "tensor '%s': %zu BF16 bytes",
               name, bf16_length);
        if (bf16_data == NULL || bf16_length * 2 != f32_length)
            continue;

        size_t n = f32_length / 4;
        float *source = malloc(n * sizeof *source);
        float *widened = malloc((n + 1) * sizeof *widened);
        unsigned char *narrow = malloc(2 * n + 1);
        if (source == NULL || widened == NULL || narrow == NULL)
            abort();
        memcpy(source, f32_data, f32_length);

        /* Odd output address, as for a tensor at an odd offset in a mapped file. */
        k->f32_to_bf16(narrow + 1, source, n);
        bad_narrow += memcmp(narrow + 1, bf16_data, bf16_length) != 0;
        k->bf16_to_f32(widened + 1, narrow + 1, n);
        for (size_t i = 0; i < n; i++) {
            double error = fabs((double)widened[1 + i] - (double)source[i]);
            bad_widen += error > ldexp(fabs((double)source[i]), -8);
        }
        tensors++;
        free(source);
        free(widened);
        free(narrow);
    }
    CHECKF(tensors == 47, "%s: %zu F32 tensors compared, expected 47", k->name, tensors);
    CHECKF(bad_narrow == 0, "%s f32_to_bf16: %zu tensors differ from the BF16 file", k->name,
           bad_narrow);
    CHECKF(bad_widen == 0, "%s bf16_to_f32: %zu values off by more than 2^-8 relative",
           k->name, bad_widen);
}

/* RMSNorm of every embedding row with the first layer's input norm. */
static void check_rmsnorm_real(const sym_kernels *k, const st_file *model)
{
    size_t embed_length, norm_length;
    const unsigned char *embed = st_tensor(model, "model.embed_tokens.weight", "F32",
                                           &embed_length);
    const unsigned char *norm = st_tensor(model, "model.layers.0.input_layernorm.weight",
                                          "F32", &norm_length);
    CHECK(embed != NULL);
    CHECK(norm != NULL);
    if (embed == NULL || norm == NULL || norm_length != 64 * 4)
        return;
    float x[64], w[64], y[64];
    memcpy(w, norm, sizeof w);
    size_t bad = 0;
    for (size_t row = 0; row < embed_length / sizeof x; row++) {
        memcpy(x, embed + row * sizeof x, sizeof x);
        k->rmsnorm(y, x, w, 64, 1e-5f);
        double sum = 0.0;
        for (int i = 0; i < 64; i++)
            sum += (double)x[i] * (double)x[i];
        double inverse = 1.0 / sqrt(sum / 64.0 + 1e-5);
        for (int i = 0; i < 64; i++) {
            double want = (double)w[i] * (double)x[i] * inverse;
            bad += fabs((double)y[i] - want) > 1e-5 * fabs(want) + 1e-30;
        }
    }
    CHECKF(bad == 0, "%s rmsnorm: %zu values off by more than 1e-5 relative", k->name, bad);
}

/* Log-sum-exp and softmax of each row of the reference logits [65, 512]. */
static void check_logits_real(const sym_kernels *k, const float *logits, size_t rows)
{
    size_t bad_lse = 0, bad_softmax = 0;
    float probabilities[512];
    for (size_t r = 0; r < rows; r++) {
        const float *row = logits + r * 512;
        double m = -INFINITY, sum = 0.0;
        for (int i = 0; i < 512; i++)
            m = fmax(m, (double)row[i]);
        for (int i = 0; i < 512; i++)
            sum += exp((double)row[i] - m);
        double lse = m + log(sum);
        bad_lse += fabs((double)k->logsumexp(row, 512) - lse) > 1e-5 * fmax(1.0, fabs(lse));

        k->softmax(probabilities, row, 512);
        for (int i = 0; i < 512; i++) {
            double want = exp((double)row[i] - lse);
            bad_softmax += fabs((double)probabilities[i] - want) > 1e-5 * want + 1e-30;
        }
    }
    CHECKF(bad_lse == 0, "%s logsumexp: %zu of %zu rows off", k->name, bad_lse, rows);
    CHECKF(bad_softmax == 0, "%s softmax: %zu values off", k->name, bad_softmax);
}

int main(void)
{
    const char *real = test_shared_real();
    if (real == NULL)
        test_skip("fixtures not found: set SYMPHONY_SHARED to the shared directory");

    char path[4096];
    st_file legal, legal_bf16;
    snprintf(path, sizeof path, "%s/legal/model.safetensors", real);
    CHECKF(st_open(&legal, path) == 0, "failed to read %s", path);
    snprintf(path, sizeof path, "%s/legal-bf16/model.safetensors", real);
    CHECKF(st_open(&legal_bf16, path) == 0, "failed to read %s", path);
    snprintf(path, sizeof path, "%s/reference/logits-base-llama2c.f32", real);
    size_t logits_size = 0;
    float *logits = (float *)read_file(path, &logits_size);
    CHECKF(logits != NULL && logits_size == 65 * 512 * 4, "failed to read %s", path);
    if (test_failures != 0)
        return test_finish("test_kernels_real");

    for (int v = 0; v < SYM_SIMD_VARIANT_COUNT; v++) {
        const sym_kernels *k;
        sym_error err;
        if (sym_kernels_get((sym_simd_variant)v, &k, &err) != SYM_OK) {
            printf("skipped: %s\n", err.message);
            continue;
        }
        check_bf16_copy(k, &legal, &legal_bf16);
        check_rmsnorm_real(k, &legal);
        check_logits_real(k, logits, 65);
        printf("%s: checked\n", k->name);
    }
    free(logits);
    st_close(&legal);
    st_close(&legal_bf16);
    return test_finish("test_kernels_real");
}
