/* Writes a synthetic Llama checkpoint (see tests/synth.h).
 * usage: tool_synth DIR [key=value...]; keys: layers hidden intermediate heads kv_heads vocab
 * dtype(F32|F16|BF16) tied(0|1) shards seed prefix omit_rope_theta(0|1) rope_theta inv_freq(0|1) sparse(0|1)
 * max_position base_seed perturb permute_ffn(0|1) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "synth.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [key=value...]\n", argv[0]);
        return 2;
    }
    synth_spec s;
    synth_default(&s);
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq == NULL) {
            fprintf(stderr, "%s: expected key=value, got '%s'\n", argv[0], argv[i]);
            return 2;
        }
        *eq = '\0';
        const char *key = argv[i], *value = eq + 1;
        long v = strtol(value, NULL, 10);
        if (strcmp(key, "layers") == 0) s.layers = (int)v;
        else if (strcmp(key, "hidden") == 0) s.hidden = (int)v;
        else if (strcmp(key, "intermediate") == 0) s.intermediate = (int)v;
        else if (strcmp(key, "heads") == 0) s.heads = (int)v;
        else if (strcmp(key, "kv_heads") == 0) s.kv_heads = (int)v;
        else if (strcmp(key, "vocab") == 0) s.vocab = (int)v;
        else if (strcmp(key, "tied") == 0) s.tied = v != 0;
        else if (strcmp(key, "shards") == 0) s.shards = (int)v;
        else if (strcmp(key, "seed") == 0) s.seed = (uint64_t)v;
        else if (strcmp(key, "prefix") == 0) s.prefix = value;
        else if (strcmp(key, "omit_rope_theta") == 0) s.omit_rope_theta = v != 0;
        else if (strcmp(key, "rope_theta") == 0) s.rope_theta = strtod(value, NULL);
        else if (strcmp(key, "inv_freq") == 0) s.with_inv_freq = v != 0;
        else if (strcmp(key, "sparse") == 0) s.sparse = v != 0;
        else if (strcmp(key, "max_position") == 0) s.max_position = (int)v;
        else if (strcmp(key, "base_seed") == 0) s.base_seed = (uint64_t)v;
        else if (strcmp(key, "perturb") == 0) s.perturb = (int)v;
        else if (strcmp(key, "permute_ffn") == 0) s.permute_ffn = v != 0;
        else if (strcmp(key, "dtype") == 0) {
            if (!sym_dtype_from_name(value, &s.dtype)) {
                fprintf(stderr, "%s: unknown dtype '%s'\n", argv[0], value);
                return 2;
            }
        } else {
            fprintf(stderr, "%s: unknown key '%s'\n", argv[0], key);
            return 2;
        }
    }
    if (s.perturb < 0 || s.perturb > 64) {
        fprintf(stderr, "%s: perturb must be 0 to 64 (units of 1/1024), got %d\n", argv[0],
                s.perturb);
        return 2;
    }
    if ((s.perturb > 0 || s.permute_ffn) && s.base_seed == 0) {
        fprintf(stderr, "%s: perturb and permute_ffn require base_seed; add base_seed=N\n",
                argv[0]);
        return 2;
    }
    if (synth_write(argv[1], &s) != 0) {
        perror(argv[1]);
        return 1;
    }
    return 0;
}
