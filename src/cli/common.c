#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int cli_verbosity = 1;

/* Model files are read through mmap, so a file cut shorter while it is mapped raises
 * SIGBUS on the first access past its new end. Only async-signal-safe calls here. */
static void on_sigbus(int signo)
{
    (void)signo;
    static const char message[] =
        CLI_NAME ": a memory-mapped input file became shorter while it was being read "
        "(SIGBUS); a source model was truncated or rewritten during the run: restore it and "
        "run the command again\n";
    (void)!write(STDERR_FILENO, message, sizeof message - 1);
    _exit(CLI_EXIT_FAILURE);
}

void cli_install_sigbus_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(CLI_NAME ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_FAILURE;
}

int cli_fail_error(const sym_error *err)
{
    if (err->message[0] != '\0')
        fprintf(stderr, CLI_NAME ": %s\n", err->message);
    else
        fprintf(stderr, CLI_NAME ": %s\n", sym_status_str(err->status));
    if (err->status == SYM_ERR_INTERRUPTED)
        return CLI_EXIT_INTERRUPTED;
    return CLI_EXIT_FAILURE;
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, CLI_NAME " %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "; run '" CLI_NAME " %s --help' for usage\n", command);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

bool cli_parse_size(const char *text, uint64_t *bytes)
{
    errno = 0;
    char *end;
    double value = strtod(text, &end);
    if (end == text || errno != 0 || !isfinite(value) || value < 0)
        return false;
    double scale = 1;
    switch (*end) {
    case 'k': case 'K': scale = 1024.0; end++; break;
    case 'm': case 'M': scale = 1024.0 * 1024; end++; break;
    case 'g': case 'G': scale = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': scale = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end != '\0')
        return false;
    value *= scale;
    if (value >= 18446744073709551616.0)
        return false;
    *bytes = (uint64_t)value;
    return true;
}

bool cli_parse_int(const char *text, long long min, long long max, long long *value)
{
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || v < min || v > max)
        return false;
    *value = v;
    return true;
}

bool cli_parse_double(const char *text, double *value)
{
    errno = 0;
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !isfinite(v))
        return false;
    *value = v;
    return true;
}
