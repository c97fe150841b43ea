/* expert_store.c — the expert store's mechanism: unit homes in the file, a budgeted RAM cache of slots,
 * I/O threads doing aligned preads, pins, waits, accounting, the trace. See expert_store.h.
 *
 * Locking: one mutex per store guards every slot, the unit table, the job queue, the policy and the
 * counters; `changed` is signalled when a load finishes (or a pin is dropped), `work` when jobs are
 * queued. I/O threads read without the lock, into a slot no one else touches while it is LOADING (a
 * loading slot is never evicted or handed out). Contexts on one model share the store: each holds pins
 * only between an acquire and its release, and an acquire takes all its slots at once or waits, so two
 * contexts never wait on each other's half-held groups.
 *
 * Test hook: EDGE_EXPERTS_FAULT=short:N or eio:N (read when the cache is set up) makes the N-th read job
 * (from 1) come back short or fail with EIO, to prove those paths give an error and never wrong logits. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "experts/expert_policy.h"
#include "experts/expert_store.h"

#define IO_ALIGN 4096u
#define IO_CHUNK (4u << 20) /* bytes per read job: a unit's spans split so several threads read one unit */

enum { SLOT_EMPTY, SLOT_LOADING, SLOT_READY, SLOT_ERROR };

typedef struct span {
    uint64_t off, len;  /* 4 KiB-aligned file range read for one matrix */
    uint64_t expect;    /* bytes a read of it returns (len, or less at the end of the file) */
    uint64_t skip;      /* the matrix starts this many bytes into the span */
    size_t buf_off;     /* where the span lies in a slot's buffer */
} span;

typedef struct unit_home {
    span sp[3];
    uint64_t read_bytes; /* sum of the spans' expect */
} unit_home;

typedef struct slot {
    int64_t unit; /* -1: none */
    int state;
    int pins;
    int pending;      /* read jobs outstanding */
    bool prefetched;  /* brought in by a prefetch and not used by a demand yet */
    uint64_t filled;  /* tick of the load */
    edge_status err;
    char msg[384];
    uint8_t *buf;
    edge_matrix mats[3];
} slot;

typedef struct io_job {
    int32_t slot;
    uint64_t off, len, expect;
    uint8_t *dst;
} io_job;

struct edge_expert_store {
    edge_model *model;
    int64_t n_layer, n_expert, k, n_units;
    unit_home *home; /* [n_units], unit = layer * n_expert + expert */
    size_t unit_buf_max;
    int jobs_per_unit_max;

    /* cache (n_slots == 0: mapped mode) */
    edge_expert_cache_params params;
    int64_t n_slots;
    slot *slots;
    int64_t *where; /* [n_units] slot or -1 */
    uint8_t *arena;
    int fd;
    bool direct;
    off_t file_size;
    struct timespec file_mtime;
    edge_expert_policy policy;
    uint64_t clock;

    pthread_mutex_t mu;
    pthread_cond_t changed, work;
    bool sync_ready;
    io_job *queue; /* ring buffer */
    int64_t q_cap, q_head, q_len;
    pthread_t *threads;
    int n_threads;
    bool stop;
    int fault_kind; /* 0 none, 1 short, 2 eio */
    uint64_t fault_at, jobs_started;

    edge_expert_cache_stats stats;
    _Atomic int device_prefetch; /* contexts whose VRAM tier wants the router's prediction (CUDA backend) */
    FILE *trace;
    uint64_t trace_batch;
};

/* ------------------------------------------------------------------------------------------------ homes */

static const edge_matrix *unit_matrix(const edge_model *m, int64_t layer, int64_t e, int r) {
    const edge_layer_weights *L = &m->layers[layer];
    return r == 0 ? &L->gate[e] : r == 1 ? &L->up[e] : &L->down[e];
}

