"""Durable service state: the feedback database and the versions a running service serves.

A *deployment* is a saved recommender folder (``PATH``, as ``save_pretrained`` writes it) plus a
state folder beside it (default ``PATH-state/``)::

    PATH-state/feedback.sqlite3        every acknowledged interaction and new item (SQLite, WAL)
    PATH-state/versions/v000002/       recommenders written by ``ragrec retrain`` (one folder each)
    PATH-state/current.json            which version serves, and the feedback it already holds

Feedback is committed (WAL, ``synchronous=FULL``) before the service acknowledges it, so a
process killed right after the acknowledgement keeps it; a restart replays every row newer than
what the serving version was trained on. ``PATH`` itself is never written by the service.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from ragrec.errors import RagrecError
from ragrec.io import atomic_write_text, read_json_meta
from ragrec.types import Item

__all__ = ["FeedbackStore", "Interaction", "StoredItem", "Deployment", "Version"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scenario TEXT NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    rating REAL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scenario TEXT NOT NULL,
    item_id TEXT NOT NULL,
    title TEXT,
    year INTEGER,
    categories TEXT NOT NULL,
    brand TEXT,
    description TEXT,
    received_at REAL NOT NULL,
    UNIQUE (scenario, item_id)
);
"""


@dataclass(frozen=True)
class Interaction:
    """One stored interaction; ``id`` orders them (the order they were acknowledged in)."""

    id: int
    scenario: str
    user_id: str
    item_id: str
    timestamp: int
    rating: float | None


@dataclass(frozen=True)
class StoredItem:
    """One stored new catalog item of a scenario."""

    id: int
    scenario: str
    item: Item


class FeedbackStore:
    """Interactions and new items in one SQLite file in WAL mode; safe to share between threads
    (one connection, serialised by a lock; a write returns only after its transaction commits)."""

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")  # the commit reaches the disk before we acknowledge
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RagrecError(f"{self.path}: not a ragrec feedback database ({exc})") from None
        if mode.lower() != "wal":
            raise RagrecError(f"{self.path}: SQLite refused WAL mode ({mode}); put the state on a local disk")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (to disk: synchronous=FULL) before the block's caller
        goes on, rolled back if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add_interactions(self, rows: Sequence[tuple[str, str, str, int, float | None]]) -> list[int]:
        """Store ``(scenario, user_id, item_id, timestamp, rating)`` rows in one transaction; their ids."""
        now = time.time()
        with self._transaction() as db:
            return [
                db.execute(
                    "INSERT INTO interactions (scenario, user_id, item_id, timestamp, rating, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (*row, now),
                ).lastrowid
                for row in rows
            ]

    def add_items(self, scenario: str, items: Sequence[Item]) -> list[int]:
        """Store new items of ``scenario`` in one transaction (an id stored before is refused)."""
        now = time.time()
        try:
            with self._transaction() as db:
                return [
                    db.execute(
                        "INSERT INTO items (scenario, item_id, title, year, categories, brand, description, "
                        "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (scenario, it.item_id, it.title, it.year, json.dumps(list(it.categories)), it.brand,
                         it.description, now),
                    ).lastrowid
                    for it in items
                ]  # fmt: skip
        except sqlite3.IntegrityError:
            raise RagrecError(f"an item of this request was added to scenario {scenario!r} before") from None

    def interactions(self, after: int = 0) -> Iterator[Interaction]:
        """Stored interactions with ``id > after``, in the order they were stored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, scenario, user_id, item_id, timestamp, rating FROM interactions WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()
        return (Interaction(*r) for r in rows)

    def items(self, after: int = 0) -> Iterator[StoredItem]:
        """Stored new items with ``id > after``, in the order they were stored."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, scenario, item_id, title, year, categories, brand, description FROM items "
                "WHERE id > ? ORDER BY id",
                (after,),
            ).fetchall()
        return (StoredItem(r[0], r[1], Item(r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7])) for r in rows)

    def last_ids(self) -> tuple[int, int]:
        """The newest interaction id and item id (0 when none)."""
        with self._lock:
            a = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM interactions").fetchone()[0]
            b = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0]
        return int(a), int(b)


@dataclass(frozen=True)
class Version:
    """A servable recommender folder and the feedback already inside it (ids up to these)."""

    name: str
    path: Path
    interactions_through: int = 0
    items_through: int = 0


class Deployment:
    """A recommender folder, its state folder, and which version serves (see module docstring)."""

    def __init__(self, path: str | PathLike[str], state: str | PathLike[str] | None = None) -> None:
        self.path = Path(path)
        if not (self.path / "recommender.json").is_file():
            raise RagrecError(f"{self.path}: not a saved recommender (no recommender.json)")
        self.state = Path(state) if state is not None else self.path.with_name(self.path.name + "-state")
        self.state.mkdir(parents=True, exist_ok=True)

    @property
    def feedback_path(self) -> Path:
        return self.state / "feedback.sqlite3"

    def open_store(self) -> FeedbackStore:
        return FeedbackStore(self.feedback_path)

    def current(self) -> Version:
        """The serving version: the last ``ragrec retrain`` output, else the original folder."""
        pointer = self.state / "current.json"
        if not pointer.is_file():
            return Version("original", self.path)
        meta = read_json_meta(pointer, "serving version")
        folder = self.state / "versions" / meta["version"]
        if not (folder / "recommender.json").is_file():
            raise RagrecError(f"{pointer} names version {meta['version']!r}, which is missing in {folder.parent}")
        return Version(meta["version"], folder, int(meta["interactions_through"]), int(meta["items_through"]))

    def next_version_path(self) -> tuple[str, Path]:
        """A new version name and folder (not created)."""
        versions = self.state / "versions"
        taken = [int(p.name[1:]) for p in versions.glob("v*") if p.name[1:].isdigit()] if versions.is_dir() else []
        name = f"v{max(taken, default=1) + 1:06d}"
        return name, versions / name

    def publish(self, version: Version) -> None:
        """Make ``version`` (already written) the serving one, atomically; a running service
        switches to it at its next check."""
        meta = {"version": version.name, "interactions_through": version.interactions_through,
                "items_through": version.items_through, "published_at": time.time()}  # fmt: skip
        atomic_write_text(self.state / "current.json", json.dumps(meta, indent=2) + "\n")
