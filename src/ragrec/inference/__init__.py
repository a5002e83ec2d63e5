"""The LLM stage: model loading and quantization, verbalizer ranking, constrained generation and
rating prediction (explanations, chat and the ``Recommender`` API follow, #4)."""

from ragrec.inference.generate import ConstrainedGenerator, GeneratedList, TitleTrie
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
from ragrec.inference.rate import RatingPrediction, RatingPredictor

__all__ = [
    "ConstrainedGenerator",
    "DEFAULT_MODEL",
    "GeneratedList",
    "LetterRanker",
    "LoadedModel",
    "MODELS",
    "ModelSpec",
    "RatingPrediction",
    "RatingPredictor",
    "TitleTrie",
    "convert_gguf",
    "load_model",
    "resolve_model",
]
