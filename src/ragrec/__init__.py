"""ragrec: recommendation with a language model grounded by retrieval.

Parts (sub-packages): ``data`` (interactions, items, splits), ``retrieval`` (candidate
retrievers over FAISS), ``prompts`` (scenario/task templates), ``inference`` (the LLM stage),
``finetune`` (LoRA training) and ``eval`` (metrics and reports).
"""

from importlib.metadata import PackageNotFoundError, version

from ragrec.errors import CacheError, DataFormatError, DownloadError, RagrecError, UnknownNameError
from ragrec.types import Item, UserHistory

try:
    __version__ = version("ragrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "CacheError",
    "DataFormatError",
    "DownloadError",
    "Item",
    "RagrecError",
    "UnknownNameError",
    "Recommender",
    "UserHistory",
    "__version__",
]


def __getattr__(name: str):
    # The Recommender pulls in torch and transformers: imported on first use, not with ragrec.
    if name == "Recommender":
        from ragrec.inference.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'ragrec' has no attribute {name!r}")
