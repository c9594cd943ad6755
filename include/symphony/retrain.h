/* Router retraining on a finished calibrated merge.
 *
 * A merge with calibration keeps its work directory (symphony-work) in the output: the
 * router inputs x-<l>.hc of every layer, the token labels labels.hc and the router settings
 * router-setup.json. sym_retrain_router trains every layer's router again from those files
 * and the output's own expert tensors, with no forward pass over the sources, and rewrites
 * the router tensors in place. With the merge's settings it reproduces the merge's routers
 * byte for byte (same seed, thread count and SIMD variant).
 */
#ifndef SYMPHONY_RETRAIN_H
#define SYMPHONY_RETRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "symphony/mergecfg.h"
#include "symphony/router.h"
#include "symphony/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Settings that override the merge's; each applies only when its has_ flag is set. */
typedef struct sym_retrain_options {
    bool has_objective, has_steps, has_lr, has_seed, has_domain_weights;
    sym_router_objective objective;
    /* Uniform weights every token 1; lens takes the domain weights the merge recorded for
     * each layer (see symphony.router.domain_weights). */
    sym_domain_weights domain_weights;
    int64_t steps;
    double lr;
    uint64_t seed;
    int threads; /* 0: the merge's thread count */
    /* Called after each layer's router is trained; may be NULL. */
    void (*layer_done)(void *context, int layer, int n_layers, const sym_router_report *r);
    void *context;
} sym_retrain_options;

/* Retrains every router of the merged model in dir and rewrites the router tensors, the
 * checksum manifest and merge-report.json. Every router is trained before the first byte
 * is written, so a failure while training (a missing or damaged work file, named in err)
 * leaves dir unchanged. */
sym_status sym_retrain_router(const char *dir, const sym_retrain_options *options,
                              sym_error *err);

#ifdef __cplusplus
}
#endif

#endif