static edge_status build_homes(edge_expert_store *st) {
    const edge_model *m = st->model;
    const uint8_t *base;
    uint64_t file_size;
    edge_gguf_tensor_info ti;
    edge_status s;
    /* file offsets from the views' addresses: the mapping starts at tensor 0's data - its offset - data_offset */
    uint64_t data_offset;
    if ((s = edge_gguf_header(m->gguf, NULL, NULL, NULL, NULL, &data_offset, &file_size)) != EDGE_OK) return s;
    if ((s = edge_gguf_tensor(m->gguf, 0, &ti)) != EDGE_OK) return s;
    base = (const uint8_t *)ti.data - ti.offset - data_offset;
    st->home = calloc((size_t)st->n_units, sizeof *st->home);
    if (!st->home) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for the expert store", m->path);
    st->unit_buf_max = 0;
    st->jobs_per_unit_max = 0;
    for (int64_t l = 0; l < st->n_layer; l++)
        for (int64_t e = 0; e < st->n_expert; e++) {
            unit_home *h = &st->home[l * st->n_expert + e];
            size_t buf = 0;
            int jobs = 0;
            for (int r = 0; r < 3; r++) {
                const edge_matrix *w = unit_matrix(m, l, e, r);
                const uint64_t off = (uint64_t)((const uint8_t *)w->data - base);
                const uint64_t len = (uint64_t)w->n_rows * w->row_stride;
                span *sp = &h->sp[r];
                sp->off = off / IO_ALIGN * IO_ALIGN;
                sp->skip = off - sp->off;
                sp->len = (off + len + IO_ALIGN - 1) / IO_ALIGN * IO_ALIGN - sp->off;
                sp->expect = sp->off + sp->len <= file_size ? sp->len : file_size - sp->off;
                sp->buf_off = buf;
                buf += sp->len;
                h->read_bytes += sp->expect;
                jobs += (int)((sp->len + IO_CHUNK - 1) / IO_CHUNK);
            }
            if (buf > st->unit_buf_max) st->unit_buf_max = buf;
            if (jobs > st->jobs_per_unit_max) st->jobs_per_unit_max = jobs;
        }
    return EDGE_OK;
}

edge_status edge_experts_create(edge_model *m, edge_expert_store **out) {
    edge_expert_store *st = calloc(1, sizeof *st);
    if (!st) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for the expert store", m->path);
    st->model = m;
    st->n_layer = m->hp.n_layer;
    st->n_expert = m->hp.n_expert;
    st->k = m->hp.n_expert_used;
    st->n_units = st->n_layer * st->n_expert;
    st->fd = -1;
    edge_status s = build_homes(st);
    if (s != EDGE_OK) {
        free(st->home);
        free(st);
        return s;
    }
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->changed, NULL);
    pthread_cond_init(&st->work, NULL);
    st->sync_ready = true;
    *out = st;
    return EDGE_OK;
}

/* ------------------------------------------------------------------------------------------------ I/O */

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Whether the file still has the size and modification time it had when the cache was set up. */
static bool file_changed(const edge_expert_store *st, char *msg, size_t cap) {
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) {
        snprintf(msg, cap, "%s: cannot stat the model file while reading experts: %s", st->model->path,
                 strerror(errno));
        return true;
    }
    if (sb.st_size != st->file_size || sb.st_mtim.tv_sec != st->file_mtime.tv_sec ||
        sb.st_mtim.tv_nsec != st->file_mtime.tv_nsec) {
        snprintf(msg, cap,
                 "%s: the model file changed under the model (size %lld -> %lld bytes, mtime %lld.%09ld -> "
                 "%lld.%09ld): reload it",
                 st->model->path, (long long)st->file_size, (long long)sb.st_size, (long long)st->file_mtime.tv_sec,
                 (long)st->file_mtime.tv_nsec, (long long)sb.st_mtim.tv_sec, (long)sb.st_mtim.tv_nsec);
        return true;
    }
    return false;
}

