/* Spinning thread team for the assignment solver (see lap_internal.h). */
#include "lap_internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spins before a waiting thread starts to yield its core: long enough to cover the gap
 * between two scans of a solve, short enough not to starve other processes. */
#define SPINS_BEFORE_YIELD 20000

struct lap_worker {
    lap_team *team;
    int part;
    pthread_t thread;
};

static void wait_for_generation(lap_team *team, unsigned seen)
{
    unsigned spins = 0;
    while (atomic_load_explicit(&team->generation, memory_order_acquire) == seen) {
        if (++spins < SPINS_BEFORE_YIELD)
            cpu_relax();
        else
            sched_yield();
    }
}

static void *worker_main(void *arg)
{
    lap_worker *worker = arg;
    lap_team *team = worker->team;
    unsigned seen = 0;

    for (;;) {
        wait_for_generation(team, seen);
        seen = atomic_load_explicit(&team->generation, memory_order_acquire);
        if (atomic_load_explicit(&team->quit, memory_order_acquire))
            return NULL;
        team->task(team->task_ctx, worker->part, team->parts);
        atomic_fetch_sub_explicit(&team->pending, 1, memory_order_release);
    }
}

sym_status lap_team_start(lap_team *team, int parts, sym_error *err)
{
    memset(team, 0, sizeof *team);
    team->parts = 1;
    atomic_init(&team->generation, 0);
    atomic_init(&team->pending, 0);
    atomic_init(&team->quit, 0);
    if (parts <= 1)
        return SYM_OK;

    team->workers = calloc((size_t)parts - 1, sizeof *team->workers);
    if (team->workers == NULL)
        return sym_error_set(err, SYM_ERR_NOMEM, "assignment solver: cannot allocate %d "
                             "thread records", parts - 1);
    for (int p = 1; p < parts; p++) {
        lap_worker *worker = &team->workers[p - 1];
        worker->team = team;
        worker->part = p;
        int rc = pthread_create(&worker->thread, NULL, worker_main, worker);
        if (rc != 0) {
            lap_team_stop(team);
            return sym_error_set(err, SYM_ERR_NOMEM, "assignment solver: cannot start "
                                 "thread %d of %d: %s", p + 1, parts, strerror(rc));
        }
        team->parts = p + 1;
    }
    return SYM_OK;
}

void lap_team_run(lap_team *team, lap_task_fn task, void *ctx)
{
    if (team->parts == 1) {
        task(ctx, 0, 1);
        return;
    }
    team->task = task;
    team->task_ctx = ctx;
    atomic_store_explicit(&team->pending, team->parts - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&team->generation, 1, memory_order_release);

    task(ctx, 0, team->parts);

    unsigned spins = 0;
    while (atomic_load_explicit(&team->pending, memory_order_acquire) != 0) {
        if (++spins < SPINS_BEFORE_YIELD)
            cpu_relax();
        else
            sched_yield();
    }
}

void lap_team_stop(lap_team *team)
{
    if (team->workers == NULL)
        return;
    atomic_store_explicit(&team->quit, 1, memory_order_release);
    atomic_fetch_add_explicit(&team->generation, 1, memory_order_release);
    for (int p = 1; p < team->parts; p++)
        pthread_join(team->workers[p - 1].thread, NULL);
    free(team->workers);
    team->workers = NULL;
    team->parts = 1;
}
