"""EASE: a closed-form item-item model (Steck, WWW 2019), with recency-weighted queries.

``B = argmin |X - X B|^2 + l2 |B|^2`` with ``diag(B) = 0`` has the closed form
``P = (X^T X + l2 I)^-1``, ``B = -P / diag(P)``. A user's query is their history as a vector
over the catalog, each item weighted ``decay ** age`` (newest age 0), so recent items count more
(``decay = 1`` is plain EASE); an item's vector is its column of ``B``. The dense N x N matrix
limits it to catalogs of ``max_items`` items.

An item without training interactions has a zero row and column: EASE cannot recommend it, and
it counts for nothing in a history. :meth:`EASEEncoder.fill_untrained` gives such items the
weighted mean of the rows and columns of their most similar trained items in a content space
(text or LLM item vectors), so new items are ranked on EASE's own scale (a fusion of EASE with a
text score on another scale cannot lift them past well-scored trained items).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError
from ragrec.retrieval.base import ENCODERS, Encoder, interaction_matrix

__all__ = ["EASEConfig", "EASEEncoder"]


class EASEConfig(BaseModel):
    """Settings of EASE. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    l2: float = Field(500.0, gt=0, description="L2 regularisation of the item-item weights.")
    decay: float = Field(1.0, gt=0, le=1, description="Query weight of a history item = decay ** (its age in items).")
    max_items: int = Field(20_000, ge=1, description="Largest catalog accepted (the model is a dense N x N matrix).")


