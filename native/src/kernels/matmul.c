/* matmul.c — the matmul driver: activation conversion and the split of the work over
 * the thread pool (the kernels come from the ISA path's table, cpu_tables.c).
 *
 * One call: (1) every worker converts a share of the activation rows into the weight type's
 * activation format (kernels_impl.h) in the caller's scratch; (2) a barrier; (3) workers take
 * chunks of (row block × token tile) from an atomic counter and compute each row of the block
 * against up to EDGE_DOT_MAX_TOK tokens at a time, so a weight row loaded once serves several
 * tokens (prompt processing) while decode (one token) is a plain row split. Where the ISA has a
 * gemm4 kernel for the type (AVX-512: K-quants, Q8_0; AVX2: Q8_0), two tokens or more convert the activations
 * into quads of interleaved tokens instead (block_q8_Kx4, Q8_0 quads) and run two rows against up to
 * four quads per call. */
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "kernels_impl.h"

#define SCRATCH_ALIGN 64
/* Activation values converted per claimed unit when conversion runs on several threads. */
#define QUNIT_ELEMS 2048
/* Tokens per tile: the activation rows of one tile stay in L2 while the row block streams through. */
#define TOKEN_TILE 32
_Static_assert(TOKEN_TILE % (2 * EDGE_QUAD) == 0, "token tiles hold whole quad pairs");
/* Activation bytes of one token group: a quarter of a 1 MiB L2 (L2-resident activations for 4 tokens
 * beat fewer tokens per weight unpack in L1, up to Grok's 32768-column rows). */
#define GROUP_ACT_BYTES (256u * 1024u)
/* Decode: row segments per product, one per thread (threads past it only take over others' rows). */
#define DECODE_SEGS 64

/* Weight bytes of one chunk in prompt processing: a quarter of a 1 MiB L2. */
#define CHUNK_WEIGHT_BYTES (256u * 1024u)
/* Decode products of at most this many weight bytes run on the calling thread alone (the router: 8 rows). */
#define SMALL_DECODE_BYTES (64 * 1024)

edge_act_format edge_act_format_of(int type) {
    switch (type) {
    case EDGE_TYPE_F32:
    case EDGE_TYPE_F16:
    case EDGE_TYPE_BF16: return EDGE_ACT_F32;
    case EDGE_TYPE_Q4_0:
    case EDGE_TYPE_Q5_0:
    case EDGE_TYPE_Q8_0:
    case EDGE_TYPE_IQ4_NL: return EDGE_ACT_Q8_0;
    case EDGE_TYPE_Q4_1:
    case EDGE_TYPE_Q5_1: return EDGE_ACT_Q8_1;
    case EDGE_TYPE_Q2_K:
    case EDGE_TYPE_Q3_K:
    case EDGE_TYPE_Q4_K:
    case EDGE_TYPE_Q5_K:
    case EDGE_TYPE_Q6_K:
    case EDGE_TYPE_IQ4_XS: return EDGE_ACT_Q8_K;
    default: return EDGE_ACT_NONE;
    }
}

/* Bytes and elements of one block of an activation format. */
static void act_block(edge_act_format f, int64_t *elems, int64_t *bytes) {
    switch (f) {
    case EDGE_ACT_Q8_0: *elems = QK8_0, *bytes = EDGE_Q8S_BLOCK_BYTES; return;
    case EDGE_ACT_Q8_1: *elems = QK8_1, *bytes = sizeof(block_q8_1); return;
    case EDGE_ACT_Q8_K: *elems = QK_K, *bytes = sizeof(block_q8_K); return;
    default: *elems = 1, *bytes = 0; return;
    }
}

