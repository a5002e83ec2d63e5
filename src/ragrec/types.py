"""Typed records that every part of ragrec passes around."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Candidate", "Evidence", "Item", "RankedItem", "RetrievalResult", "UserHistory"]


@dataclass(frozen=True)
class Item:
    """One catalog item. Only ``item_id`` is required; text fields are ``None`` when unknown."""

    item_id: str
    title: str | None = None
    year: int | None = None
    categories: tuple[str, ...] = ()
    brand: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class UserHistory:
    """A user's interactions in chronological order (oldest first).

    ``item_ids``, ``timestamps`` and ``ratings`` are parallel tuples of equal length; ``ratings``
    holds ``None`` where the source has no rating.
    """

    user_id: str
    item_ids: tuple[str, ...]
    timestamps: tuple[int, ...] = field(default=())
    ratings: tuple[float | None, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        if self.timestamps and len(self.timestamps) != n:
            raise ValueError(f"timestamps has {len(self.timestamps)} entries, item_ids {n}")
        if self.ratings and len(self.ratings) != n:
            raise ValueError(f"ratings has {len(self.ratings)} entries, item_ids {n}")

    def __len__(self) -> int:
        return len(self.item_ids)

    def last(self, n: int) -> UserHistory:
        """The most recent ``n`` interactions (all of them when ``n`` >= the length)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        start = max(len(self.item_ids) - n, 0)
        return UserHistory(
            self.user_id,
            self.item_ids[start:],
            self.timestamps[start:],
            self.ratings[start:],
        )


@dataclass(frozen=True)
class Candidate:
    """One retrieved item: its id, score (higher is better), 1-based rank and the producing source."""

    item_id: str
    score: float
    rank: int
    source: str


@dataclass(frozen=True)
class RetrievalResult:
    """Candidates for one request, best first.

    ``fallback`` is ``None`` when the requested retriever answered, else why another source did
    (e.g. ``"unknown user 'u9': popularity"``), so a fallback is never silent.
    """

    user_id: str | None
    candidates: tuple[Candidate, ...]
    fallback: str | None = None

    @property
    def item_ids(self) -> list[str]:
        return [c.item_id for c in self.candidates]


@dataclass(frozen=True)
class Evidence:
    """A history item that moved a recommended item's first-stage score.

    ``weight`` is its contribution to that score (``method`` ``"exact"``: EASE's score is a sum of
    per-history-item terms, so the weights add up to the score; ``"leave-one-out"``: the score
    minus the score without this history item). ``share`` is ``weight`` over the sum of the
    item's positive weights (0-1). ``shared`` lists the categories it has in common with the
    recommended item; ``title`` and ``year`` are the history item's, for display."""

    item_id: str
    weight: float
    share: float
    method: str
    title: str | None = None
    year: int | None = None
    shared: tuple[str, ...] = ()


@dataclass(frozen=True)
class RankedItem:
    """One item of a ranked list: 1-based ``rank``, the ranker's ``score`` (higher is better),
    the candidate ``label`` it had in the prompt, the retriever's score, if any, and the history
    items that support it most (``evidence``, strongest first; empty for a fallback list)."""

    item_id: str
    score: float
    rank: int
    label: str | None = None
    retriever_score: float | None = None
    evidence: tuple[Evidence, ...] = ()
