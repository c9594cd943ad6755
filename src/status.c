#include "symphony/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const status_names[SYM_STATUS_COUNT] = {
    [SYM_OK] = "success",
    [SYM_ERR_IO] = "input/output error",
    [SYM_ERR_NOMEM] = "out of memory",
    [SYM_ERR_FORMAT] = "malformed input",
    [SYM_ERR_INVALID] = "invalid argument",
    [SYM_ERR_UNSUPPORTED] = "not supported",
    [SYM_ERR_INCOMPATIBLE] = "incompatible models",
    [SYM_ERR_NOT_FOUND] = "not found",
    [SYM_ERR_LIMIT] = "limit exceeded",
    [SYM_ERR_NONFINITE] = "non-finite value",
    [SYM_ERR_CHECKSUM] = "checksum mismatch",
    [SYM_ERR_INTERRUPTED] = "interrupted",
    [SYM_ERR_BUSY] = "resource busy",
};

const char *sym_status_str(sym_status status)
{
    if ((unsigned)status >= SYM_STATUS_COUNT)
        return "unknown status";
    return status_names[status];
}

sym_status sym_error_set(sym_error *err, sym_status status, const char *fmt, ...)
{
    if (err == NULL)
        return status;
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return status;
}

sym_status sym_error_prefix(sym_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return SYM_OK;
    char prefix[SYM_ERROR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);

    /* Join into a buffer large enough for both parts, then cut to the message size. */
    char joined[2 * SYM_ERROR_MESSAGE_MAX + 2];
    snprintf(joined, sizeof joined, "%s: %s", prefix, err->message);
    size_t length = strnlen(joined, SYM_ERROR_MESSAGE_MAX - 1);
    memcpy(err->message, joined, length);
    err->message[length] = '\0';
    return err->status;
}

void sym_error_clear(sym_error *err)
{
    if (err == NULL)
        return;
    err->status = SYM_OK;
    err->message[0] = '\0';
}
