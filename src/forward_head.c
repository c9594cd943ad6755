/* Output head: final norm, then lm_head (or the tied embedding) in vocabulary panels. */
#include "forward_internal.h"

#include <cblas.h>
#include <math.h>

#include "forward_ops.h"

static sym_status load_panel(sym_forward *fw, size_t row0, size_t rows, sym_error *err)
{
    const sym_tensor_ref *head = sym_model_tensor(fw->model, SYM_ROLE_LM_HEAD, -1, -1);
    uint64_t d = (uint64_t)fw->cfg.hidden_size;
    return sym_tensor_read_f32(head, row0 * d, rows * d, fw->head_w, err);
}

static void release_head(sym_forward *fw)
{
    sym_stream_release_tensor(sym_model_tensor(fw->model, SYM_ROLE_LM_HEAD, -1, -1));
}

sym_status sym_forward_logits(sym_forward *fw, float *hidden, size_t n_tokens, float *logits,
                              sym_error *err)
{
    size_t d = (size_t)fw->cfg.hidden_size, vocab = (size_t)fw->cfg.vocab_size;
    fwd_rms_norm(hidden, hidden, fw->final_norm, n_tokens, d, (float)fw->cfg.rms_norm_eps);
    for (size_t row0 = 0; row0 < vocab; row0 += fw->head_rows) {
        size_t rows = vocab - row0 < fw->head_rows ? vocab - row0 : fw->head_rows;
        sym_status st = load_panel(fw, row0, rows, err);
        if (st != SYM_OK)
            return st;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n_tokens, (int)rows, (int)d,
                    1.0f, hidden, (int)d, fw->head_w, (int)d, 0.0f, logits + row0,
                    (int)vocab);
    }
    release_head(fw);
    return SYM_OK;
}

/* Folds one token's logits of a panel into its running log-sum-exp (f64). */
static void fold_row(sym_forward *fw, size_t t, const float *row, size_t row0, size_t rows,
                     int32_t target)
{
    double max = fw->lse_max[t];
    for (size_t i = 0; i < rows; i++)
        max = (double)row[i] > max ? (double)row[i] : max;
    double sum = fw->lse_sum[t] * exp(fw->lse_max[t] - max);
    for (size_t i = 0; i < rows; i++)
        sum += exp((double)row[i] - max);
    fw->lse_max[t] = max;
    fw->lse_sum[t] = sum;
    if ((size_t)target >= row0 && (size_t)target < row0 + rows)
        fw->target_logit[t] = (double)row[(size_t)target - row0];
}

static void score_panel(sym_forward *fw, const float *hidden, const int32_t *targets,
                        size_t n_tokens, size_t row0, size_t rows)
{
    size_t d = (size_t)fw->cfg.hidden_size;
    for (size_t t0 = 0; t0 < n_tokens; t0 += fw->head_tokens) {
        size_t tn = n_tokens - t0 < fw->head_tokens ? n_tokens - t0 : fw->head_tokens;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)tn, (int)rows, (int)d, 1.0f,
                    hidden + t0 * d, (int)d, fw->head_w, (int)d, 0.0f, fw->head_logits,
                    (int)rows);
        for (size_t i = 0; i < tn; i++)
            fold_row(fw, t0 + i, fw->head_logits + i * rows, row0, rows, targets[t0 + i]);
    }
}

sym_status sym_forward_nll(sym_forward *fw, float *hidden, const int32_t *targets,
                           size_t n_tokens, double *nll_sum, sym_error *err)
{
    size_t d = (size_t)fw->cfg.hidden_size, vocab = (size_t)fw->cfg.vocab_size;
    if (n_tokens > fw->batch_tokens)
        return sym_error_set(err, SYM_ERR_INVALID, "%zu tokens exceed the plan's batch of %zu",
                             n_tokens, fw->batch_tokens);
    for (size_t t = 0; t < n_tokens; t++) {
        if (targets[t] < 0 || targets[t] >= fw->cfg.vocab_size)
            return sym_error_set(err, SYM_ERR_INVALID,
                                 "target id %d at position %zu is outside the vocabulary "
                                 "0..%zu", targets[t], t, vocab - 1);
        fw->lse_max[t] = -INFINITY;
        fw->lse_sum[t] = 0;
    }
    fwd_rms_norm(hidden, hidden, fw->final_norm, n_tokens, d, (float)fw->cfg.rms_norm_eps);
    for (size_t row0 = 0; row0 < vocab; row0 += fw->head_rows) {
        size_t rows = vocab - row0 < fw->head_rows ? vocab - row0 : fw->head_rows;
        sym_status st = load_panel(fw, row0, rows, err);
        if (st != SYM_OK)
            return st;
        score_panel(fw, hidden, targets, n_tokens, row0, rows);
    }
    release_head(fw);
    double sum = 0;
    for (size_t t = 0; t < n_tokens; t++)
        sum += fw->lse_max[t] + log(fw->lse_sum[t]) - fw->target_logit[t];
    if (!isfinite(sum))
        return sym_error_set(err, SYM_ERR_NONFINITE,
                             "%s: the negative log-likelihood is not finite; the weights or "
                             "activations contain NaN or Inf", sym_model_dir(fw->model));
    *nll_sum += sum;
    return SYM_OK;
}
