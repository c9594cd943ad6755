/* The architecture check: can these models be merged? Every incompatibility is listed,
 * not only the first, before any weight is read. */
#ifndef SYMPHONY_COMPAT_H
#define SYMPHONY_COMPAT_H

#include <stdbool.h>
#include <stddef.h>

#include "symphony/model.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sym_compat_report {
    size_t n_problems;
    char **problems; /* each one line; any problem means the models cannot be merged */
    size_t n_notes;
    char **notes;    /* facts worth knowing that do not block the merge */
} sym_compat_report;

/* Options that relax the check, as the merge config sets them. */
typedef struct sym_compat_options {
    bool rope_anchor; /* symphony.rope: anchor allows different rope_theta/rope_scaling */
} sym_compat_options;

/* Compares models[1..n-1] with models[0] (and each model with itself: dtypes the merge
 * cannot read, a MoE given as a source). Fails only on allocation failure. */
sym_status sym_compat_check(sym_model *const *models, size_t n, const sym_compat_options *opts,
                            sym_compat_report *report, sym_error *err);

void sym_compat_report_free(sym_compat_report *report);

#ifdef __cplusplus
}
#endif

#endif
