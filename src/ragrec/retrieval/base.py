"""The encoder interface every retriever is built on, and its registry.

An :class:`Encoder` maps catalog items and user histories into one vector space in which a
higher inner product means a better match: ``score(history, item) = query . item_vector``. That
single contract lets every encoder be searched by the same FAISS index.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import sparse

from ragrec.errors import CacheError, RagrecError
from ragrec.io import atomic_directory, atomic_write_text, read_json_meta, sha256_file
from ragrec.registry import Registry

__all__ = ["Encoder", "ENCODERS", "load_encoder", "interaction_matrix"]

ENCODERS: Registry[type[Encoder]] = Registry("encoder")
_CONFIG = "encoder.json"
_WEIGHTS = "weights.safetensors"


class Encoder(ABC):
    """Maps items and histories to vectors; implementers provide the four abstract methods.

    ``item_ids`` is the catalog, in the order of the rows of :meth:`item_embeddings`. A history
    item that is not in the catalog is ignored by :meth:`encode_histories` (an empty history is
    allowed: the encoder decides what it means, e.g. popularity).
    """

    kind: ClassVar[str]

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self.item_index) != len(self.item_ids):
            raise ValueError("item_ids contains duplicates")

    @property
    def dim(self) -> int:
        return int(self.item_embeddings().shape[1])

    @abstractmethod
    def item_embeddings(self) -> np.ndarray:
        """(N, d) float32: one row per catalog item."""

    @abstractmethod
    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, d) float32 query vectors for B histories (each oldest first)."""

    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-serialisable settings that, with :meth:`_tensors`, rebuild the encoder."""

    @abstractmethod
    def _tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors to save (weights, embeddings)."""

    @classmethod
    @abstractmethod
    def _rebuild(cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Encoder:
        """Inverse of :meth:`_config` + :meth:`_tensors`."""

    def scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, N) exact scores of every catalog item for each history."""
        return self.encode_histories(histories) @ self.item_embeddings().T

    attribution: ClassVar[str] = "leave-one-out"  # how :meth:`contributions` is computed

    def contributions(
        self, history: Sequence[str], item_ids: Sequence[str], window: int = 50
    ) -> tuple[list[str], np.ndarray]:
        """How much each history item adds to each of ``item_ids``' scores for this history.

        Returns the history items considered (distinct, known to the catalog, oldest first) and a
        (H, C) array: row h is the score of each item minus its score with every occurrence of
        history item h removed (leave-one-out; one batched :meth:`scores` call of H + 1 histories).
        Only the ``window`` most recent distinct items are ablated (older ones are left out of the
        result). Encoders whose score is a sum of per-history-item terms override this with the
        exact decomposition (``attribution = "exact"``)."""
        known = [i for i in history if i in self.item_index]
        distinct = list(dict.fromkeys(reversed(known)))[:window][::-1]  # newest occurrence decides the order
        if not distinct:
            return [], np.zeros((0, len(item_ids)), dtype=np.float32)
        cols = self._columns(item_ids)
        ablated = [[i for i in known if i != h] for h in distinct]
        scores = self.scores([known, *ablated])[:, cols]  # (H + 1, C)
        return distinct, (scores[0][None, :] - scores[1:]).astype(np.float32)

    def _columns(self, item_ids: Sequence[str]) -> list[int]:
        """Catalog rows of ``item_ids``, all of which must be in the catalog (else ``KeyError``)."""
        cols = self.indices(item_ids)
        if len(cols) != len(item_ids):
            raise KeyError(f"items outside the catalog: {[i for i in item_ids if i not in self.item_index][:5]}")
        return cols

    def item_rows(self, rows: Sequence[int]) -> np.ndarray:
        """(len(rows), d) the embeddings of some catalog rows; encoders with wide embeddings (EASE's
        are N-dimensional) override it so that no N x d matrix is built for a few rows."""
        return self.item_embeddings()[list(rows)]

    def recency_weights(self, history: Sequence[str], decay: float) -> dict[int, float]:
        """Catalog row -> ``decay ** age`` of each distinct known history item, newest first (age 0;
        the newest occurrence of a repeated item counts): the query weights of EASE and the MF fold-in."""
        weights: dict[int, float] = {}
        for age, col in enumerate(reversed(self.indices(history))):
            weights.setdefault(col, decay**age)
        return weights

    def indices(self, items: Sequence[str]) -> list[int]:
        """Catalog rows of ``items``; ids not in the catalog are skipped."""
        return [self.item_index[i] for i in items if i in self.item_index]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | PathLike[str]) -> Path:
        """Write ``encoder.json`` + ``weights.safetensors`` to folder ``path`` atomically."""
        path = Path(path)
        with atomic_directory(path) as staging:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self._tensors().items()}
            save_file(tensors, str(staging / _WEIGHTS))
            meta = {
                "kind": self.kind,
                "config": self._config(),
                "item_ids": self.item_ids,
                "weights_sha256": sha256_file(staging / _WEIGHTS),
            }
            atomic_write_text(staging / _CONFIG, json.dumps(meta) + "\n")
        return path


def interaction_matrix(item_ids: Sequence[str], sequences: Iterable[Sequence[str]]) -> sparse.csr_matrix:
    """The binary (users, items) float32 matrix of users' item sequences over the catalog ``item_ids``
    (one row per sequence, in order; repeats count once). Items outside ``item_ids`` raise."""
    index = {i: k for k, i in enumerate(item_ids)}
    users = [set(seq) for seq in sequences]
    unknown = {i for u in users for i in u} - index.keys()
    if unknown:
        raise RagrecError(f"{len(unknown)} item(s) outside the catalog, e.g. {sorted(unknown)[:3]}")
    rows = np.array([(r, index[i]) for r, u in enumerate(users) for i in sorted(u)], dtype=np.int64).reshape(-1, 2)
    return sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows[:, 0], rows[:, 1])),
                             shape=(len(users), len(index)))  # fmt: skip


def load_encoder(path: str | PathLike[str]) -> Encoder:
    """Load an encoder saved by :meth:`Encoder.save`, whatever its kind."""
    path = Path(path)
    meta = read_json_meta(path / _CONFIG, "encoder")
    weights = path / _WEIGHTS
    if not weights.is_file() or sha256_file(weights) != meta.get("weights_sha256"):
        raise CacheError(f"{weights}: missing or checksum mismatch; train the encoder again")
    cls = ENCODERS.get(meta["kind"])
    return cls._rebuild(meta["item_ids"], meta["config"], load_file(str(weights)))
