/* Layer loading: wait for a layer's bytes, convert its weights to f32 over our threads,
 * release its pages and prefetch the next layer.
 *
 * Each thread converts one contiguous share of every tensor of the layer. The conversion
 * is element-wise, so the result does not depend on the thread count.
 */
#include "forward_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_THREADS 64

/* One tensor of the layer and the arena slot of its f32 copy. */
typedef struct convert_item {
    const sym_tensor_ref *tensor;
    float *dst;
} convert_item;

typedef struct convert_job {
    sym_stream *stream;
    const convert_item *items;
    size_t n_items;
    size_t part, parts;
    sym_status status;
    sym_error err;
} convert_job;

static void *convert_worker(void *arg)
{
    convert_job *job = arg;
    for (size_t i = 0; i < job->n_items && job->status == SYM_OK; i++) {
        const convert_item *item = &job->items[i];
        uint64_t n = item->tensor->info->numel;
        uint64_t first = n * job->part / job->parts;
        uint64_t end = n * (job->part + 1) / job->parts;
        if (end > first)
            job->status = sym_stream_read_f32(job->stream, item->tensor, first, end - first,
                                              item->dst + first, &job->err);
    }
    return NULL;
}

static sym_status add_item(sym_forward *fw, sym_role role, int layer, int expert, float *dst,
                           convert_item *items, size_t *n_items, sym_error *err)
{
    const sym_tensor_ref *r = sym_model_tensor(fw->model, role, layer, expert);
    if (r == NULL) {
        char name[160];
        return sym_error_set(err, SYM_ERR_NOT_FOUND, "%s: tensor '%s' not found",
                             sym_model_dir(fw->model),
                             sym_role_name(role, layer, expert, name, sizeof name));
    }
    items[(*n_items)++] = (convert_item){r, dst};
    return SYM_OK;
}

/* Lists the tensors of layer l with their arena slots. items has room for 7 + 3 x experts. */
static sym_status list_items(sym_forward *fw, int l, convert_item *items, size_t *n_items,
                             sym_error *err)
{
    struct { sym_role role; float *dst; } fixed[] = {
        {SYM_ROLE_INPUT_NORM, fw->w.in_norm}, {SYM_ROLE_POST_NORM, fw->w.post_norm},
        {SYM_ROLE_Q, fw->w.q}, {SYM_ROLE_K, fw->w.k}, {SYM_ROLE_V, fw->w.v},
        {SYM_ROLE_O, fw->w.o}, {SYM_ROLE_ROUTER, fw->w.router},
    };
    sym_status st = SYM_OK;
    *n_items = 0;
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && st == SYM_OK; i++) {
        if (fixed[i].dst != NULL)
            st = add_item(fw, fixed[i].role, l, -1, fixed[i].dst, items, n_items, err);
    }
    for (size_t e = 0; e < fw->experts && st == SYM_OK; e++) {
        int ex = fw->moe ? (int)e : -1;
        st = add_item(fw, SYM_ROLE_FFN_GATE, l, ex, fw->w.gate[e], items, n_items, err);
        if (st == SYM_OK)
            st = add_item(fw, SYM_ROLE_FFN_UP, l, ex, fw->w.up[e], items, n_items, err);
        if (st == SYM_OK)
            st = add_item(fw, SYM_ROLE_FFN_DOWN, l, ex, fw->w.down[e], items, n_items, err);
    }
    return st;
}

/* Converts the listed tensors over fw->opt.threads threads; a share whose thread fails to
 * start is converted here. Returns the first failure in share order. */
static sym_status convert_items(sym_forward *fw, const convert_item *items, size_t n_items,
                                sym_error *err)
{
    size_t threads = fw->opt.threads > 1 ? (size_t)fw->opt.threads : 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    convert_job jobs[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    for (size_t t = 0; t < threads; t++)
        jobs[t] = (convert_job){.stream = fw->stream, .items = items, .n_items = n_items,
                                .part = t, .parts = threads, .status = SYM_OK};
    for (size_t t = 1; t < threads; t++)
        started[t] = pthread_create(&ids[t], NULL, convert_worker, &jobs[t]) == 0;
    for (size_t t = 0; t < threads; t++) {
        if (!started[t])
            convert_worker(&jobs[t]);
    }
    for (size_t t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(ids[t], NULL);
    }
    for (size_t t = 0; t < threads; t++) {
        if (jobs[t].status != SYM_OK) {
            *err = jobs[t].err;
            return jobs[t].status;
        }
    }
    return SYM_OK;
}

/* Starts prefetching the layer after l: layer 0 after the last one unless this is the last
 * pass, whose reads would only be waited for and thrown away when the stream closes. */
static sym_status prefetch_next(sym_forward *fw, int l, sym_error *err)
{
    int next = l + 1;
    if (next == (int)fw->cfg.num_hidden_layers) {
        if (fw->last_pass)
            return SYM_OK;
        next = 0;
    }
    return sym_stream_prefetch(fw->stream, next, err);
}

/* In advise mode the next layer's reads start before the conversion, so the disk stays
 * busy while the CPU converts. Read mode reuses one staging buffer, so it converts first. */
sym_status fwd_load_layer(sym_forward *fw, int l, sym_error *err)
{
    if (fw->loaded == l)
        return SYM_OK;
    fw->loaded = -1;
    sym_status arena = fwd_ensure_arena(fw, l, err);
    if (arena != SYM_OK)
        return arena;
    double t0 = fwd_seconds();
    sym_status st = sym_stream_acquire(fw->stream, l, err);
    double t1 = fwd_seconds();
    bool early = sym_stream_mode(fw->stream) == SYM_PREFETCH_ADVISE;
    if (st == SYM_OK && early)
        st = prefetch_next(fw, l, err);
    convert_item *items = malloc((7 + 3 * fw->experts) * sizeof *items);
    size_t n_items = 0;
    if (items == NULL && st == SYM_OK)
        st = sym_error_set(err, SYM_ERR_NOMEM, "out of memory listing the tensors of layer %d",
                           l);
    if (st == SYM_OK)
        st = list_items(fw, l, items, &n_items, err);
    if (st == SYM_OK)
        st = convert_items(fw, items, n_items, err);
    free(items);
    if (st != SYM_OK)
        return st;
    sym_stream_release(fw->stream, l);
    fw->timing.io_wait += t1 - t0;
    fw->timing.convert += fwd_seconds() - t1;
    fw->loaded = l;
    return early ? SYM_OK : prefetch_next(fw, l, err);
}