size_t edge_matmul_scratch_bytes(int type, int64_t n_cols, int64_t n_tok) {
    edge_act_format f = edge_act_format_of(type);
    if (f == EDGE_ACT_NONE || n_cols <= 0 || n_tok <= 0) return 0;
    if (f == EDGE_ACT_F32) return 0;
    int64_t be, bb;
    act_block(f, &be, &bb);
    size_t rows = (size_t)((n_cols + be - 1) / be) * (size_t)bb * (size_t)n_tok;
    /* or whole quads of interleaved tokens (gemm4 kernels), whichever is larger */
    const size_t n_quads = (size_t)((n_tok + EDGE_QUAD - 1) / EDGE_QUAD);
    size_t quads = 0;
    if (f == EDGE_ACT_Q8_K) quads = (size_t)((n_cols + QK_K - 1) / QK_K) * sizeof(block_q8_Kx4) * n_quads;
    if (f == EDGE_ACT_Q8_0) quads = EDGE_Q8Q_ROW_BYTES((n_cols + QK8_0 - 1) / QK8_0 * QK8_0) * n_quads;
    if (quads > rows) rows = quads;
    /* or one token in a matvec kernel's own layout (matvec_quant) */
    if (f == EDGE_ACT_Q8_0 && n_tok == 1 && EDGE_Q8V_ROW_BYTES((n_cols + QK8_0 - 1) / QK8_0 * QK8_0) > rows)
        rows = EDGE_Q8V_ROW_BYTES((n_cols + QK8_0 - 1) / QK8_0 * QK8_0);
    return rows + SCRATCH_ALIGN;
}

EDGE_API edge_status edge_isa_supported(int isa, int *supported) {
    if (!supported) return edge_fail(EDGE_ERR_INVALID_ARG, "edge_isa_supported: supported is NULL");
    if (isa < EDGE_ISA_AUTO || isa > EDGE_ISA_NEON_DOTPROD)
        return edge_fail(EDGE_ERR_INVALID_ARG, "edge_isa_supported: unknown ISA %d", isa);
    *supported = edge_cpu_kernels_for(isa, NULL) != NULL;
    edge_clear_error();
    return EDGE_OK;
}

typedef struct mm_job {
    edge_dot_fn dot;
    edge_gemm4_fn gemm4;     /* set: activations in quads of interleaved tokens (block_q8_Kx4) */
    int gemm4_fetch_next;    /* the table's */
    edge_act_quant_fn quant; /* NULL: x is used as is, or another part of the run converts it */
    edge_pre_fn pre;         /* set: x = pre(x, pre_u) in place, unit by unit, before the conversion */
    const float *pre_u;
    float y_scale;
    const char *w;
    size_t row_stride;
    int64_t n_rows, n_cols, n_tok;
    const float *x;
    float *y;
    char *xq;          /* converted activations: n_tok rows (gemm4: n_quads quads) of xq_stride bytes */
    size_t xq_stride;  /* bytes per activation row (gemm4: per quad) as the kernel reads it */
    int64_t n_conv;    /* activation rows to convert: n_tok, or 4 per quad with gemm4 (zero padding) */
    int64_t blk_elems; /* activation block (quantized formats; 1 for F32) */
    int64_t rows_per_chunk, n_row_chunks, n_chunks;
    int group;    /* tokens per dot call (gemm4: quads per call) */
    edge_matvec_fn matvec; /* decode: a run of rows per call */
    _Atomic int64_t next_chunk;
    /* Decode: thread t's segment of the rows (t < DECODE_SEGS), the rows not yet claimed as
     * first | end << 32 (mm_rows_decode). */
    _Atomic uint64_t seg[DECODE_SEGS];
    int n_segs; /* as many as the pool's threads (up to DECODE_SEGS), whoever runs the product */
} mm_job;

/* The parts of one edge_matmul_parts call: one pool run for all of them. */
typedef struct mm_run {
    mm_job job[EDGE_MM_MAX_PARTS];
    int n;
    int64_t unit_end[EDGE_MM_MAX_PARTS]; /* conversion units of parts 0..p, cumulative */
    int src[EDGE_MM_MAX_PARTS];          /* the part whose conversion part p reads (itself or an earlier one) */
    int64_t n_units;
    _Atomic int64_t next_unit;
    _Atomic int64_t units_done[EDGE_MM_MAX_PARTS]; /* per part */
} mm_run;

/* A part's conversion work in units of about QUNIT_ELEMS values of one activation row. */
static int64_t mm_unit_blocks(const mm_job *job) {
    const int64_t unit = QUNIT_ELEMS / job->blk_elems;
    return unit < 1 ? 1 : unit;
}
static int64_t mm_units_per_row(const mm_job *job) {
    const int64_t unit = mm_unit_blocks(job);
    return (job->n_cols / job->blk_elems + unit - 1) / unit;
}
static int64_t mm_units(const mm_job *job) {
    return job->quant || job->pre ? mm_units_per_row(job) * job->n_conv : 0;
}