/* One job's read: returns the bytes read, or -1 with msg set. */
static int64_t read_job(edge_expert_store *st, const io_job *j, uint64_t seq, char *msg, size_t cap) {
    uint64_t got = 0;
    uint64_t want = j->len;
    if (st->fault_kind == 1 && seq == st->fault_at) want = j->len / 2 / IO_ALIGN * IO_ALIGN; /* test hook */
    if (st->fault_kind == 2 && seq == st->fault_at) {
        snprintf(msg, cap, "%s: read error at byte %" PRIu64 " (%" PRIu64 " bytes) of an expert: %s", st->model->path,
                 j->off, j->len, strerror(EIO));
        return -1;
    }
    while (got < want) {
        const ssize_t r = pread(st->fd, j->dst + got, (size_t)(want - got), (off_t)(j->off + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            snprintf(msg, cap, "%s: read error at byte %" PRIu64 " (%" PRIu64 " bytes) of an expert: %s",
                     st->model->path, j->off + got, want - got, strerror(errno));
            return -1;
        }
        if (r == 0) break;
        got += (uint64_t)r;
        if (got < want && (got % IO_ALIGN) != 0) break; /* a short read at the end of the file */
    }
    if (!st->direct) (void)posix_fadvise(st->fd, (off_t)j->off, (off_t)j->len, POSIX_FADV_DONTNEED);
    if (got < j->expect) {
        snprintf(msg, cap, "%s: short read of an expert: %" PRIu64 " of %" PRIu64 " bytes at byte %" PRIu64
                 " (the file is shorter than when it was loaded?)",
                 st->model->path, got, j->expect, j->off);
        return (int64_t)got | INT64_MIN; /* negative: an error, with the bytes still counted */
    }
    if (file_changed(st, msg, cap)) return (int64_t)got | INT64_MIN;
    return (int64_t)got;
}

static void *io_main(void *arg) {
    edge_expert_store *st = arg;
    char msg[384];
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (st->q_len == 0 && !st->stop) pthread_cond_wait(&st->work, &st->mu);
        if (st->q_len == 0 && st->stop) break;
        const io_job j = st->queue[st->q_head];
        st->q_head = (st->q_head + 1) % st->q_cap;
        st->q_len--;
        const uint64_t seq = ++st->jobs_started;
        pthread_mutex_unlock(&st->mu);
        msg[0] = 0;
        const int64_t r = read_job(st, &j, seq, msg, sizeof msg);
        pthread_mutex_lock(&st->mu);
        slot *s = &st->slots[j.slot];
        if (r == -1) {
            /* nothing read */
        } else {
            st->stats.bytes_read += (uint64_t)(r & INT64_MAX);
        }
        if (r < 0 && s->err == EDGE_OK) {
            s->err = EDGE_ERR_IO;
            snprintf(s->msg, sizeof s->msg, "%s", msg);
        }
        if (--s->pending == 0) {
            s->state = s->err == EDGE_OK ? SLOT_READY : SLOT_ERROR;
            pthread_cond_broadcast(&st->changed);
        }
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Start reading `unit` into slot si (lock held). */
static void start_load(edge_expert_store *st, int64_t si, int64_t unit, bool prefetch) {
    slot *s = &st->slots[si];
    if (s->unit >= 0) st->where[s->unit] = -1;
    s->unit = unit;
    st->where[unit] = si;
    s->state = SLOT_LOADING;
    s->err = EDGE_OK;
    s->msg[0] = 0;
    s->prefetched = prefetch;
    s->filled = st->clock;
    s->pending = 0;
    const unit_home *h = &st->home[unit];
    const int64_t layer = unit / st->n_expert, e = unit % st->n_expert;
    /* a demand read goes ahead of the queued prefetches (the engine waits for it now; the next layer's
     * guesses can wait): its jobs are put at the head, in order */
    int64_t front = 0;
    for (int r = 0; r < 3; r++) {
        const span *sp = &h->sp[r];
        s->mats[r] = *unit_matrix(st->model, layer, e, r);
        s->mats[r].data = s->buf + sp->buf_off + sp->skip;
        for (uint64_t o = 0; o < sp->len; o += IO_CHUNK) {
            const uint64_t len = sp->len - o < IO_CHUNK ? sp->len - o : IO_CHUNK;
            const uint64_t exp_end = sp->expect;
            const uint64_t expect = o >= exp_end ? 0 : (exp_end - o < len ? exp_end - o : len);
            const io_job job = {(int32_t)si, sp->off + o, len, expect, s->buf + sp->buf_off + o};
            if (prefetch) {
                st->queue[(st->q_head + st->q_len) % st->q_cap] = job;
            } else { /* shift this load's earlier jobs back one place, put this one after them */
                st->q_head = (st->q_head + st->q_cap - 1) % st->q_cap;
                for (int64_t i = 0; i < front; i++)
                    st->queue[(st->q_head + i) % st->q_cap] = st->queue[(st->q_head + i + 1) % st->q_cap];
                st->queue[(st->q_head + front) % st->q_cap] = job;
                front++;
            }
            st->q_len++;
            s->pending++;
        }
    }
    st->stats.loads++;
    pthread_cond_broadcast(&st->work);
}

static bool evictable(const slot *s) { return s->pins == 0 && s->state != SLOT_LOADING; }

/* The slot to load into (lock held), or -1: an empty one first, then by the policy's value. Slots
 * holding a unit prefetched and unused are taken by a demand only when nothing else is left (oldest
 * prefetch first), and never by a prefetch. `skip_layer_unit`: units of the request being served. */
static int64_t pick_victim(edge_expert_store *st, bool for_prefetch, const int64_t *req, int64_t n_req) {
    int64_t best = -1, best_pf = -1;
    double best_v = 0;
    for (int64_t i = 0; i < st->n_slots; i++) {
        const slot *s = &st->slots[i];
        if (!evictable(s)) continue;
        if (s->unit < 0 || s->state == SLOT_ERROR) return i;
        bool in_req = false;
        for (int64_t j = 0; j < n_req; j++) in_req |= req[j] == s->unit;
        if (in_req) continue;
        if (s->prefetched) {
            if (!for_prefetch && (best_pf < 0 || s->filled < st->slots[best_pf].filled)) best_pf = i;
            continue;
        }
        const double v = edge_expert_policy_value(&st->policy, s->unit, st->clock);
        if (best < 0 || v < best_v ||
            (v == best_v && st->policy.last_use[s->unit] < st->policy.last_use[st->slots[best].unit])) {
            best = i;
            best_v = v;
        }
    }
    return best >= 0 ? best : best_pf;
}

/* ------------------------------------------------------------------------------------------------ engine side */

int64_t edge_experts_group_capacity(const edge_expert_store *st) {
    return st->n_slots > 0 ? st->n_slots : st->n_expert;
}

bool edge_experts_wants_prediction(const edge_expert_store *st) {
    return (st->n_slots > 0 && st->params.prefetch) || st->trace != NULL ||
           atomic_load_explicit(&((edge_expert_store *)st)->device_prefetch, memory_order_relaxed) > 0;
}

void edge_experts_want_device_prefetch(edge_expert_store *st, int delta) {
    atomic_fetch_add_explicit(&st->device_prefetch, delta, memory_order_relaxed);
}

int edge_experts_policy_kind(const edge_expert_store *st) {
    return st->n_slots > 0 ? st->params.policy : EDGE_EXPERT_POLICY_LFU_DECAY;
}

double edge_experts_half_life(const edge_expert_store *st) {
    return st->n_slots > 0 && st->params.half_life_tokens > 0 ? st->params.half_life_tokens : 8.0;
}

void edge_experts_count_device(edge_expert_store *st, uint64_t hits, uint64_t misses, uint64_t on_gpu,
                               uint64_t on_cpu, uint64_t uploads, uint64_t bytes) {
    pthread_mutex_lock(&st->mu);
    st->stats.vram_hits += hits;
    st->stats.vram_misses += misses;
    st->stats.experts_gpu += on_gpu;
    st->stats.experts_cpu += on_cpu;
    st->stats.vram_loads += uploads;
    st->stats.vram_bytes_uploaded += bytes;
    pthread_mutex_unlock(&st->mu);
}

edge_status edge_experts_acquire(edge_expert_store *st, int64_t layer, const int32_t *ex, int64_t n,
                                 const edge_matrix *(*out)[3]) {
    if (st->n_slots == 0) { /* mapped */
        for (int64_t i = 0; i < n; i++)
            for (int r = 0; r < 3; r++) out[i][r] = unit_matrix(st->model, layer, ex[i], r);
        return EDGE_OK;
    }
    if (n > st->n_slots) return edge_fail(EDGE_ERR_INTERNAL, "expert group of %lld exceeds the cache", (long long)n);
    int64_t req[1024];
    for (int64_t i = 0; i < n; i++) req[i] = layer * st->n_expert + ex[i];
    double stall = 0;
    pthread_mutex_lock(&st->mu);
    const uint64_t now = ++st->clock;
    /* wait until the missing units find slots; when they need slots holding unused prefetches, until no
     * read is in flight, so the choice does not depend on which read finished first */
    for (;;) {
        int64_t missing = 0, free_slots = 0, free_plain = 0;
        bool in_flight = false;
        for (int64_t i = 0; i < n; i++) {
            const int64_t w = st->where[req[i]];
            if (w >= 0 && st->slots[w].state == SLOT_ERROR && st->slots[w].pins == 0) { /* retry a failed prefetch */
                st->slots[w].unit = -1;
                st->slots[w].state = SLOT_EMPTY;
                st->slots[w].prefetched = false;
                st->where[req[i]] = -1;
            }
            missing += st->where[req[i]] < 0;
        }
        for (int64_t si = 0; si < st->n_slots; si++) {
            const slot *s = &st->slots[si];
            bool in_req = false;
            for (int64_t j = 0; j < n && s->unit >= 0; j++) in_req |= req[j] == s->unit;
            free_slots += evictable(s) && !in_req;
            free_plain += evictable(s) && !in_req && !s->prefetched;
            in_flight |= s->state == SLOT_LOADING;
        }
        if (missing <= free_plain || (missing <= free_slots && !in_flight)) break;
        const double t0 = now_seconds();
        pthread_cond_wait(&st->changed, &st->mu);
        stall += now_seconds() - t0;
    }
    char msg[384];
    bool any_missing = false;
    for (int64_t i = 0; i < n; i++) any_missing |= st->where[req[i]] < 0;
    if (any_missing && file_changed(st, msg, sizeof msg)) {
        pthread_mutex_unlock(&st->mu);
        return edge_fail(EDGE_ERR_IO, "%s", msg);
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t w = st->where[req[i]];
        if (w >= 0) {
            st->stats.hits++;
            if (st->slots[w].prefetched) st->stats.prefetch_hits++;
        } else {
            w = pick_victim(st, false, req, n);
            start_load(st, w, req[i], false);
            st->stats.misses++;
        }
        st->slots[w].prefetched = false;
        st->slots[w].pins++;
        edge_expert_policy_touch(&st->policy, req[i], now);
    }
    /* wait for the reads */
    edge_status status = EDGE_OK;
    for (;;) {
        bool loading = false;
        for (int64_t i = 0; i < n; i++) loading |= st->slots[st->where[req[i]]].state == SLOT_LOADING;
        if (!loading) break;
        const double t0 = now_seconds();
        pthread_cond_wait(&st->changed, &st->mu);
        stall += now_seconds() - t0;
    }
    for (int64_t i = 0; i < n; i++) {
        slot *s = &st->slots[st->where[req[i]]];
        if (s->state == SLOT_ERROR && status == EDGE_OK) {
            snprintf(msg, sizeof msg, "%s", s->msg);
            status = EDGE_ERR_IO;
        }
        out[i][0] = &s->mats[0];
        out[i][1] = &s->mats[1];
        out[i][2] = &s->mats[2];
    }
    st->stats.stall_seconds += stall;
    if (status != EDGE_OK) { /* drop the pins; failed slots are read again next time */
        for (int64_t i = 0; i < n; i++) {
            const int64_t w = st->where[req[i]];
            slot *s = &st->slots[w];
            s->pins--;
            if (s->state == SLOT_ERROR && s->pins == 0) {
                st->where[s->unit] = -1;
                s->unit = -1;
                s->state = SLOT_EMPTY;
                s->prefetched = false;
            }
        }
        pthread_cond_broadcast(&st->changed);
        pthread_mutex_unlock(&st->mu);
        return edge_fail(status, "%s", msg);
    }
    pthread_mutex_unlock(&st->mu);
    return EDGE_OK;
}

void edge_experts_release(edge_expert_store *st, int64_t layer, const int32_t *ex, int64_t n) {
    if (st->n_slots == 0) return;
    pthread_mutex_lock(&st->mu);
    for (int64_t i = 0; i < n; i++) {
        const int64_t w = st->where[layer * st->n_expert + ex[i]];
        if (w >= 0 && st->slots[w].pins > 0) st->slots[w].pins--;
    }
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->mu);
}

void edge_experts_predict(edge_expert_store *st, int64_t layer, const float *logits, int64_t n, int32_t *pred) {
    const int64_t ne = st->n_expert, k = st->k;
    bool want[1024] = {false};
    for (int64_t i = 0; i < n; i++) {
        const float *p = logits + i * ne;
        for (int64_t j = 0; j < k; j++) {
            int32_t best = -1;
            for (int64_t e = 0; e < ne; e++) {
                bool taken = false;
                for (int64_t jj = 0; jj < j; jj++) taken |= pred[i * k + jj] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = (int32_t)e;
            }
            pred[i * k + j] = best;
            if (best >= 0) want[best] = true;
        }
    }
    if (st->n_slots == 0 || !st->params.prefetch) return;
    /* a batch of several tokens keeps n_expert slots for the layer it is about to run, whose experts were
     * not all predicted (without this, a small cache would read the next layer's experts, then evict them
     * unused to make room for the current layer's) */
    int64_t room = n > 1 ? st->n_slots - ne : st->n_slots;
    pthread_mutex_lock(&st->mu);
    for (int64_t e = 0; e < ne && room > 0; e++) {
        const int64_t u = layer * ne + e;
        if (!want[e] || st->where[u] >= 0) continue;
        room--;
        const int64_t w = pick_victim(st, true, &u, 1);
        if (w < 0) break;
        start_load(st, w, u, true);
        st->stats.prefetches++;
    }
    pthread_mutex_unlock(&st->mu);
}

void edge_experts_observe(edge_expert_store *st, int64_t layer, int64_t pos0, int64_t n, const int32_t *sel,
                          const float *gate, const int32_t *pred) {
    const int64_t k = st->k;
    uint64_t guessed = 0, right = 0;
    if (pred)
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < k; j++) {
                guessed++;
                for (int64_t jj = 0; jj < k; jj++) right += pred[i * k + j] == sel[i * k + jj];
            }
        }
    pthread_mutex_lock(&st->mu);
    if (layer == 0) {
        st->stats.tokens += (uint64_t)n;
        st->trace_batch++;
    }
    st->stats.predicted += guessed;
    st->stats.predicted_correct += right;
    if (st->trace) {
        for (int64_t i = 0; i < n; i++) {
            fprintf(st->trace, "{\"batch\": %" PRIu64 ", \"n\": %lld, \"pos\": %lld, \"layer\": %lld, \"experts\": [",
                    st->trace_batch, (long long)n, (long long)(pos0 + i), (long long)layer);
            for (int64_t j = 0; j < k; j++) fprintf(st->trace, "%s%d", j ? ", " : "", (int)sel[i * k + j]);
            fprintf(st->trace, "], \"gates\": [");
            for (int64_t j = 0; j < k; j++) fprintf(st->trace, "%s%.9g", j ? ", " : "", (double)gate[i * k + j]);
            fprintf(st->trace, "]");
            if (pred) {
                fprintf(st->trace, ", \"predicted\": [");
                for (int64_t j = 0; j < k; j++) fprintf(st->trace, "%s%d", j ? ", " : "", (int)pred[i * k + j]);
                fprintf(st->trace, "]");
            }
            fprintf(st->trace, "}\n");
        }
    }
    pthread_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------------------------------------------------ setup */

