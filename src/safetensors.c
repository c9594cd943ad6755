/* safetensors header parsing and file mapping. Every header is hostile input: counts are
 * 64-bit, products are overflow-checked, and offsets are compared with the file size
 * before any data is touched. */
#include "symphony/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    unsigned bits;
} dtype_table[SYM_DTYPE_COUNT] = {
    [SYM_DTYPE_BOOL] = {"BOOL", 8},        [SYM_DTYPE_U8] = {"U8", 8},
    [SYM_DTYPE_I8] = {"I8", 8},            [SYM_DTYPE_F8_E5M2] = {"F8_E5M2", 8},
    [SYM_DTYPE_F8_E4M3] = {"F8_E4M3", 8},  [SYM_DTYPE_F8_E8M0] = {"F8_E8M0", 8},
    [SYM_DTYPE_F4] = {"F4", 4},            [SYM_DTYPE_F6_E2M3] = {"F6_E2M3", 6},
    [SYM_DTYPE_F6_E3M2] = {"F6_E3M2", 6},  [SYM_DTYPE_I16] = {"I16", 16},
    [SYM_DTYPE_U16] = {"U16", 16},         [SYM_DTYPE_F16] = {"F16", 16},
    [SYM_DTYPE_BF16] = {"BF16", 16},       [SYM_DTYPE_I32] = {"I32", 32},
    [SYM_DTYPE_U32] = {"U32", 32},         [SYM_DTYPE_F32] = {"F32", 32},
    [SYM_DTYPE_F64] = {"F64", 64},         [SYM_DTYPE_I64] = {"I64", 64},
    [SYM_DTYPE_U64] = {"U64", 64},         [SYM_DTYPE_C64] = {"C64", 64},
};

const char *sym_dtype_name(sym_dtype dtype)
{
    return (unsigned)dtype < SYM_DTYPE_COUNT ? dtype_table[dtype].name : "?";
}

unsigned sym_dtype_bits(sym_dtype dtype)
{
    return (unsigned)dtype < SYM_DTYPE_COUNT ? dtype_table[dtype].bits : 0;
}

bool sym_dtype_from_name(const char *name, sym_dtype *dtype)
{
    for (int i = 0; i < SYM_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_table[i].name) == 0) {
            *dtype = (sym_dtype)i;
            return true;
        }
    }
    return false;
}

/* Counts non-overlapping occurrences of needle. A plain loop rather than repeated memmem:
 * sanitizer interceptors check the whole remaining range on every memmem call, which makes
 * a scan of a 100 MB header quadratic. */
static uint64_t count_occurrences(const uint8_t *text, size_t len, const char *needle)
{
    size_t needle_len = strlen(needle);
    uint64_t count = 0;
    for (size_t i = 0; i + needle_len <= len;) {
        size_t k = 0;
        while (k < needle_len && text[i + k] == (uint8_t)needle[k])
            k++;
        if (k == needle_len) {
            count++;
            i += needle_len;
        } else {
            i++;
        }
    }
    return count;
}

static uint64_t read_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int compare_by_name(const void *a, const void *b)
{
    return strcmp(((const sym_st_tensor *)a)->name, ((const sym_st_tensor *)b)->name);
}

static int compare_name_key(const void *key, const void *entry)
{
    return strcmp(key, ((const sym_st_tensor *)entry)->name);
}

static int compare_by_offset(const void *a, const void *b)
{
    const sym_st_tensor *x = *(const sym_st_tensor *const *)a;
    const sym_st_tensor *y = *(const sym_st_tensor *const *)b;
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

static sym_status parse_metadata(sym_st_header *header, json_t *meta, const char *name,
                                 sym_error *err)
{
    if (!json_is_object(meta)) {
        header->meta_strict = false;
        return SYM_OK;
    }
    size_t count = json_object_size(meta);
    header->meta = calloc(count ? count : 1, sizeof *header->meta);
    if (header->meta == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory reading __metadata__",
                             name);
    const char *key;
    json_t *value;
    json_object_foreach(meta, key, value) {
        if (!json_is_string(value)) {
            header->meta_strict = false;
            continue;
        }
        sym_st_meta *m = &header->meta[header->n_meta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(value));
        if (m->key == NULL || m->value == NULL) {
            free(m->key);
            free(m->value);
            return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", name);
        }
        header->n_meta++;
    }
    return SYM_OK;
}

/* Reads a JSON integer in [0, 2^63) into *value. */
static bool json_get_u64(json_t *v, uint64_t *value)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *value = (uint64_t)json_integer_value(v);
    return true;
}