/* Blocks b .. b+nb-1 of activation row t: the in-place input transform, then the conversion into the
 * scratch (gemm4: into its slot of its quad; rows past n_tok are the quad's zero padding). */
static void mm_convert_row(const mm_job *job, int64_t t, int64_t b, int64_t nb) {
    if (job->pre && t < job->n_tok) {
        const int64_t off = t * job->n_cols + b * job->blk_elems;
        /* the caller of edge_matmul_parts hands a writable input with a transform (edge_mm_part.pre) */
        job->pre((float *)(uintptr_t)(job->x + off), job->pre_u + off, nb * job->blk_elems);
    }
    if (!job->quant) return;
    if (job->gemm4) {
        const float *x = t < job->n_tok ? job->x + t * job->n_cols : NULL;
        char *quad = job->xq + (size_t)(t / EDGE_QUAD) * job->xq_stride;
        if (job->blk_elems == QK_K)
            edge_quant_act_q8_kx4(job->quant, x, quad, (int)(t % EDGE_QUAD), b, nb);
        else
            edge_quant_act_q8_0x4(job->quant, x, quad, (int)(t % EDGE_QUAD), job->n_cols, b, nb);
    } else {
        job->quant(job->x + t * job->n_cols, job->xq + (size_t)t * job->xq_stride, job->n_cols, b, nb);
    }
}

/* Conversion unit u (0 .. mm_units - 1) of a part. */
static void mm_convert_unit(const mm_job *job, int64_t u) {
    const int64_t unit = mm_unit_blocks(job), upr = mm_units_per_row(job), blocks_per_row = job->n_cols / job->blk_elems;
    const int64_t t = u / upr, b = (u % upr) * unit;
    mm_convert_row(job, t, b, blocks_per_row - b < unit ? blocks_per_row - b : unit);
}

/* Rows r0 .. r1-1 against tokens t0 .. t1-1 (t0 a multiple of 4) with the interleaved-activation kernel:
 * two rows against up to EDGE_GEMM4_MAX_Q quads per call. */
static void mm_chunk_gemm4(const mm_job *job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    float out[2 * EDGE_GEMM4_MAX_Q * EDGE_QUAD];
    const int64_t per_call = (int64_t)job->group * EDGE_QUAD; /* job->group: quads per call */
    for (int64_t t = t0; t < t1; t += per_call) {
        const int64_t nt = t1 - t < per_call ? t1 - t : per_call;
        const int nq = (int)((nt + EDGE_QUAD - 1) / EDGE_QUAD);
        const char *xt = job->xq + (size_t)(t / EDGE_QUAD) * job->xq_stride;
        for (int64_t r = r0; r < r1; r += 2) {
            const int nr = r + 1 < r1 ? 2 : 1;
            if (job->gemm4_fetch_next && r + 3 < r1) { /* the next row pair, from DRAM while this one computes */
                /* into L2 (prefetcht1): requests for L1 stalled on its few fill buffers, ~36 lines at once
                 * (a 16-token expert product, 8192 x 2048 Q4_K / Q6_K: +13-15 %) */
                const char *p = job->w + (size_t)(r + 2) * job->row_stride;
                for (size_t o = 0; o < 2 * job->row_stride; o += 64) __builtin_prefetch(p + o, 0, 2);
            }
            job->gemm4(job->n_cols, job->w + (size_t)r * job->row_stride, job->row_stride, nr, xt, job->xq_stride, nq,
                       out);
            for (int rr = 0; rr < nr; rr++)
                for (int64_t i = 0; i < nt; i++)
                    job->y[(t + i) * job->n_rows + r + rr] = out[rr * EDGE_GEMM4_MAX_Q * EDGE_QUAD + i];
        }
    }
}

