/* threadpool.c — a persistent pool of worker threads. The calling thread is worker 0.
 *
 * Decode calls a matmul ~10 times per layer, so dispatch must cost microseconds: a job is published
 * by bumping an atomic generation counter; idle workers spin on it for a short while (pause
 * instructions) and only then sleep on a condition variable. The caller likewise spins, then
 * sleeps, until the last worker has finished. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels_impl.h"

/* Busy waiting before sleeping, bounded in time (not iterations: a pause instruction costs from a
 * few to ~150 cycles depending on the CPU). Long enough to bridge the gaps between the matmuls of a
 * layer and a decode loop's work between two tokens (~0.3 ms here: sampling, Python; at 0.1 ms the
 * worker slept there and joined each token's first product 16 us late on average over a layer's
 * products, 4 us now), short enough to waste little when the machine is oversubscribed. */
#define SPIN_NS 500000

typedef struct worker_arg {
    struct edge_threadpool *pool;
    int ith;
} worker_arg;

struct edge_threadpool {
    int n_threads;
    edge_cpu_features cpu; /* detected once at creation: cpuid traps to the hypervisor in a VM (~20 us here) */
    pthread_t *threads;     /* n_threads - 1 workers */
    worker_arg *args;
    pthread_mutex_t mutex;
    pthread_cond_t cond_work; /* a new generation was published (or stop) */
    pthread_cond_t cond_done; /* pending reached zero */
    /* Job number << 1 | 1 for a job any subset of workers may help with (edge_threadpool_run_any). */
    _Atomic uint64_t generation;
    /* run_any: generation << TICKET_GEN_SHIFT | TICKET_OPEN while workers may still join | workers in. */
    _Atomic uint64_t ticket;
    _Atomic int pending; /* workers (excluding the caller) still running the current job */
    _Atomic int stop;
    void (*fn)(void *ctx, int ith, int nth);
    void *ctx;
};

#define TICKET_COUNT_MASK ((UINT64_C(1) << 20) - 1)
#define TICKET_OPEN (UINT64_C(1) << 20)
#define TICKET_GEN_SHIFT 21

/* Join job `gen` of edge_threadpool_run_any if the caller has not closed it yet. */
static bool join_any(struct edge_threadpool *pool, uint64_t gen) {
    uint64_t t = atomic_load_explicit(&pool->ticket, memory_order_acquire);
    while ((t >> TICKET_GEN_SHIFT) == gen && (t & TICKET_OPEN))
        if (atomic_compare_exchange_weak_explicit(&pool->ticket, &t, t + 1, memory_order_acq_rel, memory_order_acquire))
            return true;
    return false;
}

static void *worker_main(void *p) {
    worker_arg *arg = p;
    struct edge_threadpool *pool = arg->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        const uint64_t t0 = edge_now_ns();
        for (unsigned i = 1; gen == seen && !atomic_load_explicit(&pool->stop, memory_order_relaxed); i++) {
            EDGE_CPU_RELAX();
            gen = atomic_load_explicit(&pool->generation, memory_order_acquire);
            if ((i & 63) == 0 && edge_now_ns() - t0 > SPIN_NS) break;
        }
        if (gen == seen) {
            pthread_mutex_lock(&pool->mutex);
            while ((gen = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
                   !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->cond_work, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load(&pool->stop)) break;
        seen = gen;
        if (gen & 1) { /* run_any: help only if the job is still open; nobody waits for us otherwise */
            if (join_any(pool, gen)) {
                pool->fn(pool->ctx, arg->ith, pool->n_threads);
                atomic_fetch_sub_explicit(&pool->ticket, 1, memory_order_acq_rel);
            }
            continue;
        }
        pool->fn(pool->ctx, arg->ith, pool->n_threads);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mutex);
            pthread_cond_signal(&pool->cond_done);
            pthread_mutex_unlock(&pool->mutex);
        }
    }
    return NULL;
}

