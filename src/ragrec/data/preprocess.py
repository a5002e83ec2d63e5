"""Preprocessing: implicit-feedback threshold, de-duplication and k-core filtering.

Steps run in that order; each records what it removed in ``info["preprocessing"]``. The
chronological order and its tie-break are fixed by :class:`~ragrec.data.dataset.InteractionData`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError

__all__ = ["PreprocessConfig", "preprocess", "k_core"]


class PreprocessConfig(BaseModel):
    """How raw interactions become training data. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_rating: float | None = Field(
        default=None,
        description="Keep interactions rated at least this (implicit feedback); rows without a "
        "rating are kept. None keeps everything.",
    )
    dedup: Literal["first", "last", "none"] = Field(
        default="first",
        description="For repeated (user, item) pairs keep the first or the last in time, or all.",
    )
    user_core: int = Field(default=0, ge=0, description="Users need at least this many interactions.")
    item_core: int = Field(default=0, ge=0, description="Items need at least this many interactions.")

    @classmethod
    def k_core(cls, k: int, **kwargs: object) -> PreprocessConfig:
        """A config whose users and items both need at least ``k`` interactions."""
        return cls(user_core=k, item_core=k, **kwargs)


def k_core(frame: pd.DataFrame, user_core: int, item_core: int) -> tuple[pd.DataFrame, int]:
    """Drop users and items below their thresholds until none is (a fixed point).

    Returns the filtered frame and the number of passes it took.
    """
    passes = 0
    while True:
        passes += 1
        keep = np.ones(len(frame), dtype=bool)
        if user_core > 1:
            keep &= (frame.groupby(S.USER_ID)[S.ITEM_ID].transform("size") >= user_core).to_numpy()
        if item_core > 1:
            keep &= (frame.groupby(S.ITEM_ID)[S.USER_ID].transform("size") >= item_core).to_numpy()
        if keep.all():
            return frame, passes
        frame = frame[keep]


def preprocess(data: InteractionData, config: PreprocessConfig) -> InteractionData:
    """Apply ``config`` to ``data``; raises if nothing is left."""
    frame = data.interactions_frame()
    if S.SPLIT in frame:
        raise RagrecError(f"{data.name}: preprocess before splitting, not after")
    report: dict[str, object] = {"config": config.model_dump(), "interactions_in": len(frame)}
    if config.min_rating is not None:
        keep = frame[S.RATING].isna() | (frame[S.RATING] >= config.min_rating)
        report["removed_below_min_rating"] = int((~keep).sum())
        frame = frame[keep]
    if config.dedup != "none":
        # Rows are in canonical chronological order, so "first" is the earliest occurrence.
        dup = frame.duplicated([S.USER_ID, S.ITEM_ID], keep=config.dedup)
        report["removed_duplicates"] = int(dup.sum())
        frame = frame[~dup]
    if config.user_core > 1 or config.item_core > 1:
        before = len(frame)
        frame, passes = k_core(frame, config.user_core, config.item_core)
        report["removed_by_k_core"] = before - len(frame)
        report["k_core_passes"] = passes
    if frame.empty:
        raise RagrecError(f"{data.name}: preprocessing removed every interaction ({config.model_dump()})")
    report["interactions_out"] = len(frame)
    return data.replace(frame, info_update={"preprocessing": report})
