"""The LLM stage: model loading and quantization (rank/generate/explain/rate/chat follow, #4)."""

from ragrec.inference.models import (
    DEFAULT_MODEL,
    MODELS,
    LoadedModel,
    ModelSpec,
    convert_gguf,
    load_model,
    resolve_model,
)

__all__ = ["DEFAULT_MODEL", "LoadedModel", "MODELS", "ModelSpec", "convert_gguf", "load_model", "resolve_model"]
