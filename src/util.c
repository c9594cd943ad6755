/* Small helpers shared by the library modules. */
#include "model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

sym_status sym_json_load_file(const char *path, size_t max_bytes, json_t **root, sym_error *err)
{
    *root = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
    if (fd < 0)
        return sym_error_set(err, errno == ENOENT ? SYM_ERR_NOT_FOUND : SYM_ERR_IO,
                             "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return sym_error_set(err, SYM_ERR_LIMIT, "%s: %lld bytes exceeds the limit of %zu bytes",
                             path, (long long)st.st_size, max_bytes);
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    if (buf == NULL) {
        close(fd);
        return sym_error_set(err, SYM_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, buf + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            sym_status s = sym_error_set(err, SYM_ERR_IO, "%s: read failed: %s", path,
                                         n < 0 ? strerror(errno) : "unexpected end of file");
            free(buf);
            close(fd);
            return s;
        }
        done += (size_t)n;
    }
    close(fd);

    json_error_t jerr;
    *root = json_loadb(buf, size, JSON_REJECT_DUPLICATES, &jerr);
    free(buf);
    if (*root == NULL)
        return sym_error_set(err, SYM_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s",
                             path, jerr.line, jerr.column, jerr.text);
    return SYM_OK;
}

size_t sym_edit_distance(const char *a, const char *b, size_t limit)
{
    size_t la = strlen(a), lb = strlen(b);
    if ((la > lb ? la - lb : lb - la) > limit)
        return limit + 1;
    size_t *row = malloc((lb + 1) * sizeof *row);
    if (row == NULL)
        return limit + 1;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        size_t row_min = row[0];
        for (size_t j = 1; j <= lb; j++) {
            size_t above = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diagonal + cost;
            if (above + 1 < best)
                best = above + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
            if (best < row_min)
                row_min = best;
        }
        if (row_min > limit) {
            free(row);
            return limit + 1;
        }
    }
    size_t d = row[lb];
    free(row);
    return d > limit ? limit + 1 : d;
}
