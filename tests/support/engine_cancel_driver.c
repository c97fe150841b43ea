/* engine_cancel_driver.c — cancellation and close under AddressSanitizer (tests/test_embedding.py builds it
 * like engine_asan_driver.c): edge_context_set_cancel before an eval, from another thread during one
 * (repeatedly, at varied moments), and the Python close() sequence (cancel, wait for the evaluating thread,
 * free) while a thread evaluates. After every cancel the context must give bit for bit the logits of an
 * uncancelled run. Prints "ok <file> <cancelled>/<rounds>" per model; exits nonzero on any unexpected result. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "edge.h"
#define CK(x) do { edge_status s_ = (x); if (s_) { printf("%s: %s\n", #x, edge_last_error()); exit(1); } } while (0)

typedef struct {
    edge_context *ctx;
    const int32_t *toks;
    int64_t n;
    float *logits;
    int rounds, cancelled, other_errors;
} job;

static void *evaluate(void *p) {
    job *j = p;
    for (int r = 0; r < j->rounds; r++) {
        CK(edge_context_truncate(j->ctx, 0));
        edge_status st = edge_context_eval(j->ctx, j->toks, j->n, j->logits, 0);
        if (st == EDGE_ERR_CANCELLED) {
            int64_t n_past;
            CK(edge_context_n_past(j->ctx, &n_past));
            if (n_past != 0) j->other_errors++; /* a cancelled call keeps nothing */
            j->cancelled++;
            return NULL;
        }
        if (st != EDGE_OK) j->other_errors++;
    }
    return NULL;
}

static void sleep_us(long us) {
    struct timespec t = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        edge_model *m = NULL;
        CK(edge_model_load(argv[a], &m));
        edge_model_hparams hp;
        CK(edge_model_get_hparams(m, &hp));
        edge_context_params p;
        CK(edge_context_default_params(&p));
        p.n_ctx = hp.n_ctx_train < 96 ? hp.n_ctx_train : 96;
        p.n_batch = p.n_ctx; /* the whole prompt in one chunk: only the per-layer check can stop it */
        p.n_threads = 2;
        const int64_t n = p.n_ctx;
        int32_t *toks = malloc(sizeof(int32_t) * (size_t)n);
        for (int64_t i = 0; i < n; i++) toks[i] = (int32_t)((i * 37 + 5) % hp.n_vocab);
        float *want = malloc(sizeof(float) * (size_t)hp.n_vocab), *got = malloc(sizeof(float) * (size_t)hp.n_vocab);
        edge_context *c;
        CK(edge_context_create(m, &p, &c));
        CK(edge_context_eval(c, toks, n, want, 0));
        /* 1. a flag set before the call: nothing evaluated, EDGE_ERR_CANCELLED, the flag stays until cleared */
        CK(edge_context_truncate(c, 0));
        CK(edge_context_set_cancel(c, 1));
        for (int k = 0; k < 2; k++) {
            if (edge_context_eval(c, toks, n, got, 0) != EDGE_ERR_CANCELLED) { printf("not cancelled\n"); return 2; }
            int64_t n_past;
            CK(edge_context_n_past(c, &n_past));
            if (n_past != 0) { printf("cancelled eval kept %lld tokens\n", (long long)n_past); return 3; }
        }
        CK(edge_context_set_cancel(c, 0));
        CK(edge_context_eval(c, toks, n, got, 0));
        if (memcmp(want, got, sizeof(float) * (size_t)hp.n_vocab) != 0) { printf("logits differ\n"); return 4; }
        /* 2. cancelled from another thread at varied moments; each time the context still computes right */
        int cancelled = 0, rounds = 0;
        for (long delay = 0; delay <= 4000; delay += 500, rounds++) {
            job j = {c, toks, n, got, 1000, 0, 0};
            pthread_t t;
            CK(edge_context_set_cancel(c, 0));
            pthread_create(&t, NULL, evaluate, &j);
            sleep_us(delay);
            CK(edge_context_set_cancel(c, 1));
            pthread_join(t, NULL);
            if (j.other_errors) { printf("unexpected failure during cancel\n"); return 5; }
            cancelled += j.cancelled;
            CK(edge_context_set_cancel(c, 0));
            CK(edge_context_truncate(c, 0));
            CK(edge_context_eval(c, toks, n, got, 0));
            if (memcmp(want, got, sizeof(float) * (size_t)hp.n_vocab) != 0) { printf("logits differ after cancel\n"); return 6; }
        }
        if (cancelled != rounds) { printf("%d of %d rounds cancelled\n", cancelled, rounds); return 7; }
        /* 3. close while a thread evaluates: cancel, wait for it, then free (what Model.close does) */
        {
            job j = {c, toks, n, got, 1000, 0, 0};
            pthread_t t;
            CK(edge_context_set_cancel(c, 0));
            pthread_create(&t, NULL, evaluate, &j);
            sleep_us(1000);
            CK(edge_context_set_cancel(c, 1));
            pthread_join(t, NULL);
            edge_context_free(c);
            if (j.other_errors || j.cancelled != 1) { printf("close: the evaluation was not cancelled\n"); return 8; }
        }
        edge_model_free(m);
        free(toks), free(want), free(got);
        printf("ok %s %d/%d\n", argv[a], cancelled, rounds);
    }
    return 0;
}
