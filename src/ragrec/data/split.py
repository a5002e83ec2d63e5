"""Train/valid/test splits. Each adds a ``split`` column (``train``/``valid``/``test``).

* :func:`leave_one_out` - per user, last interaction = test, second-to-last = valid, the rest
  train (in the canonical chronological order, ties by source file order). A user with two
  interactions gets a test item and no valid item; a user with one keeps it in train.
* :func:`temporal_ratio` - one global time line cut by ratios (e.g. 0.8/0.1/0.1): everything
  before the first cut is train, and so on; equal timestamps at a cut are divided in file order.
* :func:`split_from_file` - the exact split a peer used, from a CSV of
  ``user_id,valid_item_id,test_item_id``; every other interaction of those users is train.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.data.readers import Column, read_delimited
from ragrec.errors import DataFormatError

__all__ = ["SplitConfig", "leave_one_out", "temporal_ratio", "split_from_file", "apply_split"]


class SplitConfig(BaseModel):
    """Which split to apply. Unknown keys and inconsistent fields are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["leave-one-out", "temporal-ratio", "file", "none"] = Field(
        default="leave-one-out", description="Split method."
    )
    ratios: tuple[float, float, float] = Field(
        default=(0.8, 0.1, 0.1), description="train/valid/test shares for temporal-ratio."
    )
    path: str | None = Field(default=None, description="CSV user_id,valid_item_id,test_item_id for method 'file'.")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.method == "file" and not self.path:
            raise ValueError("method 'file' needs path")
        if self.method != "file" and self.path:
            raise ValueError(f"path is only used by method 'file', not {self.method!r}")
        if any(r < 0 for r in self.ratios) or not np.isclose(sum(self.ratios), 1.0):
            raise ValueError(f"ratios must be >= 0 and sum to 1, got {self.ratios}")
        return self

    @classmethod
    def parse(cls, spec: str) -> SplitConfig:
        """From a CLI string: ``loo``/``leave-one-out``, ``ratio:0.8,0.1,0.1``, ``file:PATH``, ``none``."""
        if spec in ("loo", "leave-one-out"):
            return cls(method="leave-one-out")
        if spec == "none":
            return cls(method="none")
        if spec.startswith("file:"):
            return cls(method="file", path=spec[5:])
        if spec == "ratio" or spec.startswith("ratio:"):
            parts = spec[6:].split(",") if ":" in spec else ["0.8", "0.1", "0.1"]
            try:
                ratios = tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError(f"bad ratios in {spec!r}; expected ratio:TRAIN,VALID,TEST") from None
            if len(ratios) != 3:
                raise ValueError(f"expected 3 ratios in {spec!r}")
            return cls(method="temporal-ratio", ratios=ratios)
        raise ValueError(f"unknown split {spec!r}; valid: loo, ratio:TRAIN,VALID,TEST, file:PATH, none")


def _without_split(data: InteractionData) -> pd.DataFrame:
    frame = data.interactions_frame()
    return frame.drop(columns=[S.SPLIT]) if S.SPLIT in frame else frame


def leave_one_out(data: InteractionData) -> InteractionData:
    frame = _without_split(data)
    users = frame[S.USER_ID].to_numpy()
    # Position from the end within each user's (contiguous, chronological) block.
    from_end = frame.groupby(S.USER_ID, sort=False).cumcount(ascending=False).to_numpy()
    size = frame.groupby(S.USER_ID, sort=False)[S.ITEM_ID].transform("size").to_numpy()
    labels = np.full(len(users), S.TRAIN, dtype=object)
    labels[(from_end == 0) & (size >= 2)] = S.TEST
    labels[(from_end == 1) & (size >= 3)] = S.VALID
    frame[S.SPLIT] = labels
    return data.replace(frame, info_update={"split": {"method": "leave-one-out"}})


def temporal_ratio(data: InteractionData, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> InteractionData:
    frame = _without_split(data)
    # A global time line; equal timestamps keep canonical order (stable sort), so cuts are exact.
    order = np.argsort(frame[S.TIMESTAMP].to_numpy(), kind="stable")
    n = len(frame)
    cut_train = int(round(ratios[0] * n))
    cut_valid = int(round((ratios[0] + ratios[1]) * n))
    labels = np.empty(n, dtype=object)
    labels[order[:cut_train]] = S.TRAIN
    labels[order[cut_train:cut_valid]] = S.VALID
    labels[order[cut_valid:]] = S.TEST
    frame[S.SPLIT] = labels
    return data.replace(frame, info_update={"split": {"method": "temporal-ratio", "ratios": list(ratios)}})


def split_from_file(data: InteractionData, path: str | PathLike[str]) -> InteractionData:
    """Apply the split listed in ``path`` (CSV with header ``user_id,valid_item_id,test_item_id``).

    Every listed item must be among that user's interactions, and each user listed once; users
    not in the file keep all their interactions in train (their count is recorded in ``info``).
    """
    path = Path(path)
    table = read_delimited(
        path,
        [Column(S.USER_ID), Column("valid_item_id", required=False), Column("test_item_id")],
        sep=",",
        quoted=True,
    )
    table["line"] = np.arange(len(table)) + 2
    dup = table[S.USER_ID].duplicated()
    if dup.any():
        row = table[dup].iloc[0]
        raise DataFormatError(path, f"user {row[S.USER_ID]!r} is listed twice", line=int(row["line"]))

    frame = _without_split(data)
    frame[S.SPLIT] = S.TRAIN
    index = {(u, i): k for k, (u, i) in enumerate(zip(frame[S.USER_ID], frame[S.ITEM_ID]))}
    known_users = set(frame[S.USER_ID])
    labels = frame[S.SPLIT].to_numpy().copy()
    for row in table.itertuples(index=False):
        user, line = row.user_id, int(row.line)
        if user not in known_users:
            raise DataFormatError(path, f"user {user!r} is not in dataset {data.name!r}", line=line)
        if row.valid_item_id is not None and row.valid_item_id == row.test_item_id:
            raise DataFormatError(path, f"valid and test item are both {row.test_item_id!r}", line=line)
        for label, item in ((S.VALID, row.valid_item_id), (S.TEST, row.test_item_id)):
            if item is None:
                continue
            k = index.get((user, item))
            if k is None:
                raise DataFormatError(path, f"user {user!r} has no interaction with item {item!r} ({label})", line=line)
            labels[k] = label
    frame[S.SPLIT] = labels
    info = {
        "split": {
            "method": "file",
            "path": str(path),
            "users_listed": len(table),
            "users_not_listed": len(known_users) - len(table),
        }
    }
    return data.replace(frame, info_update=info)


def apply_split(data: InteractionData, config: SplitConfig) -> InteractionData:
    if config.method == "leave-one-out":
        return leave_one_out(data)
    if config.method == "temporal-ratio":
        return temporal_ratio(data, config.ratios)
    if config.method == "file":
        assert config.path is not None  # checked by SplitConfig
        return split_from_file(data, config.path)
    return data
