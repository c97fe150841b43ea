"""Constants of the official Grok-1 forward pass (xai-org/grok-1 run.py / model.py; docs/grok1.md).

One place for the numbers: the converter writes them into GGUF metadata, the training script of the
demo model computes with them. The C engine reads them from metadata; the float64 test reference
(tests/support/grok_reference.py) keeps its own copy, written from docs/grok1.md.
"""

EMBEDDING_MULTIPLIER = 78.38367176906169  # embedding_multiplier_scale
OUTPUT_MULTIPLIER = 0.5773502691896257  # output_multiplier_scale
ATTN_OUTPUT_MULTIPLIER = 0.08838834764831845  # attn_output_multiplier (a config constant, = 1/sqrt(128))
ATTN_LOGIT_CAP = 30.0  # attention logits: cap * tanh(s / cap), hard-coded in model.py
RMS_EPS = 1e-5
ROPE_BASE = 10000.0
N_SELECTED_EXPERTS = 2
