"""The LLM stage: model loading and quantization, verbalizer ranking, constrained generation,
explanations, rating prediction, chat, and the ``Recommender`` API that serves them per scenario.

Names are imported from their submodules on first use, so that e.g. the verbalizer ranker
needs neither FAISS nor the retrieval stack.
"""

import importlib

_WHERE = {
    "AdapterInfo": "ragrec.inference.adapters",
    "ChatAnswer": "ragrec.inference.chat",
    "ChatSession": "ragrec.inference.chat",
    "ConstrainedGenerator": "ragrec.inference.generate",
    "DEFAULT_MODEL": "ragrec.inference.models",
    "Explainer": "ragrec.inference.explain",
    "Explanation": "ragrec.inference.explain",
    "ExplanationStream": "ragrec.inference.explain",
    "GeneratedList": "ragrec.inference.generate",
    "Grounding": "ragrec.inference.grounding",
    "LetterRanker": "ragrec.inference.rank",
    "LoadedModel": "ragrec.inference.models",
    "MODELS": "ragrec.inference.models",
    "ModelSpec": "ragrec.inference.models",
    "RatingPrediction": "ragrec.inference.rate",
    "RatingPredictor": "ragrec.inference.rate",
    "Recommendation": "ragrec.inference.recommender",
    "Recommender": "ragrec.inference.recommender",
    "RecommenderConfig": "ragrec.inference.config",
    "Scenario": "ragrec.inference.scenario",
    "ScenarioConfig": "ragrec.inference.scenario",
    "TitleMatcher": "ragrec.inference.grounding",
    "TitleTrie": "ragrec.inference.generate",
    "check_adapter": "ragrec.inference.adapters",
    "convert_gguf": "ragrec.inference.models",
    "FEATURES": "ragrec.inference.fusion",
    "DEFAULT_FEATURES": "ragrec.inference.fusion",
    "FusionModel": "ragrec.inference.fusion",
    "ItemPriors": "ragrec.inference.fusion",
    "fit_fusion": "ragrec.inference.fusion",
    "fuse_scores": "ragrec.inference.recommender",
    "load_model": "ragrec.inference.models",
    "read_adapter_info": "ragrec.inference.adapters",
    "resolve_model": "ragrec.inference.models",
    "save_adapter": "ragrec.inference.adapters",
    "save_recommender": "ragrec.inference.persistence",
}

__all__ = [
    "AdapterInfo",
    "ChatAnswer",
    "ChatSession",
    "ConstrainedGenerator",
    "DEFAULT_MODEL",
    "Explainer",
    "Explanation",
    "ExplanationStream",
    "FEATURES",
    "DEFAULT_FEATURES",
    "FusionModel",
    "GeneratedList",
    "Grounding",
    "ItemPriors",
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
    "check_adapter",
    "convert_gguf",
    "fit_fusion",
    "fuse_scores",
    "load_model",
    "read_adapter_info",
    "resolve_model",
    "save_adapter",
    "save_recommender",
]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragrec.inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
