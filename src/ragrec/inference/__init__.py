"""The LLM stage: model loading and quantization, verbalizer ranking, constrained generation,
explanations, rating prediction, chat, and the ``Recommender`` API that serves them per scenario."""

from ragrec.inference.chat import ChatAnswer, ChatSession
from ragrec.inference.explain import Explainer, Explanation, ExplanationStream
from ragrec.inference.generate import ConstrainedGenerator, GeneratedList, TitleTrie
from ragrec.inference.grounding import Grounding, TitleMatcher
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
from ragrec.inference.recommender import (
    Recommendation,
    Recommender,
    RecommenderConfig,
    Scenario,
    ScenarioConfig,
    fuse_scores,
    save_recommender,
)

__all__ = [
    "ChatAnswer",
    "ChatSession",
    "ConstrainedGenerator",
    "DEFAULT_MODEL",
    "Explainer",
    "Explanation",
    "ExplanationStream",
    "GeneratedList",
    "Grounding",
    "LetterRanker",
    "LoadedModel",
    "MODELS",
    "ModelSpec",
    "RatingPrediction",
    "RatingPredictor",
    "Recommendation",
    "Recommender",
    "RecommenderConfig",
    "Scenario",
    "ScenarioConfig",
    "TitleMatcher",
    "TitleTrie",
    "convert_gguf",
    "fuse_scores",
    "load_model",
    "resolve_model",
    "save_recommender",
]
