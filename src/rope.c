/* RoPE inverse frequencies with Hugging Face's rope_scaling variants.
 * TODO: the linear and llama3 paths have no test against a reference yet; the fixtures
 * use no rope_scaling. */
#include "symphony/forward.h"

#include <math.h>
#include <string.h>

static sym_status check_scaling(const sym_rope_scaling *rs, sym_error *err)
{
    if (rs->type[0] == '\0')
        return SYM_OK;
    if (strcmp(rs->type, "linear") != 0 && strcmp(rs->type, "llama3") != 0)
        return sym_error_set(err, SYM_ERR_UNSUPPORTED,
                             "rope_scaling type '%s' is not supported; expected none, "
                             "'linear' or 'llama3'", rs->type);
    if (!(rs->factor > 0) || !isfinite(rs->factor))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "rope_scaling factor is %g; expected a positive number",
                             rs->factor);
    if (strcmp(rs->type, "llama3") == 0 &&
        (!(rs->original_max_position_embeddings > 0) ||
         !(rs->high_freq_factor > rs->low_freq_factor) || !(rs->low_freq_factor > 0)))
        return sym_error_set(err, SYM_ERR_INVALID,
                             "rope_scaling llama3 needs original_max_position_embeddings > 0 "
                             "and high_freq_factor > low_freq_factor > 0 (got %g, %g, %g)",
                             rs->original_max_position_embeddings, rs->low_freq_factor,
                             rs->high_freq_factor);
    return SYM_OK;
}

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
    sym_status st = check_scaling(rs, err);
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