EDGE_API edge_status edge_threadpool_create(int n_threads, edge_threadpool **out) {
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_threadpool_create: out is NULL");
    *out = NULL;
    if (n_threads < 0 || n_threads > 1024)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_threadpool_create: n_threads %d is not in 0..1024", n_threads);
    edge_cpu_features cpu;
    edge_status st = edge_cpu_detect(&cpu);
    if (st != EDGE_OK) return st;
    if (n_threads == 0) n_threads = cpu.n_cores > 0 ? cpu.n_cores : 1;
    struct edge_threadpool *pool = calloc(1, sizeof *pool);
    if (!pool) return edge_fail(EDGE_ERR_NOMEM, "edge_threadpool_create: out of memory");
    pool->cpu = cpu;
    pool->n_threads = n_threads;
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    pool->args = calloc((size_t)n_threads, sizeof *pool->args);
    if (!pool->threads || !pool->args) {
        free(pool->threads);
        free(pool->args);
        free(pool);
        return edge_fail(EDGE_ERR_NOMEM, "edge_threadpool_create: out of memory");
    }
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->cond_work, NULL);
    pthread_cond_init(&pool->cond_done, NULL);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->ticket, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->stop, 0);
    for (int i = 1; i < n_threads; i++) {
        pool->args[i].pool = pool;
        pool->args[i].ith = i;
        int rc = pthread_create(&pool->threads[i], NULL, worker_main, &pool->args[i]);
        if (rc != 0) {
            pool->n_threads = i; /* join the ones that started */
            edge_threadpool_free(pool);
            return edge_fail(EDGE_ERR_INTERNAL, "edge_threadpool_create: pthread_create failed for worker %d (%d)",
                             i, rc);
        }
    }
    edge_clear_error();
    *out = pool;
    return EDGE_OK;
}

EDGE_API void edge_threadpool_free(edge_threadpool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mutex);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->cond_work);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->cond_work);
    pthread_cond_destroy(&pool->cond_done);
    free(pool->threads);
    free(pool->args);
    free(pool);
}

int edge_threadpool_size(const edge_threadpool *pool) { return pool ? pool->n_threads : 1; }

const edge_cpu_features *edge_threadpool_cpu(const edge_threadpool *pool) { return pool ? &pool->cpu : NULL; }

/* The next job number with its kind in bit 0 (only the caller's thread publishes). */
static uint64_t publish(struct edge_threadpool *pool, int any) {
    const uint64_t gen = (((atomic_load_explicit(&pool->generation, memory_order_relaxed) >> 1) + 1) << 1) | (uint64_t)any;
    if (any) atomic_store_explicit(&pool->ticket, (gen << TICKET_GEN_SHIFT) | TICKET_OPEN, memory_order_release);
    pthread_mutex_lock(&pool->mutex);
    atomic_store_explicit(&pool->generation, gen, memory_order_release);
    pthread_cond_broadcast(&pool->cond_work);
    pthread_mutex_unlock(&pool->mutex);
    return gen;
}

void edge_threadpool_run_any(edge_threadpool *pool, void (*fn)(void *ctx, int ith, int nth), void *ctx) {
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    publish(pool, 1);
    fn(ctx, 0, pool->n_threads);
    /* Close the job, then wait only for the workers that joined (they are running it now). */
    atomic_fetch_and_explicit(&pool->ticket, ~TICKET_OPEN, memory_order_acq_rel);
    const uint64_t t0 = edge_now_ns();
    for (unsigned i = 0; atomic_load_explicit(&pool->ticket, memory_order_acquire) & TICKET_COUNT_MASK; i++)
        edge_wait_step(i, t0);
}

void edge_threadpool_run(edge_threadpool *pool, void (*fn)(void *ctx, int ith, int nth), void *ctx) {
    if (!pool || pool->n_threads == 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store_explicit(&pool->pending, pool->n_threads - 1, memory_order_relaxed);
    publish(pool, 0);

    fn(ctx, 0, pool->n_threads);

    const uint64_t t0 = edge_now_ns();
    for (unsigned i = 1; atomic_load_explicit(&pool->pending, memory_order_acquire) != 0; i++) {
        EDGE_CPU_RELAX();
        if ((i & 63) == 0 && edge_now_ns() - t0 > SPIN_NS) break;
    }
    if (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&pool->mutex);
        while (atomic_load_explicit(&pool->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&pool->cond_done, &pool->mutex);
        pthread_mutex_unlock(&pool->mutex);
    }
}
