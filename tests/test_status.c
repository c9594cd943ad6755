/* Status strings and error-message helpers. */
#include <string.h>

#include "symphony/status.h"
#include "testlib.h"

int main(void)
{
    for (int s = 0; s < SYM_STATUS_COUNT; s++) {
        const char *text = sym_status_str((sym_status)s);
        CHECK(text != NULL && text[0] != '\0');
        CHECK(strcmp(text, "unknown status") != 0);
    }
    CHECK(strcmp(sym_status_str(SYM_STATUS_COUNT), "unknown status") == 0);

    sym_error err;
    sym_error_clear(&err);
    CHECK(err.status == SYM_OK);
    CHECK(sym_error_set(&err, SYM_ERR_FORMAT, "tensor '%s': bad", "x") == SYM_ERR_FORMAT);
    CHECK(strcmp(err.message, "tensor 'x': bad") == 0);
    CHECK(sym_error_prefix(&err, "%s", "a.safetensors") == SYM_ERR_FORMAT);
    CHECK(strcmp(err.message, "a.safetensors: tensor 'x': bad") == 0);
    CHECK(sym_error_set(NULL, SYM_ERR_IO, "ignored") == SYM_ERR_IO);

    /* A message longer than the buffer is cut, never overflowed. */
    char long_text[4000];
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    sym_error_set(&err, SYM_ERR_IO, "%s", long_text);
    CHECK(strlen(err.message) == SYM_ERROR_MESSAGE_MAX - 1);
    return test_finish("test_status");
}
