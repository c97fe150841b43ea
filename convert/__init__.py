"""The Grok-1 checkpoint → GGUF converter (installed as ``edge.convert``)."""
