"""``InteractionData``: interactions, items and users in ragrec's schema, backed by ``datasets``.

Every loader ends in :meth:`InteractionData.from_frames`, which checks and normalises its output,
so the rest of ragrec sees one shape whatever the source. Order is part of that shape:
interactions are sorted by user, then chronologically; **interactions of one user with equal
timestamps keep the order they had in the source file** (a stable sort). That tie-break is what
decides the held-out item for users whose last interactions share a timestamp, so it is fixed here
and nowhere else.

Saved form: one folder with ``interactions.parquet``, ``items.parquet``, optional ``users.parquet``
and ``manifest.json`` (schema version, source, counts, processing steps, SHA-256 of each file).
It is written atomically and verified on load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.table import InMemoryTable

from ragrec import schema as S
from ragrec.errors import CacheError, RagrecError
from ragrec.io import atomic_directory, atomic_write_text, sha256_file
from ragrec.types import Item, UserHistory

__all__ = ["InteractionData", "DatasetStats", "MANIFEST_NAME", "id_sort_key"]

MANIFEST_NAME = "manifest.json"
_TABLE_FILES = ("interactions", "items", "users")


def id_sort_key(ids: pd.Series) -> np.ndarray:
    """Codes that order ids naturally: numerically when every id is an integer, else as text."""
    values = ids.astype(str)
    uniq = pd.unique(values)
    if len(uniq) and all(v.isdigit() for v in uniq):
        order = sorted(uniq, key=int)
    else:
        order = sorted(uniq)
    return pd.Categorical(values, categories=order, ordered=True).codes.astype(np.int64)


def _to_dataset(table: pa.Table) -> datasets.Dataset:
    return datasets.Dataset(InMemoryTable(table))


def _table(ds: datasets.Dataset) -> pa.Table:
    return ds.data.table


@dataclass(frozen=True)
class DatasetStats:
    """Summary counts of an :class:`InteractionData` (what ``ragrec data stats`` prints)."""

    name: str
    users: int
    items: int
    items_with_interactions: int
    interactions: int
    density: float
    interactions_per_user_min: int
    interactions_per_user_median: float
    interactions_per_user_max: int
    has_ratings: bool
    has_reviews: bool
    items_with_title: int
    first_timestamp: int | None
    last_timestamp: int | None
    scenarios: tuple[str, ...]
    split: dict[str, int] | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scenarios"] = list(self.scenarios)
        return d


class InteractionData:
    """A prepared dataset: ``interactions``, ``items`` and optional ``users`` tables.

    The tables are Hugging Face ``datasets.Dataset`` objects (Arrow, in memory) with the columns of
    :mod:`ragrec.schema`. ``info`` records where the data came from and what was done to it.
    Build one with :meth:`from_frames` (loaders do) or :meth:`load`.
    """

    def __init__(
        self,
        name: str,
        interactions: datasets.Dataset,
        items: datasets.Dataset,
        users: datasets.Dataset | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.interactions = interactions
        self.items = items
        self.users = users
        self.info: dict[str, Any] = dict(info or {})

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frames(
        cls,
        name: str,
        interactions: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
        *,
        scenario: str = S.DEFAULT_SCENARIO,
        info: Mapping[str, Any] | None = None,
    ) -> InteractionData:
        """Normalise loader output into the schema and the canonical order.

        ``interactions`` needs ``user_id``, ``item_id`` and ``timestamp``; ``rating``, ``review``,
        ``scenario`` and ``split`` are optional. ``items`` needs unique ``item_id`` values (loaders
        report duplicates with their line numbers before this point). Items that interactions
        name but ``items`` lacks get a row without text (counted in ``info``); items without
        interactions stay in the catalog (new items can be recommended by their text).
        """
        info = dict(info or {})
        inter = interactions.copy()
        for col in (S.USER_ID, S.ITEM_ID, S.TIMESTAMP):
            if col not in inter.columns:
                raise RagrecError(f"{name}: interactions lack the column {col!r}")
        if inter.empty:
            raise RagrecError(f"{name}: no interactions")
        inter[S.USER_ID] = inter[S.USER_ID].astype(str)
        inter[S.ITEM_ID] = inter[S.ITEM_ID].astype(str)
        inter[S.TIMESTAMP] = inter[S.TIMESTAMP].astype("int64")
        inter[S.RATING] = (
            inter[S.RATING].astype("float32")
            if S.RATING in inter
            else pd.Series(np.nan, index=inter.index, dtype="float32")
        )
        if S.REVIEW not in inter:
            inter[S.REVIEW] = None
        if S.SCENARIO not in inter:
            inter[S.SCENARIO] = scenario
        columns = list(S.INTERACTION_COLUMNS) + ([S.SPLIT] if S.SPLIT in inter else [])
        inter = inter[columns]
        inter = cls._chronological(inter)

        if items is None:
            items = pd.DataFrame({S.ITEM_ID: pd.unique(inter[S.ITEM_ID])})
        items = items.copy()
        items[S.ITEM_ID] = items[S.ITEM_ID].astype(str)
        duplicated = items[S.ITEM_ID].duplicated()
        if duplicated.any():
            raise RagrecError(
                f"{name}: item id {items[S.ITEM_ID][duplicated].iloc[0]!r} appears twice in the items table"
            )
        missing = pd.Index(pd.unique(inter[S.ITEM_ID])).difference(pd.Index(items[S.ITEM_ID]))
        if len(missing):
            items = pd.concat([items, pd.DataFrame({S.ITEM_ID: list(missing)})], ignore_index=True)
        info.setdefault("items_without_metadata", int(len(missing)))
        for col in S.ITEM_COLUMNS:
            if col not in items:
                items[col] = None
        items[S.CATEGORIES] = items[S.CATEGORIES].map(
            lambda v: [str(c) for c in v] if isinstance(v, (list, tuple, np.ndarray)) else None
        )
        items[S.YEAR] = items[S.YEAR].astype("Int32")
        items = items[list(S.ITEM_COLUMNS)]
        items = items.iloc[np.argsort(id_sort_key(items[S.ITEM_ID]), kind="stable")]

        item_table = pa.Table.from_pandas(items, schema=S.ITEM_SCHEMA, preserve_index=False)
        schema = S.INTERACTION_SCHEMA
        if S.SPLIT in inter:
            schema = schema.append(S.SPLIT_FIELD)
        inter_table = pa.Table.from_pandas(inter, schema=schema, preserve_index=False)
        user_ds = None
        if users is not None:
            users = users.copy()
            users[S.USER_ID] = users[S.USER_ID].astype(str)
            users = users.astype({c: "string" for c in users.columns}).astype(object)
            users = users.where(users.notna(), None)
            user_ds = _to_dataset(pa.Table.from_pandas(users, preserve_index=False))
        return cls(name, _to_dataset(inter_table), _to_dataset(item_table), user_ds, info)

    @staticmethod
    def _chronological(inter: pd.DataFrame) -> pd.DataFrame:
        """Sort by user (natural id order), then timestamp; ties keep their current order."""
        user_key = id_sort_key(inter[S.USER_ID])
        # np.lexsort is stable: rows with equal (user, timestamp) keep their input order.
        order = np.lexsort((inter[S.TIMESTAMP].to_numpy(), user_key))
        return inter.iloc[order].reset_index(drop=True)

    def replace(
        self,
        interactions: pd.DataFrame | None = None,
        *,
        items: pd.DataFrame | None = None,
        info_update: Mapping[str, Any] | None = None,
    ) -> InteractionData:
        """A new ``InteractionData`` with some tables replaced; ``info`` is carried over and updated."""
        info = {**self.info, **(info_update or {})}
        inter = self.interactions_frame() if interactions is None else interactions
        item_frame = self.items_frame() if items is None else items
        users = self.users.to_pandas() if self.users is not None else None
        return InteractionData.from_frames(self.name, inter, item_frame, users, info=info)

    # ------------------------------------------------------------------ views
    def interactions_frame(self) -> pd.DataFrame:
        return self.interactions.to_pandas()

    def items_frame(self) -> pd.DataFrame:
        return self.items.to_pandas()

    @property
    def has_split(self) -> bool:
        return S.SPLIT in self.interactions.column_names

    @cached_property
    def _item_index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(_table(self.items).column(S.ITEM_ID).to_pylist())}

    def item_ids(self) -> list[str]:
        """Every catalog item id, in natural id order."""
        return _table(self.items).column(S.ITEM_ID).to_pylist()

    def user_ids(self) -> list[str]:
        """Every user with at least one interaction, in natural id order."""
        return list(pd.unique(_table(self.interactions).column(S.USER_ID).to_numpy(zero_copy_only=False)))

    def item(self, item_id: str) -> Item:
        """The catalog entry of ``item_id``; raises ``KeyError`` naming the id if it is unknown."""
        try:
            row = self.items[self._item_index[item_id]]
        except KeyError:
            raise KeyError(f"unknown item {item_id!r} in dataset {self.name!r}") from None
        return Item(
            item_id=row[S.ITEM_ID],
            title=row[S.TITLE],
            year=row[S.YEAR],
            categories=tuple(row[S.CATEGORIES] or ()),
            brand=row[S.BRAND],
            description=row[S.DESCRIPTION],
        )

    def histories(self, splits: Iterable[str] | None = None) -> dict[str, UserHistory]:
        """Per-user chronological histories.

        ``splits`` restricts them to those split labels (e.g. ``("train",)`` for training, or
        ``("train", "valid")`` for the history seen at test time); ``None`` takes everything.
        Users with no interaction in the chosen splits are absent.
        """
        frame = self.interactions_frame()
        if splits is not None:
            if not self.has_split:
                raise RagrecError(f"dataset {self.name!r} has no split; prepare it with one")
            splits = tuple(splits)
            unknown = set(splits) - set(S.SPLIT_NAMES)
            if unknown:
                raise ValueError(f"unknown split names {sorted(unknown)}; valid: {list(S.SPLIT_NAMES)}")
            frame = frame[frame[S.SPLIT].isin(splits)]
        out: dict[str, UserHistory] = {}
        users = frame[S.USER_ID].to_numpy()
        if not len(users):
            return out
        # Rows are grouped by user already (canonical order); cut at user changes.
        cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
        items = frame[S.ITEM_ID].to_numpy()
        times = frame[S.TIMESTAMP].to_numpy()
        ratings = frame[S.RATING].to_numpy()
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(users)]):
            r = ratings[start:stop]
            out[users[start]] = UserHistory(
                user_id=str(users[start]),
                item_ids=tuple(items[start:stop].tolist()),
                timestamps=tuple(int(t) for t in times[start:stop]),
                ratings=tuple(None if math.isnan(x) else float(x) for x in r.tolist()),
            )
        return out

    def target_sets(self, split: str) -> dict[str, tuple[str, ...]]:
        """``{user_id: (item_id, ...)}``: every held-out item of each user in ``split``
        (``valid``/``test``), oldest first. One per user under leave-one-out; a ``ratio:`` split
        can hold several, and each is a target (docs/evaluation.md)."""
        if split not in (S.VALID, S.TEST):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        if not self.has_split:
            raise RagrecError(f"dataset {self.name!r} has no split; prepare it with one")
        frame = self.interactions_frame()
        frame = frame[frame[S.SPLIT] == split]
        out: dict[str, list[str]] = {}
        for user, item in zip(frame[S.USER_ID], frame[S.ITEM_ID]):
            out.setdefault(user, []).append(item)
        return {u: tuple(items) for u, items in out.items()}

    def targets(self, split: str) -> dict[str, str]:
        """``{user_id: item_id}`` of the held-out item of each user in ``split`` (``valid``/``test``).

        For splits with one held-out item per user (leave-one-out, a peer's split file). A split
        that holds several for some user raises :class:`RagrecError` instead of keeping one and
        dropping the rest: use :meth:`target_sets` (the retrieval evaluation does)."""
        sets = self.target_sets(split)
        several = [u for u, items in sets.items() if len(items) > 1]
        if several:
            raise RagrecError(
                f"split {split!r} of dataset {self.name!r} holds several items for {len(several)} users (e.g. "
                f"{several[0]!r}: {len(sets[several[0]])}); this step needs one target per user (a leave-one-out "
                f"split); the retrieval evaluation takes every target (docs/evaluation.md)"
            )
        return {u: items[0] for u, items in sets.items()}

    def stats(self) -> DatasetStats:
        inter = self.interactions_frame()
        per_user = inter.groupby(S.USER_ID, sort=False).size()
        n_users, n_items = int(per_user.size), len(self.items)
        titles = _table(self.items).column(S.TITLE)
        split = None
        if self.has_split:
            counts = inter[S.SPLIT].value_counts()
            split = {name: int(counts.get(name, 0)) for name in S.SPLIT_NAMES}
        return DatasetStats(
            name=self.name,
            users=n_users,
            items=n_items,
            items_with_interactions=int(inter[S.ITEM_ID].nunique()),
            interactions=len(inter),
            density=len(inter) / (n_users * n_items) if n_users and n_items else 0.0,
            interactions_per_user_min=int(per_user.min()),
            interactions_per_user_median=float(per_user.median()),
            interactions_per_user_max=int(per_user.max()),
            has_ratings=bool(inter[S.RATING].notna().any()),
            has_reviews=bool(inter[S.REVIEW].notna().any()),
            items_with_title=len(titles) - titles.null_count,
            first_timestamp=int(inter[S.TIMESTAMP].min()),
            last_timestamp=int(inter[S.TIMESTAMP].max()),
            scenarios=tuple(sorted(inter[S.SCENARIO].unique())),
            split=split,
        )

    def __repr__(self) -> str:
        return (
            f"InteractionData(name={self.name!r}, interactions={len(self.interactions)}, "
            f"items={len(self.items)}, users={len(self.users) if self.users is not None else None}, "
            f"split={self.has_split})"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | PathLike[str]) -> Path:
        """Write the dataset to folder ``path`` atomically (replacing what was there as a whole)."""
        path = Path(path)
        tables = {"interactions": self.interactions, "items": self.items, "users": self.users}
        with atomic_directory(path) as staging:
            files = {}
            for key, ds in tables.items():
                if ds is None:
                    continue
                target = staging / f"{key}.parquet"
                pq.write_table(_table(ds), target)
                files[target.name] = sha256_file(target)
            stats = self.stats()
            manifest = {
                "schema_version": S.SCHEMA_VERSION,
                "name": self.name,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "counts": {
                    "users": stats.users,
                    "items": stats.items,
                    "interactions": stats.interactions,
                    "split": stats.split,
                },
                "info": self.info,
                "files": files,
            }
            atomic_write_text(staging / MANIFEST_NAME, json.dumps(manifest, indent=2, default=str) + "\n")
        return path

    @classmethod
    def load(cls, path: str | PathLike[str], *, verify: bool = True) -> InteractionData:
        """Read a folder written by :meth:`save`; checks schema version and (``verify``) checksums."""
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise CacheError(f"{path}: not a prepared ragrec dataset (no {MANIFEST_NAME})")
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CacheError(f"{manifest_path}: corrupt manifest ({e})") from None
        version = manifest.get("schema_version")
        if version != S.SCHEMA_VERSION:
            raise CacheError(
                f"{path}: schema version {version!r}, this ragrec reads {S.SCHEMA_VERSION}; prepare the dataset again"
            )
        files = manifest.get("files") or {}
        tables: dict[str, datasets.Dataset | None] = {}
        for key in _TABLE_FILES:
            fname = f"{key}.parquet"
            if fname not in files:
                tables[key] = None
                continue
            fpath = path / fname
            if not fpath.is_file():
                raise CacheError(f"{fpath}: missing; prepare the dataset again")
            if verify and sha256_file(fpath) != files[fname]:
                raise CacheError(f"{fpath}: checksum mismatch (file changed or corrupt); prepare the dataset again")
            try:
                tables[key] = _to_dataset(pq.read_table(fpath))
            except (pa.ArrowInvalid, OSError) as e:
                raise CacheError(f"{fpath}: unreadable Parquet ({e})") from None
        if tables["interactions"] is None or tables["items"] is None:
            raise CacheError(f"{path}: manifest lists no interactions or items table")
        return cls(
            manifest.get("name", path.name),
            tables["interactions"],
            tables["items"],
            tables["users"],
            manifest.get("info") or {},
        )