static void teardown_cache(edge_expert_store *st) {
    if (st->threads) {
        pthread_mutex_lock(&st->mu);
        st->stop = true;
        pthread_cond_broadcast(&st->work);
        pthread_mutex_unlock(&st->mu);
        for (int i = 0; i < st->n_threads; i++) pthread_join(st->threads[i], NULL);
    }
    free(st->threads);
    st->threads = NULL;
    st->n_threads = 0;
    st->stop = false;
    if (st->fd >= 0) close(st->fd);
    st->fd = -1;
    free(st->arena);
    free(st->slots);
    free(st->where);
    free(st->queue);
    st->arena = NULL;
    st->slots = NULL;
    st->where = NULL;
    st->queue = NULL;
    st->n_slots = 0;
    st->q_len = st->q_head = st->q_cap = 0;
    edge_expert_policy_free(&st->policy);
}

void edge_experts_free(edge_expert_store *st) {
    if (!st) return;
    teardown_cache(st);
    if (st->trace) fclose(st->trace);
    if (st->sync_ready) {
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->changed);
        pthread_cond_destroy(&st->work);
    }
    free(st->home);
    free(st);
}

static size_t slot_bytes(const edge_expert_store *st) {
    return (st->unit_buf_max + IO_ALIGN - 1) / IO_ALIGN * IO_ALIGN;
}

