/* Small helpers shared by the test programs. */
#ifndef SYMPHONY_TESTLIB_H
#define SYMPHONY_TESTLIB_H

#include <stdio.h>
#include <stdlib.h>

#define TEST_SKIP_STATUS 77

extern int test_failures;

/* Records a failure with file and line, and continues. */
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
            test_failures++;                                                           \
        }                                                                              \
    } while (0)

#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);   \
            fprintf(stderr, __VA_ARGS__);                                              \
            fputc('\n', stderr);                                                       \
            test_failures++;                                                           \
        }                                                                              \
    } while (0)

/* Returns the fixtures/real directory of ../shared, or NULL when it is absent. */
const char *test_shared_real(void);

/* Returns the repository root ($SYMPHONY_TOP, or "." when unset). */
const char *test_top(void);

/* Creates a fresh temporary directory and returns its path (static storage). */
const char *test_tmpdir(const char *tag);

/* Prints the reason and exits with the skip status. */
void test_skip(const char *reason) __attribute__((noreturn));

/* Prints a summary and returns the process exit status. */
int test_finish(const char *name);

#endif
