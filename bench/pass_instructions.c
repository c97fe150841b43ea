/* pass_instructions.c — the forward pass of one prompt or one decode step under callgrind, with
 * instrumentation on only around that eval (run with valgrind --tool=callgrind --instr-atstart=no;
 * bench/pass_instructions.py builds and runs it). One thread, so the count is repeatable.
 * usage: pass_instructions MODEL prompt|decode N_PROMPT ISA */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <valgrind/callgrind.h>

#include "edge.h"

#define CK(x)                                                                                                          \
    do {                                                                                                               \
        edge_status s_ = (x);                                                                                          \
        if (s_) {                                                                                                      \
            fprintf(stderr, "%s: %s\n", #x, edge_last_error());                                                        \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MODEL prompt|decode N_PROMPT ISA\n", argv[0]);
        return 2;
    }
    edge_model *m;
    CK(edge_model_load(argv[1], &m));
    edge_model_hparams hp;
    CK(edge_model_get_hparams(m, &hp));
    edge_context_params p;
    CK(edge_context_default_params(&p));
    p.n_threads = 1;
    p.n_ctx = 256;
    p.isa = atoi(argv[4]);
    edge_context *c;
    CK(edge_context_create(m, &p, &c));
    const int n = atoi(argv[3]);
    if (n < 1 || n >= p.n_ctx) {
        fprintf(stderr, "N_PROMPT %d must be in 1..%lld\n", n, (long long)p.n_ctx - 1);
        return 2;
    }
    int32_t *t = malloc(sizeof *t * (size_t)(n + 1));
    float *logits = malloc(sizeof(float) * (size_t)hp.n_vocab);
    if (!t || !logits) return 1;
    for (int i = 0; i <= n; i++) t[i] = 1 + (int32_t)((i * 7919) % (hp.n_vocab - 1));
    const int decode = strcmp(argv[2], "decode") == 0;
    if (decode) CK(edge_context_eval(c, t, n, logits, 0));
    CALLGRIND_START_INSTRUMENTATION;
    if (decode)
        CK(edge_context_eval(c, t + n, 1, logits, 0));
    else
        CK(edge_context_eval(c, t, n, logits, 0));
    CALLGRIND_STOP_INSTRUMENTATION;
    double sum = 0.0;
    for (int64_t i = 0; i < hp.n_vocab; i++) sum += logits[i];
    printf("logit sum %.9g\n", sum);
    edge_context_free(c);
    edge_model_free(m);
    free(t);
    free(logits);
    return 0;
}