/* Rows r0 .. r1-1 against tokens t0 .. t1-1, without the output scale. */
static void mm_rows_unscaled(const mm_job *job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    if (job->matvec) {
        job->matvec(job->n_cols, job->w + (size_t)r0 * job->row_stride, job->row_stride, r1 - r0, job->xq, job->y + r0);
        return;
    }
    if (job->gemm4) {
        mm_chunk_gemm4(job, r0, r1, t0, t1);
        return;
    }
    float out[EDGE_DOT_WIDE_TOK];
    /* Tokens outer, rows inner: the converted activations of a token group stay in L1 while the
     * chunk's weight rows stream from L2 (weights cost fewer bytes per multiply-add than
     * activations, since each weight byte serves the whole group). */
    for (int64_t t = t0; t < t1; t += job->group) {
        const int nt = (int)(t1 - t < job->group ? t1 - t : job->group);
        const char *xt = job->xq + (size_t)t * job->xq_stride;
        for (int64_t r = r0; r < r1; r++) {
            if (job->n_tok == 1) { /* decode: each weight byte is read once, from DRAM */
                const char *p = job->w + (size_t)r * job->row_stride + EDGE_DECODE_PREFETCH;
                for (size_t o = 0; o < job->row_stride; o += 64) __builtin_prefetch(p + o, 0, 3);
            }
            job->dot(job->n_cols, job->w + (size_t)r * job->row_stride, xt, job->xq_stride, nt, out);
            for (int i = 0; i < nt; i++) job->y[(t + i) * job->n_rows + r] = out[i];
        }
    }
}

/* Rows r0 .. r1-1 against tokens t0 .. t1-1, then the output scale on what they wrote, still in this
 * thread's cache (the logits' 0.577: a serial pass over the whole vocabulary's logits after the product
 * took ~70 us a decoded token, reading what the other threads wrote). The same one multiplication per
 * value as that pass. */
static void mm_rows(const mm_job *job, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    mm_rows_unscaled(job, r0, r1, t0, t1);
    if (job->y_scale == 1.0f) return;
    for (int64_t t = t0; t < t1; t++) {
        float *y = job->y + t * job->n_rows;
        for (int64_t r = r0; r < r1; r++) y[r] *= job->y_scale;
    }
}

static void mm_chunk(const mm_job *job, int64_t chunk) {
    const int64_t rc = chunk % job->n_row_chunks, tc = chunk / job->n_row_chunks;
    const int64_t r0 = rc * job->rows_per_chunk, t0 = tc * TOKEN_TILE;
    const int64_t r1 = r0 + job->rows_per_chunk < job->n_rows ? r0 + job->rows_per_chunk : job->n_rows;
    const int64_t t1 = t0 + TOKEN_TILE < job->n_tok ? t0 + TOKEN_TILE : job->n_tok;
    mm_rows(job, r0, r1, t0, t1);
}

static inline uint64_t seg_pack(int64_t first, int64_t end) { return (uint64_t)first | (uint64_t)end << 32; }
static inline int64_t seg_first(uint64_t v) { return (int64_t)(v & 0xffffffffu); }
static inline int64_t seg_end(uint64_t v) { return (int64_t)(v >> 32); }

/* Claims half of what segment `seg` has left (at least rows_per_chunk), from its front (the owner) or its
 * back (another thread), and computes it; false when the segment is empty. */
static bool mm_claim_half(mm_job *job, _Atomic uint64_t *seg, bool front) {
    uint64_t v = atomic_load_explicit(seg, memory_order_relaxed);
    for (;;) {
        const int64_t f = seg_first(v), e = seg_end(v);
        if (f >= e) return false;
        int64_t take = (e - f) / 2;
        if (take < job->rows_per_chunk) take = job->rows_per_chunk;
        if (take > e - f) take = e - f;
        const uint64_t left = front ? seg_pack(f + take, e) : seg_pack(f, e - take);
        if (atomic_compare_exchange_weak_explicit(seg, &v, left, memory_order_relaxed, memory_order_relaxed)) {
            if (front)
                mm_rows(job, f, f + take, 0, 1);
            else
                mm_rows(job, e - take, e, 0, 1);
            return true;
        }
    }
}

