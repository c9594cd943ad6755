/* Text inputs of eval and generate, encoded with the model's own tokenizer. */
#include <stdlib.h>

#include "cli.h"
#include "symphony/tokenizer.h"

sym_status cli_encode_text_file(const char *model_dir, const char *path, int32_t **ids,
                                size_t *n, sym_error *err)
{
    sym_tokenizer *tok;
    sym_status s = sym_tokenizer_load(model_dir, &tok, err);
    if (s != SYM_OK)
        return s;
    char *text;
    size_t len;
    s = sym_text_load(path, &text, &len, err);
    if (s == SYM_OK) {
        s = sym_tokenizer_encode(tok, text, len, 0, ids, n, err);
        free(text);
    }
    sym_tokenizer_free(tok);
    return s;
}