static uint64_t min_slots(const edge_expert_store *st, int prefetch) {
    return (uint64_t)st->k * (prefetch ? 2u : 1u);
}

/* Open the file for the reads: O_DIRECT when asked and the file system takes it (tmpfs does not). */
static edge_status open_file(edge_expert_store *st) {
    const char *path = st->model->path;
    st->direct = false;
#ifdef O_DIRECT
    if (st->params.direct_io) {
        int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (fd >= 0) {
            void *probe = NULL;
            if (posix_memalign(&probe, IO_ALIGN, IO_ALIGN) == 0) {
                if (pread(fd, probe, IO_ALIGN, 0) >= 0) {
                    st->fd = fd;
                    st->direct = true;
                }
                free(probe);
            }
            if (!st->direct) close(fd);
        }
    }
#endif
    if (!st->direct) {
        st->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (st->fd < 0) return edge_fail(EDGE_ERR_IO, "%s: cannot open for expert reads: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(st->fd, &sb) != 0) return edge_fail(EDGE_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    uint64_t size;
    edge_gguf_header(st->model->gguf, NULL, NULL, NULL, NULL, NULL, &size);
    if ((uint64_t)sb.st_size != size)
        return edge_fail(EDGE_ERR_IO, "%s: the model file changed since it was loaded (%llu -> %lld bytes)", path,
                         (unsigned long long)size, (long long)sb.st_size);
    st->file_size = sb.st_size;
    st->file_mtime = sb.st_mtim;
    return EDGE_OK;
}

static edge_status setup_cache(edge_expert_store *st, const edge_expert_cache_params *p) {
    const char *path = st->model->path;
    const size_t sb = slot_bytes(st);
    const uint64_t want = p->budget_bytes / sb;
    const uint64_t min = min_slots(st, p->prefetch);
    if (want < min)
        return edge_fail(EDGE_ERR_INVALID_ARG,
                         "%s: an expert cache of %llu bytes is too small: the minimum is %llu bytes (%llu slots of "
                         "%llu bytes: %lld selected experts per layer%s)",
                         path, (unsigned long long)p->budget_bytes, (unsigned long long)(min * sb),
                         (unsigned long long)min, (unsigned long long)sb, (long long)st->k,
                         p->prefetch ? " plus as many prefetch slots" : "");
    st->n_slots = (int64_t)(want < (uint64_t)st->n_units ? want : (uint64_t)st->n_units);
    if (st->n_slots > 1024 * 1024) st->n_slots = 1024 * 1024;
    edge_status s;
    if ((s = edge_expert_policy_init(&st->policy, p->policy, st->n_units,
                                     p->half_life_tokens * (double)st->n_layer)) != EDGE_OK)
        return s;
    st->slots = calloc((size_t)st->n_slots, sizeof *st->slots);
    st->where = malloc((size_t)st->n_units * sizeof *st->where);
    st->q_cap = st->n_slots * st->jobs_per_unit_max;
    st->queue = calloc((size_t)st->q_cap, sizeof *st->queue);
    void *arena = NULL;
    if (!st->slots || !st->where || !st->queue || posix_memalign(&arena, IO_ALIGN, (size_t)st->n_slots * sb) != 0)
        return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for an expert cache of %lld slots of %zu bytes", path,
                         (long long)st->n_slots, sb);
    st->arena = arena;
    for (int64_t u = 0; u < st->n_units; u++) st->where[u] = -1;
    for (int64_t i = 0; i < st->n_slots; i++) {
        st->slots[i].unit = -1;
        st->slots[i].buf = st->arena + (size_t)i * sb;
    }
    if ((s = open_file(st)) != EDGE_OK) return s;
    const char *fault = getenv("EDGE_EXPERTS_FAULT");
    if (fault) {
        unsigned long long at = 0;
        if (sscanf(fault, "short:%llu", &at) == 1) st->fault_kind = 1;
        else if (sscanf(fault, "eio:%llu", &at) == 1) st->fault_kind = 2;
        st->fault_at = at;
    }
    st->n_threads = p->io_threads;
    st->threads = calloc((size_t)st->n_threads, sizeof *st->threads);
    if (!st->threads) return edge_fail(EDGE_ERR_NOMEM, "%s: out of memory for I/O threads", path);
    for (int i = 0; i < p->io_threads; i++)
        if (pthread_create(&st->threads[i], NULL, io_main, st) != 0) {
            st->n_threads = i;
            return edge_fail(EDGE_ERR_INTERNAL, "%s: cannot start an expert I/O thread", path);
        }
    return EDGE_OK;
}

/* ------------------------------------------------------------------------------------------------ public API */

EDGE_API edge_status edge_expert_cache_default_params(edge_expert_cache_params *out) {
    if (!out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_expert_cache_default_params: NULL argument");
    memset(out, 0, sizeof *out);
    out->budget_bytes = 0;
    out->policy = EDGE_EXPERT_POLICY_LFU_DECAY;
    out->prefetch = 1;
    out->io_threads = 4;
    out->direct_io = 1;
    out->half_life_tokens = 8.0;
    return EDGE_OK;
}

EDGE_API edge_status edge_model_expert_cache_min_bytes(const edge_model *m, int prefetch, uint64_t *out) {
    if (!m || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_expert_cache_min_bytes: NULL argument");
    *out = min_slots(m->experts, prefetch) * slot_bytes(m->experts);
    return EDGE_OK;
}

EDGE_API edge_status edge_model_set_expert_cache(edge_model *m, const edge_expert_cache_params *params) {
    if (!m || !params) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_set_expert_cache: NULL argument");
    if (params->io_threads < 1 || params->io_threads > 64)
        return edge_fail(EDGE_ERR_INVALID_ARG, "expert cache io_threads %d must be in 1..64", params->io_threads);
    edge_expert_store *st = m->experts;
    teardown_cache(st);
    st->params = *params;
    memset(&st->stats, 0, sizeof st->stats);
    st->clock = 0;
    st->jobs_started = 0;
    st->fault_kind = 0;
    if (params->budget_bytes == 0) return EDGE_OK; /* mapped, as without a cache */
    edge_status s = setup_cache(st, params);
    if (s != EDGE_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", edge_last_error());
        teardown_cache(st);
        return edge_fail(s, "%s", msg);
    }
    edge_clear_error();
    return EDGE_OK;
}

EDGE_API edge_status edge_model_expert_cache_stats(const edge_model *m, edge_expert_cache_stats *out) {
    if (!m || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_expert_cache_stats: NULL argument");
    edge_expert_store *st = m->experts;
    pthread_mutex_lock(&st->mu);
    for (;;) { /* reads still in flight (prefetches the run did not wait for) finish first: whole loads */
        bool in_flight = false;
        for (int64_t i = 0; i < st->n_slots; i++) in_flight |= st->slots[i].state == SLOT_LOADING;
        if (!in_flight) break;
        pthread_cond_wait(&st->changed, &st->mu);
    }
    *out = st->stats;
    out->budget_bytes = st->params.budget_bytes;
    out->n_slots = st->n_slots;
    out->slot_bytes = st->n_slots ? slot_bytes(st) : 0;
    pthread_mutex_unlock(&st->mu);
    return EDGE_OK;
}

EDGE_API edge_status edge_model_expert_cache_reset_stats(edge_model *m) {
    if (!m) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_expert_cache_reset_stats: NULL argument");
    pthread_mutex_lock(&m->experts->mu);
    memset(&m->experts->stats, 0, sizeof m->experts->stats);
    pthread_mutex_unlock(&m->experts->mu);
    return EDGE_OK;
}

EDGE_API edge_status edge_model_expert_unit_bytes(const edge_model *m, int64_t layer, int64_t expert, uint64_t *out) {
    if (!m || !out) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_expert_unit_bytes: NULL argument");
    const edge_expert_store *st = m->experts;
    if (layer < 0 || layer >= st->n_layer || expert < 0 || expert >= st->n_expert)
        return edge_fail(EDGE_ERR_RANGE, "expert %lld of layer %lld is out of range (%lld layers, %lld experts)",
                         (long long)expert, (long long)layer, (long long)st->n_layer, (long long)st->n_expert);
    *out = st->home[layer * st->n_expert + expert].read_bytes;
    return EDGE_OK;
}

EDGE_API edge_status edge_model_trace_experts(edge_model *m, const char *path) {
    if (!m) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_model_trace_experts: NULL model");
    edge_expert_store *st = m->experts;
    pthread_mutex_lock(&st->mu);
    if (st->trace) fclose(st->trace);
    st->trace = NULL;
    edge_status s = EDGE_OK;
    if (path) {
        st->trace = fopen(path, "w");
        if (!st->trace) {
            s = edge_fail(EDGE_ERR_IO, "%s: cannot write the expert trace: %s", path, strerror(errno));
        } else {
            fputs("{\"model\": \"", st->trace);
            for (const char *c = m->path; *c; c++) { /* a JSON string: quotes, backslashes, controls escaped */
                if (*c == '"' || *c == '\\') fputc('\\', st->trace);
                if ((unsigned char)*c < 0x20) fprintf(st->trace, "\\u%04x", (unsigned)*c);
                else fputc(*c, st->trace);
            }
            fprintf(st->trace, "\", \"n_layer\": %lld, \"n_expert\": %lld, \"n_expert_used\": %lld, \"unit_bytes\": [",
                    (long long)st->n_layer, (long long)st->n_expert, (long long)st->k);
            for (int64_t u = 0; u < st->n_units; u++)
                fprintf(st->trace, "%s%" PRIu64, u ? ", " : "", st->home[u].read_bytes);
            fprintf(st->trace, "]}\n");
            st->trace_batch = 0;
        }
    }
    pthread_mutex_unlock(&st->mu);
    return s;
}