/* Decode: each thread reads its own segment of the rows front to back, claiming half of what is left
 * each time, so its runs follow one another in memory and its DRAM stream goes on from one to the next
 * (a run that jumps elsewhere restarts it: fixed runs of 256 KiB taken in turn by the threads are 7 %
 * slower than a share of what is left); a thread done with its own takes half of what the fullest
 * segment has left, from its back, until nothing is left: a thread the OS runs late, or not at all in
 * this product, costs the others no waiting. Whole Q4_K_M and Q8_0 decode tokens are about 2 % faster
 * this way than with runs of 1/nth of the rows left claimed by all threads from one counter. */
static void mm_rows_decode(mm_job *job, int ith) {
    const int n_segs = job->n_segs;
    if (ith < n_segs)
        while (mm_claim_half(job, &job->seg[ith], true)) {
        }
    for (;;) {
        int fullest = -1;
        int64_t most = 0;
        for (int t = 0; t < n_segs; t++) {
            const uint64_t v = atomic_load_explicit(&job->seg[t], memory_order_relaxed);
            const int64_t left = seg_end(v) - seg_first(v);
            if (left > most) {
                most = left;
                fullest = t;
            }
        }
        if (fullest < 0) return;
        mm_claim_half(job, &job->seg[fullest], false);
    }
}

/* The conversion units of all parts, claimed from one counter (part 0's first). No wait here: a part's
 * products wait only for the conversion they read (mm_wait_input), so a thread done converting starts on
 * the first part's rows while the other threads still convert the later parts' inputs. */
static void mm_convert_all(mm_run *run) {
    int p = 0;
    for (int64_t u = atomic_fetch_add_explicit(&run->next_unit, 1, memory_order_relaxed); u < run->n_units;
         u = atomic_fetch_add_explicit(&run->next_unit, 1, memory_order_relaxed)) {
        while (u >= run->unit_end[p]) p++; /* a thread's claims only grow */
        mm_convert_unit(&run->job[p], u - (p > 0 ? run->unit_end[p - 1] : 0));
        atomic_fetch_add_explicit(&run->units_done[p], 1, memory_order_release);
    }
}

/* Until every unit of the conversion part p reads is written. */
static void mm_wait_input(mm_run *run, int p) {
    const int q = run->src[p];
    const int64_t units = run->unit_end[q] - (q > 0 ? run->unit_end[q - 1] : 0);
    const uint64_t t0 = edge_now_ns();
    for (unsigned i = 0; atomic_load_explicit(&run->units_done[q], memory_order_acquire) < units; i++)
        edge_wait_step(i, t0);
}

/* Every worker: (1) the conversions (mm_convert_all); (2) the parts' products in order, each part's work
 * claimed from its own counter (prompt chunks) or segments (decode), so a worker with nothing left in one
 * part goes on to the next without waiting. Every piece of work is claimed, none reserved per thread: a
 * worker the OS has not scheduled yet costs no waiting for "its" share; the others take it. */
static void mm_run_worker(void *arg, int ith, int nth) {
    mm_run *run = arg;
    mm_convert_all(run);
    for (int p = 0; p < run->n; p++) {
        mm_job *job = &run->job[p];
        mm_wait_input(run, p);
        if (job->n_tok == 1) {
            mm_rows_decode(job, ith);
            continue;
        }
        for (int64_t c = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed); c < job->n_chunks;
             c = atomic_fetch_add_explicit(&job->next_chunk, 1, memory_order_relaxed))
            mm_chunk(job, c);
    }
}

/* Whether part p reads the conversion of an earlier part: same input, shape, weight type and transform.
 * Returns that part's index, or -1. */
static int mm_shared_input(const edge_mm_part *parts, int p) {
    for (int q = 0; q < p; q++)
        if (parts[q].x == parts[p].x && parts[q].n_tok == parts[p].n_tok && parts[q].n_cols == parts[p].n_cols &&
            parts[q].type == parts[p].type && parts[q].pre == parts[p].pre && parts[q].pre_u == parts[p].pre_u)
            return q;
    return -1;
}

size_t edge_matmul_parts_scratch_bytes(const edge_mm_part *parts, int n_parts) {
    size_t need = 0;
    for (int p = 0; p < n_parts; p++)
        if (mm_shared_input(parts, p) < 0) need += edge_matmul_scratch_bytes(parts[p].type, parts[p].n_cols, parts[p].n_tok);
    return need;
}

