/* RoPE inverse frequencies with Hugging Face's rope_scaling variants (linear, llama3),
 * checked against a numpy implementation of transformers' formulas in
 * tests/test_rope_scaling.c. */
#include "symphony/forward.h"

#include <math.h>
#include <string.h>

/* Llama 3.1: frequencies whose wavelength exceeds original_max_position_embeddings /
 * low_freq_factor are divided by factor, those with a wavelength below original /
 * high_freq_factor are kept, and the band between is interpolated (as transformers'
 * _compute_llama3_parameters does). */
static double scale_llama3(const sym_rope_scaling *rs, double inv)
{
    double original = rs->original_max_position_embeddings;
    double wavelen = 2 * M_PI / inv;
    if (wavelen > original / rs->low_freq_factor)
        return inv / rs->factor;
    if (wavelen < original / rs->high_freq_factor)
        return inv;
    double smooth = (original / wavelen - rs->low_freq_factor) /
                    (rs->high_freq_factor - rs->low_freq_factor);
    return (1 - smooth) * inv / rs->factor + smooth * inv;
}

sym_status sym_rope_inv_freq(const sym_model_config *config, float *inv_freq, sym_error *err)
{
    const sym_rope_scaling *rs = &config->rope_scaling;
    sym_status st = sym_rope_scaling_check(rs, err);
    if (st != SYM_OK)
        return st;
    size_t head_dim = (size_t)config->head_dim;
    for (size_t i = 0; i < head_dim / 2; i++) {
        /* The exponent is rounded to f32 first, as torch computes arange(...).float() / d. */
        float exponent = (float)(2 * i) / (float)head_dim;
        double inv = 1.0 / pow(config->rope_theta, (double)exponent);
        if (strcmp(rs->type, "linear") == 0)
            inv /= rs->factor;
        else if (strcmp(rs->type, "llama3") == 0)
            inv = scale_llama3(rs, inv);
        inv_freq[i] = (float)inv;
    }
    return SYM_OK;
}
