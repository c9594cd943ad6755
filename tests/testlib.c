#include "testlib.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int test_failures;

const char *test_shared_real(void)
{
    static char path[PATH_MAX];
    const char *shared = getenv("SYMPHONY_SHARED");
    if (shared == NULL || shared[0] == '\0')
        return NULL;
    snprintf(path, sizeof path, "%s/fixtures/real", shared);
    if (access(path, R_OK) != 0)
        return NULL;
    return path;
}

const char *test_top(void)
{
    const char *top = getenv("SYMPHONY_TOP");
    return top != NULL && top[0] != '\0' ? top : ".";
}

const char *test_tmpdir(const char *tag)
{
    static char path[PATH_MAX];
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0')
        base = "/tmp";
    snprintf(path, sizeof path, "%s/symphony-%s-XXXXXX", base, tag);
    if (mkdtemp(path) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    return path;
}

void test_skip(const char *reason)
{
    printf("skipped: %s\n", reason);
    exit(TEST_SKIP_STATUS);
}

int test_finish(const char *name)
{
    if (test_failures != 0) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}