size_t edge_matmul_split_scratch_bytes(int type, int64_t n_cols, int64_t n_tok, int n_parts) {
    const size_t one = edge_matmul_scratch_bytes(type, n_cols, n_tok + (int64_t)(EDGE_QUAD - 1) * n_parts);
    return one > 0 ? one + (size_t)(n_parts - 1) * SCRATCH_ALIGN : 0;
}

/* Checks one part and fills its job, except the converted activations' place (xq). */
static edge_status mm_setup(const edge_kernels *k, const edge_mm_part *part, int nth, mm_job *job) {
    const int type = part->type;
    const edge_type_traits *tr = edge_type_traits_get(type);
    const edge_act_format f = edge_act_format_of(type);
    if (!tr || f == EDGE_ACT_NONE)
        return edge_fail(EDGE_ERR_UNSUPPORTED, "matmul: no kernel for weight type %d (%s)", type, tr ? tr->name : "?");
    if (!part->w || !part->x || !part->y)
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: NULL weight, input or output pointer");
    if (part->pre && !part->pre_u) return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: an input transform without its operand");
    const int64_t n_rows = part->n_rows, n_cols = part->n_cols, n_tok = part->n_tok;
    if (n_rows <= 0 || n_cols <= 0 || n_tok <= 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: sizes must be positive (rows %lld, cols %lld, tokens %lld)",
                         (long long)n_rows, (long long)n_cols, (long long)n_tok);
    if (n_rows > INT32_MAX) /* decode segments hold row numbers in 32 bits */
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: %lld rows (at most %d)", (long long)n_rows, INT32_MAX);
    int64_t act_elems, act_bytes;
    act_block(f, &act_elems, &act_bytes);
    if (n_cols % tr->block_elems != 0 || n_cols % act_elems != 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: %s row of %lld columns is not a multiple of the block size %lld",
                         tr->name, (long long)n_cols, (long long)(tr->block_elems > act_elems ? tr->block_elems : act_elems));
    const size_t row_bytes = (size_t)(n_cols / tr->block_elems) * (size_t)tr->block_bytes;
    if (part->row_stride < row_bytes)
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: row stride %zu is smaller than a %s row of %lld (%zu bytes)",
                         part->row_stride, tr->name, (long long)n_cols, row_bytes);

    memset(job, 0, sizeof *job);
    job->dot = k->dot[type] ? k->dot[type] : edge_kernels_scalar.dot[type];
    job->w = part->w;
    job->row_stride = part->row_stride;
    job->n_rows = n_rows;
    job->n_cols = n_cols;
    job->n_tok = n_tok;
    job->x = part->x;
    job->y = part->y;
    job->pre = part->pre;
    job->pre_u = part->pre_u;
    job->y_scale = part->y_scale;
    job->n_conv = n_tok;
    job->blk_elems = act_elems;
    /* Decode: a matvec kernel takes a whole run of rows and fetches ahead inside its block loop (interleaved
     * with its arithmetic; Q4_K one thread 26.5 -> 28.5 GB/s against this driver's per-row prefetch loop). */
    job->matvec = n_tok == 1 && k->dot[type] ? k->matvec[type] : NULL;
    /* Two tokens or more: the interleaved-activation kernel where the ISA has one (a quad of 2 or 3 tokens
     * is padded). Its one-token kernel computes the same per-token sums, so a token's result never depends
     * on the batch it is in. */
    if (k->dot[type] && k->gemm4[type] && (f == EDGE_ACT_Q8_K || f == EDGE_ACT_Q8_0) && n_tok >= 2) {
        job->gemm4 = k->gemm4[type];
        job->gemm4_fetch_next = k->gemm4_fetch_next;
        job->n_conv = (n_tok + EDGE_QUAD - 1) / EDGE_QUAD * EDGE_QUAD;
    }
    if (f == EDGE_ACT_F32) {
        job->xq = (char *)(uintptr_t)part->x;
        job->xq_stride = (size_t)n_cols * sizeof(float);
    } else {
        edge_act_quant_fn fallback = f == EDGE_ACT_Q8_0   ? edge_kernels_scalar.quant_q8_0
                                     : f == EDGE_ACT_Q8_1 ? edge_kernels_scalar.quant_q8_1
                                                          : edge_kernels_scalar.quant_q8_k;
        edge_act_quant_fn q = f == EDGE_ACT_Q8_0 ? k->quant_q8_0 : f == EDGE_ACT_Q8_1 ? k->quant_q8_1 : k->quant_q8_k;
        job->quant = q ? q : fallback;
        if (job->matvec && k->matvec_quant[type]) job->quant = k->matvec_quant[type];
        job->xq_stride = (size_t)(n_cols / act_elems) * (size_t)act_bytes;
        if (job->gemm4)
            job->xq_stride = f == EDGE_ACT_Q8_K ? (size_t)(n_cols / QK_K) * sizeof(block_q8_Kx4) : EDGE_Q8Q_ROW_BYTES(n_cols);
    }

    /* Tokens per dot call: up to EDGE_DOT_MAX_TOK (EDGE_DOT_WIDE_TOK where the table's kernel takes them),
     * fewer when their activations would not fit in L2. */
    job->group = k->dot[type] && k->dot_wide[type] ? EDGE_DOT_WIDE_TOK : EDGE_DOT_MAX_TOK;
    while (job->group > 1 && (size_t)job->group * job->xq_stride > GROUP_ACT_BYTES) job->group /= 2;
    /* gemm4: quads per call (xq_stride is a quad's), as many as the kernel takes: on Q4_K 8192 x 2048,
     * 16 tokens, one thread, 2 rows x 4 quads 210 GMAC/s, x 2 quads 175, x 1 quad 122 (one row: 108). */
    if (job->gemm4) job->group = EDGE_GEMM4_MAX_Q;

    int64_t rpc;
    if (n_tok == 1) {
        /* Decode claims shrinking runs of rows (mm_rows_decode), down to 16 KiB of weights. */
        rpc = (int64_t)(16384 / row_bytes);
    } else {
        /* About 8 chunks per thread per token tile for load balance (4 for up to 4 tokens). */
        rpc = n_rows / ((int64_t)nth * (n_tok <= EDGE_DOT_MAX_TOK ? 4 : 8));
        /* Several token groups: the chunk's weight rows are read once per group, so keep them in L2. */
        if (n_tok > EDGE_DOT_MAX_TOK && rpc > (int64_t)(CHUNK_WEIGHT_BYTES / row_bytes))
            rpc = (int64_t)(CHUNK_WEIGHT_BYTES / row_bytes);
    }
    if (rpc < 4) rpc = 4;
    rpc += rpc & 1; /* whole row pairs for the gemm4 kernels */
    job->rows_per_chunk = rpc;
    job->n_row_chunks = (n_rows + rpc - 1) / rpc;
    job->n_chunks = job->n_row_chunks * ((n_tok + TOKEN_TILE - 1) / TOKEN_TILE);
    atomic_init(&job->next_chunk, 0);
    job->n_segs = 0;
    if (n_tok == 1) {
        job->n_segs = nth < DECODE_SEGS ? nth : DECODE_SEGS;
        for (int t = 0; t < job->n_segs; t++)
            atomic_init(&job->seg[t], seg_pack(n_rows * t / job->n_segs, n_rows * (t + 1) / job->n_segs));
    }
    return EDGE_OK;
}

