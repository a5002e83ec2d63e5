"""The last step before a list is returned: business rules, diversity and category caps.

* :class:`ListRules` keep or drop candidates by item id, category and year. The Recommender applies
  them to the retrieved candidates *before* any model ranks them (the LLM never sees a forbidden
  item) and retrieves deeper to refill the list, so the user still gets ``k`` items where the
  catalog allows it.
* :func:`mmr` re-orders a ranked list by maximal marginal relevance: each next item maximises
  ``(1 - diversity) * relevance - diversity * (largest similarity to an item already picked)``,
  relevance min-max scaled over the candidates, similarity the cosine of the retriever's item
  embeddings. ``diversity=0`` keeps the ranking as it is.
* :func:`long_tail` trades relevance for less popular items: ``(1 - w) * relevance - w * popularity``,
  both min-max scaled over the candidates, popularity as ``log(1 + interactions)``.
* :func:`calibrated` re-orders a list toward the category mix of the user's history (Steck,
  "Calibrated recommendations", RecSys 2018): each next item maximises
  ``(1 - w) * (sum of the list's relevance) - w * KL(p || q~)``, ``p`` the history's category
  shares, ``q~ = (1 - a) q + a p`` the list's (``a = 0.01`` keeps the divergence finite).
* :func:`capped` keeps at most ``cap`` items per category, in list order.

Relevance is min-max scaled over the candidates in every re-ranker, so a weight means the same
whatever scale the ranker's scores have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragrec.types import Item

__all__ = ["ListRules", "mmr", "capped", "long_tail", "calibrated", "category_mix"]


class ListRules(BaseModel):
    """Which items a list may hold. Empty fields impose nothing; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    include_items: list[str] | None = Field(None, description="Only these item ids may be recommended.")
    exclude_items: list[str] = Field(default_factory=list, description="Item ids never recommended.")
    include_categories: list[str] = Field(
        default_factory=list, description="Only items with at least one of these categories (case-insensitive)."
    )
    exclude_categories: list[str] = Field(
        default_factory=list, description="Items with any of these categories are never recommended."
    )
    year_min: int | None = Field(None, description="Only items from this year on (items without a year are dropped).")
    year_max: int | None = Field(None, description="Only items up to this year (items without a year are dropped).")
    max_per_category: int | None = Field(None, ge=1, description="At most this many items per category in a list.")

    @model_validator(mode="after")
    def _years(self) -> ListRules:
        if self.year_min is not None and self.year_max is not None and self.year_min > self.year_max:
            raise ValueError(f"year_min {self.year_min} is after year_max {self.year_max}")
        return self

    @property
    def filters(self) -> bool:
        """Whether the rules can remove a candidate (``max_per_category`` only re-orders the list)."""
        return bool(
            self.include_items is not None
            or self.exclude_items
            or self.include_categories
            or self.exclude_categories
            or self.year_min is not None
            or self.year_max is not None
        )

    def allows(self, item: Item) -> bool:
        return bool(self.keep([item.item_id], {item.item_id: item}))

    def keep(self, item_ids: Sequence[str], catalog: Mapping[str, Item]) -> list[int]:
        """Positions of ``item_ids`` the rules allow (ids missing from ``catalog`` are dropped)."""
        only = None if self.include_items is None else set(self.include_items)
        never = set(self.exclude_items)
        wanted = {c.lower() for c in self.include_categories}
        banned = {c.lower() for c in self.exclude_categories}
        low, high = self.year_min, self.year_max

        def allowed(item: Item) -> bool:
            cats = {c.lower() for c in item.categories}
            return (
                (only is None or item.item_id in only)
                and item.item_id not in never
                and (not wanted or bool(cats & wanted))
                and not cats & banned
                and (low is None or (item.year is not None and item.year >= low))
                and (high is None or (item.year is not None and item.year <= high))
            )

        return [j for j, i in enumerate(item_ids) if i in catalog and allowed(catalog[i])]


