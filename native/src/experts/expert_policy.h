/* expert_policy.h — what the expert store keeps (policy), apart from how it keeps it (expert_store.c).
 *
 * The store asks the policy two things: note that a unit (one expert of one layer) was used at a given
 * time, and which of a set of candidate slots to evict. Time is the store's clock: one tick per layer
 * step (each acquire of a layer's experts). Both policies are deterministic (ties broken by the older
 * last use, then the lower slot), so tools/sim replays a trace to the same hits and misses. */
#ifndef EDGE_EXPERT_POLICY_H
#define EDGE_EXPERT_POLICY_H

#include <stdint.h>

#include "edge.h"

typedef struct edge_expert_policy {
    int kind;            /* EDGE_EXPERT_POLICY_LRU or EDGE_EXPERT_POLICY_LFU_DECAY */
    int64_t n_units;
    double half_life;    /* LFU_DECAY: a use's weight halves every half_life ticks */
    uint64_t *last_use;  /* [n_units] tick of the last use (0: never) */
    double *score;       /* [n_units] LFU_DECAY: decayed use count as of last_use */
} edge_expert_policy;

edge_status edge_expert_policy_init(edge_expert_policy *p, int kind, int64_t n_units, double half_life);
void edge_expert_policy_free(edge_expert_policy *p);
/* A use of `unit` at tick `now` (a demand hit, a demand load, or a prefetch's first use). */
void edge_expert_policy_touch(edge_expert_policy *p, int64_t unit, uint64_t now);
/* How much the policy wants to keep `unit` at tick `now`; the store evicts the candidate of lowest value
 * (ties: older last use, then lower slot index). */
double edge_expert_policy_value(const edge_expert_policy *p, int64_t unit, uint64_t now);

#endif /* EDGE_EXPERT_POLICY_H */
