"""Popularity: every user gets the most-interacted items (cold-start fallback and baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.retrieval.base import ENCODERS, Encoder

__all__ = ["PopularityEncoder"]


@ENCODERS.decorator("popularity")
class PopularityEncoder(Encoder):
    """A 1-d space: item vector = log(1 + training count), every query = [1]."""

    kind = "popularity"

    def __init__(self, item_ids: Sequence[str], counts: np.ndarray) -> None:
        super().__init__(item_ids)
        self.counts = np.asarray(counts, dtype=np.float32)
        if self.counts.shape != (len(self.item_ids),):
            raise ValueError(f"counts has shape {self.counts.shape}, expected ({len(self.item_ids)},)")

    @classmethod
    def fit(cls, data: InteractionData, splits: Sequence[str] = (S.TRAIN,)) -> PopularityEncoder:
        """Count interactions per item in ``splits`` (all interactions if ``data`` has no split)."""
        frame = data.interactions_frame()
        if data.has_split:
            frame = frame[frame[S.SPLIT].isin(tuple(splits))]
        counts = frame[S.ITEM_ID].value_counts()
        item_ids = data.item_ids()
        return cls(item_ids, np.array([counts.get(i, 0) for i in item_ids], dtype=np.float32))

    def item_embeddings(self) -> np.ndarray:
        return np.log1p(self.counts)[:, None]

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.ones((len(histories), 1), dtype=np.float32)

    def _config(self) -> dict[str, Any]:
        return {}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"counts": torch.from_numpy(self.counts)}

    @classmethod
    def _rebuild(
        cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> PopularityEncoder:
        return cls(item_ids, tensors["counts"].numpy())
