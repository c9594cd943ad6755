/* LD_PRELOAD fault injector for the I/O tests (tests/t_fault*.sh).
 *
 * Environment:
 *   SYMPHONY_FAULT       one of write-eio, write-enospc, fsync-eio, read-eio, read-short,
 *                        truncate, replace, fill
 *   SYMPHONY_FAULT_AT    the N-th matching call (1-based) gets the fault; default 1.
 *                        write-* and fsync-eio fail that call and every later one, so the
 *                        retry loops in the program cannot write past the fault.
 *   SYMPHONY_FAULT_PATH  truncate: the file cut to half its size at the N-th write call;
 *                        replace: the file replaced by a copy of itself (rename over it,
 *                        so a new inode and modification time) at the N-th write call;
 *                        fill: a file grown at the N-th write call until its file system
 *                        is full, as another process filling the disk would.
 *
 * Matching calls: write-* counts write/pwrite/pwritev on regular files, fsync-eio counts
 * fsync/fdatasync, read-* counts read/pread on regular files. read-short makes every
 * matching call from the N-th on return at most 7 bytes, which a correct read loop
 * absorbs. The shim writes one line to stderr when it injects its first fault.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef ssize_t (*pwrite_fn)(int, const void *, size_t, off_t);
typedef ssize_t (*pwritev_fn)(int, const struct iovec *, int, off_t);
typedef ssize_t (*read_fn)(int, void *, size_t);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);
typedef int (*sync_fn)(int);

static long call_count;
static bool announced;

static const char *fault_name(void)
{
    const char *name = getenv("SYMPHONY_FAULT");
    return name != NULL ? name : "";
}

static long fault_at(void)
{
    const char *text = getenv("SYMPHONY_FAULT_AT");
    long at = text != NULL ? atol(text) : 1;
    return at > 0 ? at : 1;
}

static bool is_regular(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static void *real(const char *symbol)
{
    return dlsym(RTLD_NEXT, symbol);
}

static void announce(const char *what)
{
    if (announced)
        return;
    announced = true;
    char line[256];
    int n = snprintf(line, sizeof line, "faultshim: %s at call %ld\n", what, call_count);
    write_fn raw = (write_fn)real("write");
    if (n > 0 && raw != NULL)
        (void)raw(2, line, (size_t)n);
}

/* Cuts SYMPHONY_FAULT_PATH to half its size. */
static void truncate_target(void)
{
    const char *path = getenv("SYMPHONY_FAULT_PATH");
    struct stat st;
    if (path != NULL && stat(path, &st) == 0 && truncate(path, st.st_size / 2) == 0)
        announce("truncated the source");
}

/* Replaces SYMPHONY_FAULT_PATH by a byte-identical copy, as an editor or a download tool
 * that writes a new file and renames it would. */
static void replace_target(void)
{
    const char *path = getenv("SYMPHONY_FAULT_PATH");
    if (path == NULL)
        return;
    char copy[4096];
    snprintf(copy, sizeof copy, "%s.faultshim-new", path);
    int in = open(path, O_RDONLY | O_CLOEXEC);
    int out = open(copy, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    static char block[65536];
    ssize_t n = 0;
    read_fn raw_read = (read_fn)real("read");
    write_fn raw_write = (write_fn)real("write");
    while (in >= 0 && out >= 0 && (n = raw_read(in, block, sizeof block)) > 0)
        if (raw_write(out, block, (size_t)n) != n)
            n = -1;
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (in >= 0 && out >= 0 && n == 0 && rename(copy, path) == 0)
        announce("replaced the source");
}

/* Grows SYMPHONY_FAULT_PATH until its file system has no free block left. */
static void fill_file_system(void)
{
    const char *path = getenv("SYMPHONY_FAULT_PATH");
    if (path == NULL)
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    static char block[65536];
    write_fn raw = (write_fn)real("write");
    while (raw(fd, block, sizeof block) > 0)
        continue;
    while (raw(fd, block, 1) > 0)
        continue;
    close(fd);
    announce("filled the file system");
}

/* Decides the fate of one write call: 0 to go ahead, or the errno to fail it with. */
static int write_fault(int fd)
{
    const char *name = fault_name();
    bool write_errors = strcmp(name, "write-eio") == 0 || strcmp(name, "write-enospc") == 0;
    bool actions = strcmp(name, "truncate") == 0 || strcmp(name, "replace") == 0 ||
                   strcmp(name, "fill") == 0;
    if ((!write_errors && !actions) || !is_regular(fd))
        return 0;
    long n = ++call_count;
    if (actions) {
        if (n != fault_at())
            return 0;
        if (strcmp(name, "fill") == 0)
            fill_file_system();
        else if (strcmp(name, "replace") == 0)
            replace_target();
        else
            truncate_target();
        return 0;
    }
    if (n < fault_at())
        return 0;
    announce(name);
    return strcmp(name, "write-eio") == 0 ? EIO : ENOSPC;
}

ssize_t write(int fd, const void *buf, size_t count)
{
    int e = write_fault(fd);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return ((write_fn)real("write"))(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    int e = write_fault(fd);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return ((pwrite_fn)real("pwrite"))(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    return pwrite(fd, buf, count, offset);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    int e = write_fault(fd);
    if (e != 0) {
        errno = e;
        return -1;
    }
    return ((pwritev_fn)real("pwritev"))(fd, iov, iovcnt, offset);
}

static int sync_fault(void)
{
    if (strcmp(fault_name(), "fsync-eio") != 0 || ++call_count < fault_at())
        return 0;
    announce("fsync-eio");
    return EIO;
}

int fsync(int fd)
{
    int e = sync_fault();
    if (e != 0) {
        errno = e;
        return -1;
    }
    return ((sync_fn)real("fsync"))(fd);
}

int fdatasync(int fd)
{
    int e = sync_fault();
    if (e != 0) {
        errno = e;
        return -1;
    }
    return ((sync_fn)real("fdatasync"))(fd);
}

/* Decides the fate of one read call: -1 to fail it with EIO, otherwise the byte count to
 * pass on (count itself when there is no fault). */
static ssize_t read_fault(int fd, size_t count)
{
    const char *name = fault_name();
    bool eio = strcmp(name, "read-eio") == 0;
    if ((!eio && strcmp(name, "read-short") != 0) || !is_regular(fd))
        return (ssize_t)count;
    if (++call_count < fault_at())
        return (ssize_t)count;
    announce(name);
    if (eio)
        return -1;
    return (ssize_t)(count < 7 ? count : 7);
}

ssize_t read(int fd, void *buf, size_t count)
{
    ssize_t allowed = read_fault(fd, count);
    if (allowed < 0) {
        errno = EIO;
        return -1;
    }
    return ((read_fn)real("read"))(fd, buf, (size_t)allowed);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    ssize_t allowed = read_fault(fd, count);
    if (allowed < 0) {
        errno = EIO;
        return -1;
    }
    return ((pread_fn)real("pread"))(fd, buf, (size_t)allowed, offset);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset)
{
    return pread(fd, buf, count, offset);
}