@ENCODERS.decorator("ease")
class EASEEncoder(Encoder):
    """Item-item EASE (see module docstring)."""

    kind = "ease"

    def __init__(self, item_ids: Sequence[str], weights: np.ndarray, config: EASEConfig) -> None:
        super().__init__(item_ids)
        self.weights = np.asarray(weights, dtype=np.float32)  # (N, N), B[i, j] = weight of i for j
        self.config = config

    @classmethod
    def fit(
        cls, data: InteractionData, config: EASEConfig | None = None, splits: Sequence[str] = (S.TRAIN,)
    ) -> EASEEncoder:
        hist = data.histories(splits=splits if data.has_split else None)
        return cls.from_sequences(data.item_ids(), (h.item_ids for h in hist.values()), config)

    @classmethod
    def from_sequences(
        cls, item_ids: Sequence[str], sequences: Iterable[Sequence[str]], config: EASEConfig | None = None
    ) -> EASEEncoder:
        """EASE over the catalog ``item_ids`` from users' item sequences (each user one row of X;
        repeats count once). Items outside ``item_ids`` raise; items no sequence holds get zero weights."""
        config = config or EASEConfig()
        item_ids = list(item_ids)
        n = len(item_ids)
        if n > config.max_items:
            raise RagrecError(f"EASE needs a dense {n} x {n} matrix; the limit is max_items={config.max_items}")
        x = interaction_matrix(item_ids, sequences).astype(np.float64)  # a dense X would be users x items floats
        gram = config.l2 * torch.eye(n, dtype=torch.float64) + torch.from_numpy((x.T @ x).toarray())  # (N, N)
        p = torch.cholesky_inverse(torch.linalg.cholesky(gram))  # gram is symmetric positive definite
        b = -p / torch.diag(p)[None, :]
        b.fill_diagonal_(0.0)
        return cls(item_ids, b.float().numpy(), config)

    def item_embeddings(self) -> np.ndarray:
        return np.ascontiguousarray(self.weights.T)

    def item_rows(self, rows: Sequence[int]) -> np.ndarray:
        return np.ascontiguousarray(self.weights[:, list(rows)].T)

    def _query_weights(self, history: Sequence[str]) -> dict[int, float]:
        """Catalog row -> query weight ``decay ** age`` of each distinct history item, newest first."""
        return self.recency_weights(history, self.config.decay)

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(histories), len(self.item_ids)), dtype=np.float32)
        for row, history in enumerate(histories):
            for col, weight in self._query_weights(history).items():
                out[row, col] = weight
        return out

    def scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, N) exact scores from the history's rows of B (sparse: O(history x N) per user)."""
        out = np.zeros((len(histories), len(self.item_ids)), dtype=np.float32)
        for row, history in enumerate(histories):
            weights = self._query_weights(history)
            if weights:
                cols = list(weights)
                out[row] = np.asarray(list(weights.values()), dtype=np.float32) @ self.weights[cols]
        return out

    attribution = "exact"

    def contributions(
        self, history: Sequence[str], item_ids: Sequence[str], window: int = 50
    ) -> tuple[list[str], np.ndarray]:
        """Exact: an item's score is ``sum_h decay**age(h) * B[h, item]`` (see :meth:`scores`), so
        each history item's term is its contribution and the rows add up to the score. Every
        distinct history item is returned (``window`` is not needed: nothing is ablated)."""
        weights = self._query_weights(history)
        cols = self._columns(item_ids)
        rows = list(weights)[::-1]  # oldest first
        w = np.asarray([weights[r] for r in rows], dtype=np.float32)[:, None]
        return [self.item_ids[r] for r in rows], (w * self.weights[np.ix_(rows, cols)]).astype(np.float32)

    def untrained(self) -> list[int]:
        """Catalog rows whose row and column of ``B`` are all zero: items without training interactions
        (and any item that never shared a training user with another item)."""
        w = self.weights
        return np.flatnonzero(~(w.any(axis=0) | w.any(axis=1))).tolist()

    def fill_untrained(
        self, vectors: np.ndarray, rows: Sequence[int] | None = None, *, k: int = 20, shrink: float = 1.0
    ) -> EASEEncoder:
        """A copy in which each item of ``rows`` (default: :meth:`untrained`) gets ``shrink`` times
        the weighted mean of the columns, then the rows, of its ``k`` most similar trained items
        under cosine similarity of ``vectors`` ((N, d), this encoder's item order: text or LLM item
        vectors); neighbour weights are the similarities clipped at 0, normalised to sum 1.
        ``diag(B) = 0`` is kept. The encoder itself is unchanged."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != len(self.item_ids):
            raise ValueError(f"vectors has {vectors.shape[0]} rows for a catalog of {len(self.item_ids)} items")
        if k < 1 or shrink < 0:
            raise ValueError(f"need k >= 1 and shrink >= 0, got k={k}, shrink={shrink}")
        cold = sorted(set(self.untrained() if rows is None else (int(r) for r in rows)))
        warm = np.setdiff1d(np.arange(len(self.item_ids)), cold)
        if not cold or not len(warm):
            return EASEEncoder(self.item_ids, self.weights.copy(), self.config)
        from scipy import sparse

        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        sims = np.clip(unit[cold] @ unit[warm].T, 0.0, None)  # (C, W)
        k = min(k, len(warm))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (C, k) positions in `warm`
        weight = np.take_along_axis(sims, top, axis=1)
        weight /= np.maximum(weight.sum(axis=1, keepdims=True), 1e-12)  # rows sum to 1 (or 0)
        mix = sparse.csr_matrix(
            (weight.ravel(), (np.repeat(np.arange(len(cold)), k), warm[top].ravel())),
            shape=(len(cold), len(self.item_ids)),
        )  # (C, N): k trained neighbours each
        w = self.weights.copy()
        w[:, cold] = shrink * np.asarray(mix @ w.T).T  # columns: how much each item supports a new one
        w[cold, :] = shrink * np.asarray(mix @ w)  # rows: how much a new item in a history supports others
        w[cold, cold] = 0.0
        return EASEEncoder(self.item_ids, w, self.config)

    def _config(self) -> dict[str, Any]:
        return self.config.model_dump()

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": torch.from_numpy(self.weights)}

    @classmethod
    def _rebuild(cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> EASEEncoder:
        return cls(item_ids, tensors["weights"].numpy(), EASEConfig(**config))