edge_status edge_matmul_parts(const edge_kernels *k, edge_threadpool *pool, const edge_mm_part *parts, int n_parts,
                              void *scratch, size_t scratch_bytes) {
    if (!k) return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: no kernel table (ISA not supported on this CPU)");
    if (!parts || n_parts < 1 || n_parts > EDGE_MM_MAX_PARTS)
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: %d parts (1..%d)", n_parts, EDGE_MM_MAX_PARTS);
    const size_t need = edge_matmul_parts_scratch_bytes(parts, n_parts);
    if (need > 0 && (!scratch || scratch_bytes < need))
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: scratch of %zu bytes is smaller than the %zu needed", scratch_bytes,
                         need);

    const int nth = edge_threadpool_size(pool);
    mm_run run;
    run.n = n_parts;
    char *cursor = scratch;
    int64_t conv_elems = 0, decode_bytes = 0;
    bool decode = true;
    for (int p = 0; p < n_parts; p++) {
        mm_job *job = &run.job[p];
        edge_status st = mm_setup(k, &parts[p], nth, job);
        if (st != EDGE_OK) return st;
        const int q = mm_shared_input(parts, p);
        run.src[p] = q >= 0 ? q : p;
        atomic_init(&run.units_done[p], 0);
        if (q >= 0) { /* converted (and transformed) once, by part q */
            job->xq = run.job[q].xq;
            job->quant = NULL;
            job->pre = NULL;
        } else {
            for (int o = 0; o < p; o++)
                if (parts[o].x == parts[p].x && (parts[o].pre || parts[p].pre))
                    return edge_fail(EDGE_ERR_INVALID_ARG,
                                     "matmul: parts %d and %d read the same input and one transforms it in place", o, p);
            if (job->quant) {
                job->xq = (char *)(((uintptr_t)cursor + SCRATCH_ALIGN - 1) & ~(uintptr_t)(SCRATCH_ALIGN - 1));
                cursor += edge_matmul_scratch_bytes(parts[p].type, parts[p].n_cols, parts[p].n_tok);
            }
        }
        run.unit_end[p] = (p > 0 ? run.unit_end[p - 1] : 0) + mm_units(job);
        if (job->quant || job->pre) conv_elems += job->n_cols * job->n_conv;
        decode = decode && job->n_tok == 1;
        decode_bytes += job->n_rows * (int64_t)job->row_stride;
    }
    run.n_units = run.unit_end[n_parts - 1];
    atomic_init(&run.next_unit, 0);

    /* A small conversion is cheaper on one thread than a barrier: the caller claims every unit first. */
    if (conv_elems <= 8192) mm_convert_all(&run);
    /* A product this small (the router in decode) costs less than waking the workers. */
    if (decode && decode_bytes <= SMALL_DECODE_BYTES)
        mm_run_worker(&run, 0, 1);
    else
        edge_threadpool_run_any(pool, mm_run_worker, &run);
    edge_clear_error();
    return EDGE_OK;
}

