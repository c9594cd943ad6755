/* Status codes and error details shared by every symphony-stream module.
 *
 * Library functions return a sym_status and, when they fail, fill a caller-owned
 * sym_error with one line that names the file, tensor or key, the bad value and the
 * expected one. The library never prints and never exits.
 */
#ifndef SYMPHONY_STATUS_H
#define SYMPHONY_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sym_status {
    SYM_OK = 0,
    SYM_ERR_IO,           /* open, read, write, mmap or fsync failed */
    SYM_ERR_NOMEM,        /* allocation failed */
    SYM_ERR_FORMAT,       /* malformed input file */
    SYM_ERR_INVALID,      /* invalid argument or setting */
    SYM_ERR_UNSUPPORTED,  /* valid input that this program does not handle */
    SYM_ERR_INCOMPATIBLE, /* models that cannot be merged */
    SYM_ERR_NOT_FOUND,    /* missing file, tensor or key */
    SYM_ERR_LIMIT,        /* a documented size limit was exceeded */
    SYM_ERR_NONFINITE,    /* NaN or Inf where finite values are required */
    SYM_ERR_CHECKSUM,     /* stored data does not match its checksum */
    SYM_ERR_INTERRUPTED,  /* stopped by a signal; state is resumable */
    SYM_ERR_BUSY,         /* another process holds the lock */
    SYM_STATUS_COUNT
} sym_status;

#define SYM_ERROR_MESSAGE_MAX 1024

/* Details of the last failure: the status and a one-line message. */
typedef struct sym_error {
    sym_status status;
    char message[SYM_ERROR_MESSAGE_MAX];
} sym_error;

/* Returns a short constant description of a status ("malformed input", ...). */
const char *sym_status_str(sym_status status);

/* Records a failure in err (which may be NULL) and returns status, so that callers can
 * write `return sym_error_set(err, SYM_ERR_FORMAT, "%s: ...", path);`. */
sym_status sym_error_set(sym_error *err, sym_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message, keeping its status. */
sym_status sym_error_prefix(sym_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Resets err to SYM_OK with an empty message. */
void sym_error_clear(sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
