"""The LLM stage: model loading, quantization, rank/generate/explain/rate/chat (see issue #4)."""