static sym_status parse_tensor(sym_st_tensor *t, const char *tname, json_t *entry,
                               const char *name, sym_error *err)
{
    if (!json_is_object(entry))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': entry is not an object", name, tname);

    json_t *dtype = json_object_get(entry, "dtype");
    json_t *shape = json_object_get(entry, "shape");
    json_t *offsets = json_object_get(entry, "data_offsets");
    if (!json_is_string(dtype) || !json_is_array(shape) || !json_is_array(offsets))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': expected string 'dtype', array 'shape' and "
                             "array 'data_offsets'", name, tname);
    if (json_object_size(entry) != 3)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': unexpected key beside dtype, shape and "
                             "data_offsets", name, tname);
    if (!sym_dtype_from_name(json_string_value(dtype), &t->dtype))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%s'",
                             name, tname, json_string_value(dtype));

    size_t ndim = json_array_size(shape);
    if (ndim > SYM_ST_MAX_DIMS)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: tensor '%s': rank %zu exceeds the limit of %d", name, tname,
                             ndim, SYM_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    t->numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        uint64_t dim;
        if (!json_get_u64(json_array_get(shape, i), &dim))
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "%s: tensor '%s': shape[%zu] is not a non-negative integer",
                                 name, tname, i);
        t->shape[i] = dim;
        if (__builtin_mul_overflow(t->numel, dim, &t->numel))
            return sym_error_set(err, SYM_ERR_FORMAT,
                                 "%s: tensor '%s': element count of the shape overflows 64 bits",
                                 name, tname);
    }

    uint64_t begin, end;
    if (json_array_size(offsets) != 2 || !json_get_u64(json_array_get(offsets, 0), &begin) ||
        !json_get_u64(json_array_get(offsets, 1), &end))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets must be two non-negative integers",
                             name, tname);
    if (end < begin)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets end %llu is before begin %llu",
                             name, tname, (unsigned long long)end, (unsigned long long)begin);

    uint64_t bits;
    if (__builtin_mul_overflow(t->numel, (uint64_t)sym_dtype_bits(t->dtype), &bits))
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': byte size of the shape overflows 64 bits",
                             name, tname);
    if (bits % 8 != 0)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': %llu elements of %s do not fill whole bytes",
                             name, tname, (unsigned long long)t->numel,
                             sym_dtype_name(t->dtype));
    t->nbytes = end - begin;
    if (t->nbytes != bits / 8)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets span %llu bytes, but shape and "
                             "dtype %s need %llu", name, tname, (unsigned long long)t->nbytes,
                             sym_dtype_name(t->dtype), (unsigned long long)(bits / 8));
    t->offset = begin; /* relative for now; made absolute after the tiling check */
    t->name = strdup(tname);
    if (t->name == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", name);
    return SYM_OK;
}

/* Checks that the tensors, sorted by offset, tile [0, data_len) exactly. */
static sym_status check_tiling(sym_st_header *header, uint64_t data_len, const char *name,
                               sym_error *err)
{
    size_t n = header->n_tensors;
    const sym_st_tensor **order = malloc((n ? n : 1) * sizeof *order);
    if (order == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", name);
    for (size_t i = 0; i < n; i++)
        order[i] = &header->tensors[i];
    qsort(order, n, sizeof *order, compare_by_offset);

    sym_status status = SYM_OK;
    uint64_t expected = 0;
    for (size_t i = 0; i < n && status == SYM_OK; i++) {
        const sym_st_tensor *t = order[i];
        if (t->offset > expected)
            status = sym_error_set(err, SYM_ERR_FORMAT,
                                   "%s: tensor '%s': data begins at %llu, leaving a hole after "
                                   "byte %llu", name, t->name, (unsigned long long)t->offset,
                                   (unsigned long long)expected);
        else if (t->offset < expected)
            status = sym_error_set(err, SYM_ERR_FORMAT,
                                   "%s: tensor '%s': data at %llu overlaps the previous tensor, "
                                   "which ends at %llu", name, t->name,
                                   (unsigned long long)t->offset, (unsigned long long)expected);
        expected = t->offset + t->nbytes;
    }
    if (status == SYM_OK && expected != data_len)
        status = sym_error_set(err, SYM_ERR_FORMAT,
                               "%s: tensor data ends at byte %llu but the data section holds "
                               "%llu bytes (%s)", name, (unsigned long long)expected,
                               (unsigned long long)data_len,
                               expected < data_len ? "trailing bytes" : "file truncated");
    free(order);
    return status;
}

static sym_status parse_json(sym_st_header *header, json_t *root, uint64_t data_len,
                             const char *name, sym_error *err)
{
    if (!json_is_object(root))
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: header is not a JSON object", name);

    size_t count = json_object_size(root);
    header->tensors = calloc(count ? count : 1, sizeof *header->tensors);
    if (header->tensors == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory for %zu tensors", name,
                             count);
    header->meta_strict = true;

    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        sym_status status;
        if (strcmp(key, "__metadata__") == 0) {
            status = parse_metadata(header, value, name, err);
        } else {
            status = parse_tensor(&header->tensors[header->n_tensors], key, value, name, err);
            if (status == SYM_OK)
                header->n_tensors++;
        }
        if (status != SYM_OK)
            return status;
    }

    sym_status status = check_tiling(header, data_len, name, err);
    if (status != SYM_OK)
        return status;
    for (size_t i = 0; i < header->n_tensors; i++)
        header->tensors[i].offset += header->data_start;
    qsort(header->tensors, header->n_tensors, sizeof *header->tensors, compare_by_name);
    return SYM_OK;
}