def _scaled(x: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1] (all zeros when constant)."""
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min() if len(x) else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros(len(x))


def long_tail(relevance: np.ndarray, popularity: np.ndarray, weight: float) -> np.ndarray:
    """Scores ``(1 - weight) * relevance - weight * log1p(popularity)``, each min-max scaled over the
    candidates; ``weight = 0`` returns ``relevance`` unchanged."""
    if not 0 <= weight <= 1:
        raise ValueError(f"long-tail weight must be between 0 and 1, got {weight}")
    rel = np.asarray(relevance, dtype=np.float64)
    if weight == 0:
        return rel
    return (1 - weight) * _scaled(rel) - weight * _scaled(np.log1p(np.asarray(popularity, dtype=np.float64)))


def category_mix(categories: Sequence[Sequence[str]]) -> dict[str, float]:
    """Category shares of a list of items, each item's unit weight split over its categories
    (items without a category count for nothing). Empty when no item has a category."""
    mix: Counter[str] = Counter()
    for cats in categories:
        for c in set(cats):
            mix[c] += 1.0 / len(set(cats))
    total = sum(mix.values())
    return {c: v / total for c, v in mix.items()} if total else {}


def calibrated(
    relevance: np.ndarray,
    categories: Sequence[Sequence[str]],
    target: Mapping[str, float],
    k: int,
    weight: float,
    *,
    smoothing: float = 0.01,
) -> list[int]:
    """Indices of ``k`` candidates picked greedily toward the category mix ``target`` (module
    docstring); ties go to the earlier candidate. ``weight = 0`` or an empty ``target`` (a history
    without categories) keeps the ranking as it is."""
    if not 0 <= weight <= 1:
        raise ValueError(f"calibration weight must be between 0 and 1, got {weight}")
    rel = np.asarray(relevance, dtype=np.float64)
    n, k = len(rel), min(k, len(rel))
    if weight == 0 or not target or n == 0:
        return list(np.argsort(-rel, kind="stable")[:k])
    rel = _scaled(rel)
    names = sorted(target)
    col = {c: j for j, c in enumerate(names)}
    p = np.array([target[c] for c in names])
    share = np.zeros((n, len(names)))  # each candidate's unit weight over the target's categories
    for i, cats in enumerate(categories):
        cats = set(cats)
        for c in cats & col.keys():
            share[i, col[c]] = 1.0 / len(cats)
    picked: list[int] = []
    mass, gain = np.zeros(len(names)), 0.0
    free = np.ones(n, dtype=bool)
    for size in range(1, k + 1):
        q = (mass[None, :] + share) / size  # (n, C): the list's mix with each candidate added
        q = (1 - smoothing) * q + smoothing * p[None, :]
        kl = (p[None, :] * np.log(p[None, :] / q)).sum(axis=1)
        value = (1 - weight) * (gain + rel) - weight * kl
        value[~free] = -np.inf
        j = int(np.argmax(value))
        picked.append(j)
        free[j] = False
        mass += share[j]
        gain += rel[j]
    return picked


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Indices of ``k`` candidates picked greedily by maximal marginal relevance (module docstring);
    ties go to the earlier candidate. ``vectors`` (C, D): one row per candidate (zero rows: no
    similarity to anything)."""
    if not 0 <= diversity <= 1:
        raise ValueError(f"diversity must be between 0 and 1, got {diversity}")
    rel = np.asarray(relevance, dtype=np.float64)
    n = len(rel)
    k = min(k, n)
    if diversity == 0 or n == 0:
        return list(np.argsort(-rel, kind="stable")[:k])
    rel = _scaled(rel)
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    sim = v @ v.T
    picked: list[int] = []
    closest = np.full(n, -np.inf)  # largest similarity to a picked item (none yet)
    free = np.ones(n, dtype=bool)
    for _ in range(k):
        value = (1 - diversity) * rel - diversity * np.where(np.isfinite(closest), closest, 0.0)
        value[~free] = -np.inf
        j = int(np.argmax(value))  # first maximum: the earlier candidate on ties
        picked.append(j)
        free[j] = False
        closest = np.maximum(closest, sim[j])
    return picked


def capped(order: Sequence[int], categories: Sequence[Sequence[str]], cap: int, k: int) -> list[int]:
    """The first ``k`` of ``order`` taking at most ``cap`` items of any one category (an item
    counts against each of its categories; items without one are never capped)."""
    seen: Counter[str] = Counter()
    out = []
    for j in order:
        cats = set(categories[j])
        if any(seen[c] >= cap for c in cats):
            continue
        seen.update(cats)
        out.append(j)
        if len(out) == k:
            break
    return out
