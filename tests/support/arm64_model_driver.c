/* arm64_model_driver.c — a whole-model forward pass through edge.h: a prompt in one call (every position's
 * logits), then tokens decoded one at a time, all logits written as float32 to a file. Built twice by
 * tests/test_arm64.py: natively (x86-64, against the installed libedge) and cross-built for aarch64 (run under
 * qemu-aarch64), so the two builds' logits can be compared; bench/arm64_instructions.py runs it under a
 * qemu instruction counter.
 *
 * Usage: arm64_model_driver MODEL.gguf ISA KV_TYPE N_THREADS OUT.f32 N_PROMPT TOKEN...
 *   ISA: auto, scalar, avx2, avx512, neon, neon_dotprod; KV_TYPE: f16, f32, q8_0. The first N_PROMPT tokens
 *   are the prompt (N_PROMPT >= 1), the rest are decoded one by one. Exit 0, or 1 with the error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

static int fail(const char *what, edge_status st) {
    fprintf(stderr, "%s: %s: %s\n", what, edge_status_name(st), edge_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s MODEL.gguf ISA KV_TYPE N_THREADS OUT.f32 N_PROMPT TOKEN...\n", argv[0]);
        return 2;
    }
    static const char *const isas[] = {"scalar", "avx2", "avx512", "neon", "neon_dotprod"};
    int isa = EDGE_ISA_AUTO;
    for (int i = 0; i < (int)(sizeof isas / sizeof isas[0]); i++)
        if (strcmp(argv[2], isas[i]) == 0) isa = i;
    if (isa == EDGE_ISA_AUTO && strcmp(argv[2], "auto") != 0) {
        fprintf(stderr, "unknown ISA %s\n", argv[2]);
        return 2;
    }
    const int kv = strcmp(argv[3], "f32") == 0    ? EDGE_TYPE_F32
                   : strcmp(argv[3], "q8_0") == 0 ? EDGE_TYPE_Q8_0
                                                  : EDGE_TYPE_F16;
    const int n_threads = atoi(argv[4]), n_prompt = atoi(argv[6]), n_tok = argc - 7;
    if (n_prompt < 1 || n_prompt > n_tok) {
        fprintf(stderr, "N_PROMPT %d must be in 1..%d\n", n_prompt, n_tok);
        return 2;
    }
    int32_t *tokens = malloc((size_t)n_tok * sizeof *tokens);
    for (int i = 0; i < n_tok; i++) tokens[i] = atoi(argv[7 + i]);

    edge_model *model = NULL;
    edge_context *ctx = NULL;
    edge_status st = edge_model_load(argv[1], &model);
    if (st != EDGE_OK) return fail("edge_model_load", st);
    edge_model_hparams hp;
    edge_model_get_hparams(model, &hp);
    edge_context_params p;
    edge_context_default_params(&p);
    p.n_ctx = n_tok < hp.n_ctx_train ? n_tok : hp.n_ctx_train;
    p.n_batch = n_prompt;
    p.n_threads = n_threads;
    p.kv_type = kv;
    p.isa = isa;
    if ((st = edge_context_create(model, &p, &ctx)) != EDGE_OK) return fail("edge_context_create", st);

    float *logits = malloc((size_t)n_tok * (size_t)hp.n_vocab * sizeof(float));
    if ((st = edge_context_eval(ctx, tokens, n_prompt, logits, 1)) != EDGE_OK) return fail("prompt", st);
    for (int i = n_prompt; i < n_tok; i++)
        if ((st = edge_context_eval(ctx, tokens + i, 1, logits + (size_t)i * (size_t)hp.n_vocab, 0)) != EDGE_OK)
            return fail("decode", st);

    FILE *f = fopen(argv[5], "wb");
    if (!f || fwrite(logits, sizeof(float), (size_t)n_tok * (size_t)hp.n_vocab, f) != (size_t)n_tok * (size_t)hp.n_vocab) {
        fprintf(stderr, "cannot write %s\n", argv[5]);
        return 1;
    }
    fclose(f);
    printf("%d tokens, vocab %lld: ok\n", n_tok, (long long)hp.n_vocab);
    free(logits);
    free(tokens);
    edge_context_free(ctx);
    edge_model_free(model);
    return 0;
}
