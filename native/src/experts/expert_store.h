/* expert_store.h — the expert store between the engine and the expert weights (internal).
 *
 * A unit is one expert of one layer: its three matrices (gate, up, down). Its home is the GGUF file (three
 * byte ranges); with a budget (edge_model_set_expert_cache), copies live in a RAM cache of equal slots,
 * read by I/O threads with large 4 KiB-aligned preads (O_DIRECT where the file system allows), several in
 * flight, never through page faults. Without a budget the store hands out views into the mapping (the
 * engine's behaviour before the store existed). The engine asks for "experts e.. of layer l" and gets
 * matrices; it never knows where they came from.
 *
 * Mechanism here (slots, I/O, pins, waits, accounting); what to keep is expert_policy.c's. */
#ifndef EDGE_EXPERT_STORE_H
#define EDGE_EXPERT_STORE_H

#include "engine/engine.h"

typedef struct edge_expert_store edge_expert_store;

/* The store of a loaded model in mapped mode (no cache), which costs nothing. */
edge_status edge_experts_create(edge_model *m, edge_expert_store **out);
void edge_experts_free(edge_expert_store *st);

/* The most experts one caller may hold at once (the group size of edge_experts_acquire). */
int64_t edge_experts_group_capacity(const edge_expert_store *st);

/* Pin experts ex[0..n-1] of `layer` (n <= the group capacity, distinct) and set out[i] to their gate, up
 * and down matrices; waits for reads (those already in flight included). Every pinned unit stays in RAM
 * until edge_experts_release with the same list. A failed read, a file changed since load or a short
 * read: EDGE_ERR_IO with a message naming the file, and nothing pinned. */
edge_status edge_experts_acquire(edge_expert_store *st, int64_t layer, const int32_t *ex, int64_t n,
                                 const edge_matrix *(*out)[3]);
void edge_experts_release(edge_expert_store *st, int64_t layer, const int32_t *ex, int64_t n);

/* Whether the engine should predict the next layer's experts (a cache with prefetch, or a trace). */
bool edge_experts_wants_prediction(const edge_expert_store *st);
/* Router logits of `layer` for n tokens ([n, n_expert], the next layer's router on the hidden state after
 * the current layer's attention): the top n_expert_used of each token go to pred[n, k] and the union starts reading into free slots (never waiting, never evicting a unit
 * pinned, loading or itself prefetched and unused). */
void edge_experts_predict(edge_expert_store *st, int64_t layer, const float *logits, int64_t n,
                          int32_t *pred);
/* The router's real choice for n tokens at positions pos0..: sel/gate [n, k]; pred ([n, k] from
 * edge_experts_predict for this layer) or NULL. Counts tokens (at layer 0), prediction accuracy, and
 * writes the trace. */
void edge_experts_observe(edge_expert_store *st, int64_t layer, int64_t pos0, int64_t n, const int32_t *sel,
                          const float *gate, const int32_t *pred);

/* The VRAM tier (CUDA backend) of a context: delta +1 while it wants the router's prediction (its own
 * prefetch) whatever the RAM tier's setting; -1 when it goes. */
void edge_experts_want_device_prefetch(edge_expert_store *st, int delta);
/* The RAM tier's policy and half-life in tokens (the defaults without a cache), for the VRAM tier. */
int edge_experts_policy_kind(const edge_expert_store *st);
double edge_experts_half_life(const edge_expert_store *st);
/* Count a VRAM tier's work in the store's statistics: demand hits and misses of VRAM, experts computed on
 * the GPU and on the CPU, units uploaded and their bytes. */
void edge_experts_count_device(edge_expert_store *st, uint64_t hits, uint64_t misses, uint64_t on_gpu,
                               uint64_t on_cpu, uint64_t uploads, uint64_t bytes);

#endif /* EDGE_EXPERT_STORE_H */