edge_status edge_matmul_ex(const edge_kernels *k, edge_threadpool *pool, int type, const void *w, size_t row_stride,
                           int64_t n_rows, int64_t n_cols, const float *x, int64_t n_tok, float *y, void *scratch,
                           size_t scratch_bytes) {
    const edge_mm_part part = {type, w, row_stride, n_rows, n_cols, x, n_tok, y, NULL, NULL, 1.0f};
    return edge_matmul_parts(k, pool, &part, 1, scratch, scratch_bytes);
}

EDGE_API edge_status edge_matmul(edge_threadpool *pool, int isa, int type, const void *w, int64_t n_rows,
                                 int64_t n_cols, const float *x, int64_t n_tok, float *y) {
    if (isa < EDGE_ISA_AUTO || isa > EDGE_ISA_NEON_DOTPROD) return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: unknown ISA %d", isa);
    /* the pool's features (detecting them costs ~20 us in a VM: more than a small product) */
    const edge_cpu_kernels *path = edge_cpu_kernels_for(isa, edge_threadpool_cpu(pool));
    const edge_kernels *k = path ? path->matmul : NULL;
    if (!k) return edge_fail(EDGE_ERR_UNSUPPORTED, "matmul: ISA %d is not compiled in or not supported by this CPU", isa);
    int64_t row_bytes;
    edge_status st = edge_row_bytes(type, n_cols, &row_bytes);
    if (st != EDGE_OK) return st;
    if (n_rows <= 0 || n_tok <= 0)
        return edge_fail(EDGE_ERR_INVALID_ARG, "matmul: sizes must be positive (rows %lld, tokens %lld)",
                         (long long)n_rows, (long long)n_tok);
    const size_t need = edge_matmul_scratch_bytes(type, n_cols, n_tok);
    void *scratch = NULL;
    if (need > 0 && !(scratch = malloc(need)))
        return edge_fail(EDGE_ERR_NOMEM, "matmul: out of memory for %zu bytes of scratch", need);
    st = edge_matmul_ex(k, pool, type, w, (size_t)row_bytes, n_rows, n_cols, x, n_tok, y, scratch, need);
    free(scratch);
    return st;
}
