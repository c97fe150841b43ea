/* expert_policy.c — the expert store's replacement policies.
 *
 * LRU: the value of a unit is its last use; the least recently used goes first.
 * LFU_DECAY: frequency with exponential decay. Each use adds 1 to a score that halves every half_life
 * ticks (ticks = layer steps, so the default half-life of 8 tokens is 8 * n_layer ticks): an expert that
 * a run keeps choosing outlives one that was hot a while ago, and one use of a cold expert does not push
 * out a frequently used one (LRU's weakness when routing alternates between a few favourites). The score
 * is kept for every unit, cached or not, so a unit evicted and read again remembers its history. */
#include <math.h>
#include <stdlib.h>

#include "common.h"
#include "experts/expert_policy.h"

edge_status edge_expert_policy_init(edge_expert_policy *p, int kind, int64_t n_units, double half_life) {
    memset(p, 0, sizeof *p);
    if (kind != EDGE_EXPERT_POLICY_LRU && kind != EDGE_EXPERT_POLICY_LFU_DECAY)
        return edge_fail(EDGE_ERR_INVALID_ARG, "expert cache policy %d: use LRU (%d) or LFU_DECAY (%d)", kind,
                         EDGE_EXPERT_POLICY_LRU, EDGE_EXPERT_POLICY_LFU_DECAY);
    if (!(half_life > 0)) return edge_fail(EDGE_ERR_INVALID_ARG, "expert cache half-life must be positive");
    p->kind = kind;
    p->n_units = n_units;
    p->half_life = half_life;
    p->last_use = calloc((size_t)n_units, sizeof *p->last_use);
    p->score = calloc((size_t)n_units, sizeof *p->score);
    if (!p->last_use || !p->score) {
        edge_expert_policy_free(p);
        return edge_fail(EDGE_ERR_NOMEM, "out of memory for the expert cache policy");
    }
    return EDGE_OK;
}

void edge_expert_policy_free(edge_expert_policy *p) {
    free(p->last_use);
    free(p->score);
    memset(p, 0, sizeof *p);
}

static double decayed(const edge_expert_policy *p, int64_t unit, uint64_t now) {
    const double age = (double)(now - p->last_use[unit]);
    return p->score[unit] * pow(2.0, -age / p->half_life); /* pow, as Python's ** (the simulator) */
}

void edge_expert_policy_touch(edge_expert_policy *p, int64_t unit, uint64_t now) {
    if (p->kind == EDGE_EXPERT_POLICY_LFU_DECAY) p->score[unit] = decayed(p, unit, now) + 1.0;
    p->last_use[unit] = now;
}

double edge_expert_policy_value(const edge_expert_policy *p, int64_t unit, uint64_t now) {
    if (p->kind == EDGE_EXPERT_POLICY_LRU) return (double)p->last_use[unit];
    return decayed(p, unit, now);
}
