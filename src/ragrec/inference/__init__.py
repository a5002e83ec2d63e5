"""The LLM stage: model loading and quantization, verbalizer ranking (generate/explain/rate/chat follow, #4)."""

from ragrec.inference.models import (
    DEFAULT_MODEL,
    MODELS,
    LoadedModel,
    ModelSpec,
    convert_gguf,
    load_model,
    resolve_model,
)
from ragrec.inference.rank import LetterRanker

__all__ = [
    "DEFAULT_MODEL",
    "LetterRanker",
    "LoadedModel",
    "MODELS",
    "ModelSpec",
    "convert_gguf",
    "load_model",
    "resolve_model",
]