sym_status sym_st_header_parse(sym_st_header *header, const uint8_t *prefix, size_t prefix_len,
                               uint64_t file_size, const char *name, sym_error *err)
{
    memset(header, 0, sizeof *header);
    if (file_size < 8 || prefix_len < 8)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: file is %llu bytes, too short for a safetensors header",
                             name, (unsigned long long)file_size);
    uint64_t n = read_le64(prefix);
    if (n > SYM_ST_MAX_HEADER)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: header length %llu exceeds the limit of %u bytes", name,
                             (unsigned long long)n, SYM_ST_MAX_HEADER);
    if (n > file_size - 8)
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: header length %llu runs past the end of the %llu-byte file "
                             "(truncated file?)", name, (unsigned long long)n,
                             (unsigned long long)file_size);
    if (prefix_len < 8 + n)
        return sym_error_set(err, SYM_ERR_INVALID, "%s: header not fully loaded", name);
    if (n == 0 || prefix[8] != '{')
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: header does not start with '{'", name);
    header->header_bytes = n;
    header->data_start = 8 + n;

    /* Bound the work of a hostile header before building its JSON tree: every tensor entry
     * carries one "data_offsets" key, so their count bounds the tensor count. */
    uint64_t entries = count_occurrences(prefix + 8, (size_t)n, "data_offsets");
    if (entries > SYM_ST_MAX_TENSORS)
        return sym_error_set(err, SYM_ERR_LIMIT,
                             "%s: header lists about %llu tensors, more than the limit of %u",
                             name, (unsigned long long)entries, SYM_ST_MAX_TENSORS);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)prefix + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL && jerr.text[0] == '\0')
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory parsing the %llu-byte header",
                             name, (unsigned long long)n);
    if (root == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: invalid header JSON at byte %d: %s",
                             name, jerr.position, jerr.text);
    sym_status status = parse_json(header, root, file_size - header->data_start, name, err);
    json_decref(root);
    if (status != SYM_OK)
        sym_st_header_free(header);
    return status;
}

void sym_st_header_free(sym_st_header *header)
{
    if (header == NULL)
        return;
    for (size_t i = 0; i < header->n_tensors; i++)
        free(header->tensors[i].name);
    for (size_t i = 0; i < header->n_meta; i++) {
        free(header->meta[i].key);
        free(header->meta[i].value);
    }
    free(header->tensors);
    free(header->meta);
    memset(header, 0, sizeof *header);
}

const sym_st_tensor *sym_st_header_find(const sym_st_header *header, const char *name)
{
    return bsearch(name, header->tensors, header->n_tensors, sizeof *header->tensors,
                   compare_name_key);
}

sym_status sym_st_open(sym_st_file **out, const char *path, sym_error *err)
{
    *out = NULL;
    sym_st_file *file = calloc(1, sizeof *file);
    if (file != NULL)
        file->fd = -1;
    if (file == NULL || (file->path = strdup(path)) == NULL) {
        free(file);
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    /* O_NONBLOCK so that a FIFO without a writer cannot block the open; a FIFO is then
     * rejected as not a regular file. */
    file->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (file->fd < 0) {
        sym_status status = sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                                          "%s: cannot open: %s", path, strerror(errno));
        sym_st_close(file);
        return status;
    }
    struct stat st;
    if (fstat(file->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        sym_st_close(file);
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: not a regular file", path);
    }
    file->file_size = (uint64_t)st.st_size;
    if (file->file_size > 0) {
        void *map = mmap(NULL, file->file_size, PROT_READ, MAP_SHARED, file->fd, 0);
        if (map == MAP_FAILED) {
            sym_status status = sym_error_set(err, SYM_ERR_IO, "%s: mmap failed: %s", path,
                                              strerror(errno));
            sym_st_close(file);
            return status;
        }
        file->map = map;
    }
    sym_status status = sym_st_header_parse(&file->header, file->map, file->file_size,
                                            file->file_size, path, err);
    if (status != SYM_OK) {
        sym_st_close(file);
        return status;
    }
    *out = file;
    return SYM_OK;
}

void sym_st_close(sym_st_file *file)
{
    if (file == NULL)
        return;
    sym_st_header_free(&file->header);
    if (file->map != NULL)
        munmap((void *)(uintptr_t)file->map, file->file_size);
    if (file->fd >= 0)
        close(file->fd);
    free(file->path);
    free(file);
}
