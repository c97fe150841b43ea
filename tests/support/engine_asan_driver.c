/* engine_asan_driver.c — drives the engine's whole C API (load, contexts with every KV type, batched and
 * incremental eval, the error paths, state save/load, free) for tests/test_engine_memory.py, which builds
 * it with AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer on) and runs it over GGUF files.
 * Prints "ok <file>" per model; exits nonzero on any unexpected result. */
#include <stdio.h>
#include <stdlib.h>
#include "edge.h"
#define CK(x) do { edge_status s_ = (x); if (s_) { printf("%s: %s\n", #x, edge_last_error()); return 1; } } while (0)
int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        edge_model *m = NULL;
        edge_status st = edge_model_load(argv[a], &m);
        if (st) { printf("load %s: %s\n", argv[a], edge_last_error()); continue; }
        edge_model_hparams hp; CK(edge_model_get_hparams(m, &hp));
        for (int kv = 0; kv < 3; kv++) {
            edge_context_params p; CK(edge_context_default_params(&p));
            p.n_ctx = 40; p.n_batch = 7; p.n_threads = 2; p.kv_type = kv == 0 ? 1 : kv == 1 ? 8 : 0;
            edge_context *c; CK(edge_context_create(m, &p, &c));
            int32_t toks[30]; for (int i = 0; i < 30; i++) toks[i] = (i * 37 + 5) % hp.n_vocab;
            toks[4] = 0;
            float *lg = malloc(sizeof(float) * 30 * hp.n_vocab);
            CK(edge_context_eval(c, toks, 30, lg, 1));
            CK(edge_context_eval(c, toks, 3, lg, 0));
            if (edge_context_eval(c, toks, 30, lg, 0) == EDGE_OK) return 2; /* context overflow must fail */
            int32_t bad = (int32_t)hp.n_vocab; if (edge_context_eval(c, &bad, 1, lg, 0) == EDGE_OK) return 3;
            uint64_t n; CK(edge_context_state_size(c, &n)); void *buf = malloc(n);
            CK(edge_context_state_save(c, buf, n)); CK(edge_context_truncate(c, 10));
            CK(edge_context_eval(c, toks, 5, lg, 1)); CK(edge_context_state_load(c, buf, n));
            if (edge_context_state_load(c, buf, n - 1) == EDGE_OK) return 4;
            CK(edge_context_eval(c, toks, 1, NULL, 0));
            free(buf); free(lg); edge_context_free(c);
            /* three sequences in one context: batched passes (split at n_batch 7), per-slot truncate, errors */
            p.n_seq = 3;
            CK(edge_context_create(m, &p, &c));
            int32_t seqs[30]; uint8_t want[30];
            for (int i = 0; i < 30; i++) { seqs[i] = i < 12 ? 0 : i < 25 ? 1 : 2; want[i] = i % 4 == 0; }
            lg = malloc(sizeof(float) * 30 * hp.n_vocab);
            CK(edge_batch_eval(c, seqs, toks, 30, want, lg));
            CK(edge_batch_eval(c, seqs, toks, 30, NULL, lg));
            CK(edge_seq_truncate(c, 1, 3));
            int64_t np; CK(edge_seq_n_past(c, 1, &np)); if (np != 3) return 5;
            int32_t s3[3] = {2, 1, 0};
            CK(edge_batch_eval(c, s3, toks, 3, NULL, NULL));
            int32_t zeros[16] = {0}; /* sequence 0 holds 25: 16 more overflow n_ctx 40 */
            if (edge_batch_eval(c, zeros, toks, 16, NULL, lg) == EDGE_OK) return 6;
            int32_t apart[3] = {0, 1, 0}; if (edge_batch_eval(c, apart, toks, 3, NULL, lg) == EDGE_OK) return 7;
            int32_t nos[1] = {3}; if (edge_batch_eval(c, nos, toks, 1, NULL, lg) == EDGE_OK) return 8;
            free(lg); edge_context_free(c);
        }
        /* the expert cache (expert store): a budget below the minimum fails; the smallest one with prefetch,
         * a trace left open for edge_model_free to close, batched and single-token evals from two contexts */
        edge_expert_cache_params xp; CK(edge_expert_cache_default_params(&xp));
        uint64_t xmin; CK(edge_model_expert_cache_min_bytes(m, 1, &xmin));
        xp.budget_bytes = xmin - 1; if (edge_model_set_expert_cache(m, &xp) == EDGE_OK) return 5;
        xp.budget_bytes = xmin; xp.io_threads = 2; CK(edge_model_set_expert_cache(m, &xp));
        CK(edge_model_trace_experts(m, "/dev/null"));
        for (int rep = 0; rep < 2; rep++) {
            edge_context_params p; CK(edge_context_default_params(&p));
            p.n_ctx = 40; p.n_batch = 7; p.n_threads = 2;
            edge_context *c; CK(edge_context_create(m, &p, &c));
            int32_t toks[20]; for (int i = 0; i < 20; i++) toks[i] = (i * 41 + 7) % hp.n_vocab;
            float *lg = malloc(sizeof(float) * 20 * hp.n_vocab);
            CK(edge_context_eval(c, toks, 20, lg, 1));
            for (int i = 0; i < 3; i++) CK(edge_context_eval(c, toks + i, 1, lg, 0));
            free(lg); edge_context_free(c);
        }
        edge_expert_cache_stats xs; CK(edge_model_expert_cache_stats(m, &xs));
        if (xs.misses == 0 || xs.tokens != 46) return 6;
        edge_model_free(m);
        printf("ok %s\n", argv[a]);
    }
    return 0;
}
