/* Token id files: whitespace-separated decimal ids, the format of the *.ids fixtures. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symphony/tokenizer.h"

/* Largest id file read, in bytes (about 100 million ids). */
#define IDS_FILE_MAX ((size_t)1 << 30)

static bool is_space(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static sym_status push(int32_t **ids, size_t *count, size_t *capacity, int32_t id,
                       sym_error *err)
{
    if (*count == *capacity) {
        size_t grown = *capacity < 1024 ? 1024 : *capacity * 2;
        int32_t *p = realloc(*ids, grown * sizeof *p);
        if (p == NULL)
            return sym_error_set(err, SYM_ERR_NOMEM, "out of memory for %zu token ids", grown);
        *ids = p;
        *capacity = grown;
    }
    (*ids)[(*count)++] = id;
    return SYM_OK;
}

sym_status sym_ids_parse(const char *text, size_t len, size_t vocab_size, const char *name,
                         int32_t **ids, size_t *count, sym_error *err)
{
    *ids = NULL;
    *count = 0;
    size_t capacity = 0;
    size_t line = 1;
    for (size_t i = 0; i < len;) {
        if (is_space(text[i])) {
            line += text[i] == '\n';
            i++;
            continue;
        }
        size_t start = i;
        uint64_t value = 0;
        while (i < len && text[i] >= '0' && text[i] <= '9' && value <= UINT32_MAX)
            value = value * 10 + (uint64_t)(text[i++] - '0');
        sym_status status = SYM_OK;
        if (i == start || (i < len && !is_space(text[i])))
            status = sym_error_set(err, SYM_ERR_FORMAT,
                                   "%s: line %zu, id number %zu: '%.*s' is not a decimal "
                                   "token id; expected whitespace-separated ids",
                                   name, line, *count + 1, (int)(i - start + 1 > 32 ? 32 :
                                   i - start + 1), text + start);
        else if (value >= vocab_size)
            status = sym_error_set(err, SYM_ERR_INVALID,
                                   "%s: line %zu, id number %zu: id %.*s is out of range for "
                                   "a vocabulary of %zu ids", name, line, *count + 1,
                                   (int)(i - start > 32 ? 32 : i - start), text + start,
                                   vocab_size);
        else
            status = push(ids, count, &capacity, (int32_t)value, err);
        if (status != SYM_OK) {
            free(*ids);
            *ids = NULL;
            *count = 0;
            return status;
        }
    }
    return SYM_OK;
}

/* Reads a whole stream of at most IDS_FILE_MAX bytes. */
static sym_status read_stream(FILE *file, const char *path, char **data, size_t *len,
                              sym_error *err)
{
    size_t capacity = 1 << 16;
    size_t length = 0;
    char *buffer = malloc(capacity);
    while (buffer != NULL) {
        length += fread(buffer + length, 1, capacity - length, file);
        if (length < capacity)
            break;
        if (capacity >= IDS_FILE_MAX) {
            free(buffer);
            return sym_error_set(err, SYM_ERR_LIMIT, "%s: more than %zu bytes", path,
                                 IDS_FILE_MAX);
        }
        capacity *= 2;
        char *grown = realloc(buffer, capacity);
        if (grown == NULL)
            free(buffer);
        buffer = grown;
    }
    if (buffer == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    if (ferror(file)) {
        free(buffer);
        return sym_error_set(err, SYM_ERR_IO, "%s: read failed", path);
    }
    *data = buffer;
    *len = length;
    return SYM_OK;
}

sym_status sym_ids_load(const char *path, size_t vocab_size, int32_t **ids, size_t *count,
                        sym_error *err)
{
    *ids = NULL;
    *count = 0;
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *file = is_stdin ? stdin : fopen(path, "rb");
    if (file == NULL)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    char *data = NULL;
    size_t len = 0;
    const char *name = is_stdin ? "standard input" : path;
    sym_status status = read_stream(file, name, &data, &len, err);
    if (!is_stdin)
        fclose(file);
    if (status != SYM_OK)
        return status;
    status = sym_ids_parse(data, len, vocab_size, name, ids, count, err);
    free(data);
    return status;
}

/* Returns the offset of the first byte that is not part of valid UTF-8 (no overlong forms,
 * surrogates or code points above U+10FFFF), or len when the text is valid. */
static size_t invalid_utf8_offset(const unsigned char *text, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = text[i];
        size_t extra;
        uint32_t min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1, min = 0x80, cp = c & 0x1fu;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, min = 0x800, cp = c & 0x0fu;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, min = 0x10000, cp = c & 0x07u;
        } else {
            return i;
        }
        if (len - i <= extra)
            return i;
        for (size_t k = 1; k <= extra; k++) {
            if ((text[i + k] & 0xc0) != 0x80)
                return i;
            cp = (cp << 6) | (text[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += extra + 1;
    }
    return len;
}

/* Opens a text file for reading without blocking on a FIFO, and only if it is regular. */
static FILE *open_regular(const char *path, sym_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                      "%s: cannot open text file: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        sym_error_set(err, SYM_ERR_INVALID, "%s: not a regular file", path);
        return NULL;
    }
    FILE *file = fdopen(fd, "rb");
    if (file == NULL) {
        close(fd);
        sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    return file;
}

sym_status sym_text_load(const char *path, char **data, size_t *len, sym_error *err)
{
    FILE *file = strcmp(path, "-") == 0 ? stdin : open_regular(path, err);
    if (file == NULL)
        return err != NULL ? err->status : SYM_ERR_IO;
    size_t capacity = 1 << 16;
    size_t length = 0;
    char *buffer = malloc(capacity + 1);
    while (buffer != NULL) {
        length += fread(buffer + length, 1, capacity - length, file);
        if (length < capacity || capacity >= SYM_TEXT_FILE_MAX)
            break;
        capacity *= 2;
        char *grown = realloc(buffer, capacity + 1);
        if (grown == NULL)
            free(buffer);
        buffer = grown;
    }
    bool failed = ferror(file) != 0;
    if (file != stdin)
        fclose(file);
    if (buffer == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory reading the text", path);
    if (failed || length >= SYM_TEXT_FILE_MAX) {
        free(buffer);
        return sym_error_set(err, failed ? SYM_ERR_IO : SYM_ERR_LIMIT,
                             "%s: %s", path, failed ? "read error"
                                                    : "text file exceeds the limit of 1 GiB");
    }
    size_t bad = invalid_utf8_offset((const unsigned char *)buffer, length);
    if (bad < length) {
        unsigned char byte = (unsigned char)buffer[bad];
        free(buffer);
        return sym_error_set(err, SYM_ERR_FORMAT,
                             "%s: invalid UTF-8 at byte %zu (0x%02x); text files must be UTF-8",
                             path, bad, byte);
    }
    buffer[length] = '\0';
    *data = buffer;
    *len = length;
    return SYM_OK;
}
