/* Thread team for the assignment solver (see lap_internal.h). */
#include "lap_internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* Polls of the shared word before a waiting thread starts to yield its core. No PAUSE
 * instruction: under a hypervisor a loop of PAUSEs can get the virtual CPU descheduled. */
#define SPINS_BEFORE_YIELD 4096

struct lap_worker {
    lap_team *team;
    pthread_t thread;
};

static uint32_t word_generation(uint64_t w)
{
    return (uint32_t)(w >> 32);
}

static size_t word_chunks(uint64_t w)
{
    return (size_t)((w >> 16) & 0xffffu);
}

static size_t word_next(uint64_t w)
{
    return (size_t)(w & 0xffffu);
}

static void backoff(unsigned *spins)
{
    if (++*spins >= SPINS_BEFORE_YIELD)
        sched_yield();
}

/* Claims and runs chunks of the current task until none is left. */
static void run_chunks(lap_team *team)
{
    uint64_t w = atomic_load_explicit(&team->work, memory_order_acquire);
    while (word_next(w) < word_chunks(w)) {
        if (!atomic_compare_exchange_weak_explicit(&team->work, &w, w + 1,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* The claimed chunk keeps the task from finishing, so task and task_ctx cannot
         * change before the chunk is done. */
        team->task(team->task_ctx, word_next(w));
        atomic_fetch_add_explicit(&team->chunks_done, 1, memory_order_release);
        w = atomic_load_explicit(&team->work, memory_order_acquire);
    }
}

static void *worker_main(void *arg)
{
    lap_worker *worker = arg;
    lap_team *team = worker->team;
    uint32_t seen = 0;

    for (;;) {
        unsigned spins = 0;
        uint64_t w;
        while (word_generation(w = atomic_load_explicit(&team->work,
                                                        memory_order_acquire)) == seen)
            backoff(&spins);
        if (atomic_load_explicit(&team->quit, memory_order_acquire))
            return NULL;
        seen = word_generation(w);
        run_chunks(team);
    }
}

sym_status lap_team_start(lap_team *team, int threads, sym_error *err)
{
    memset(team, 0, sizeof *team);
    team->threads = 1;
    atomic_init(&team->work, 0);
    atomic_init(&team->chunks_done, 0);
    atomic_init(&team->quit, 0);
    if (threads <= 1)
        return SYM_OK;

    team->workers = calloc((size_t)threads - 1, sizeof *team->workers);
    if (team->workers == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "assignment solver: cannot allocate %d "
                             "thread records", threads - 1);
    for (int t = 1; t < threads; t++) {
        lap_worker *worker = &team->workers[t - 1];
        worker->team = team;
        int rc = pthread_create(&worker->thread, NULL, worker_main, worker);
        if (rc != 0) {
            lap_team_stop(team);
            return sym_error_set(err, SYM_ERR_NOMEM, "assignment solver: cannot start "
                                 "thread %d of %d: %s", t + 1, threads, strerror(rc));
        }
        team->threads = t + 1;
    }
    return SYM_OK;
}

void lap_team_run(lap_team *team, lap_chunk_fn task, void *ctx, size_t chunks)
{
    if (team->threads == 1 || chunks == 1) {
        for (size_t c = 0; c < chunks; c++)
            task(ctx, c);
        return;
    }
    team->task = task;
    team->task_ctx = ctx;
    atomic_store_explicit(&team->chunks_done, 0, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&team->work, memory_order_relaxed);
    uint64_t generation = (uint64_t)(word_generation(w) + 1u);
    atomic_store_explicit(&team->work, generation << 32 | (uint64_t)chunks << 16,
                          memory_order_release);

    run_chunks(team);
    unsigned spins = 0;
    while (atomic_load_explicit(&team->chunks_done, memory_order_acquire) != chunks)
        backoff(&spins);
}

void lap_team_stop(lap_team *team)
{
    if (team->workers == NULL)
        return;
    atomic_store_explicit(&team->quit, 1, memory_order_release);
    uint64_t w = atomic_load_explicit(&team->work, memory_order_relaxed);
    atomic_store_explicit(&team->work, (uint64_t)(word_generation(w) + 1u) << 32,
                          memory_order_release);
    for (int t = 1; t < team->threads; t++)
        pthread_join(team->workers[t - 1].thread, NULL);
    free(team->workers);
    team->workers = NULL;
    team->threads = 1;
}
