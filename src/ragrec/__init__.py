"""ragrec: recommendation with a language model grounded by retrieval.

Parts (sub-packages): ``data`` (interactions, items, splits), ``retrieval`` (candidate
retrievers over FAISS), ``prompts`` (scenario/task templates), ``inference`` (the LLM stage),
``finetune`` (LoRA training) and ``eval`` (metrics and reports).
"""

import logging
from importlib.metadata import PackageNotFoundError, version

from ragrec.errors import CacheError, DataFormatError, DownloadError, RagrecError, UnknownNameError
from ragrec.types import Item, UserHistory

try:
    __version__ = version("ragrec")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"


class _HubKernelNotice(logging.Filter):
    """bitsandbytes (imported by peft whether or not anything is quantised) warns on every import,
    on CPUs with AVX512-BF16, that it cannot fetch an optional 4-bit kernel from the Hugging Face
    Hub through the package ``kernels``; it then uses its own kernel. ragrec drops that line and
    states the fact in ``LoadedModel.notes`` where a model is actually quantised to 4 bits."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community")


logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_HubKernelNotice())

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
