"""Beyond-accuracy metrics of top-k recommendation lists (definitions in docs/evaluation.md).

From each user's top-``k`` list and the interactions the system was given (``BeyondContext``):

* ``coverage@k``: share of the catalog that appears in at least one user's list;
* ``novelty@k``: mean self-information ``-log2 p(i)`` of the recommended items, ``p(i)`` the share
  of users with ``i`` in their history (add-one smoothed, so an item nobody has is finite);
* ``diversity@k``: intra-list diversity, the mean over pairs of a list of ``1 - Jaccard`` of the
  two items' categories (left out when the catalog has no categories);
* ``arp@k``: average recommendation popularity, the mean ``p(i)`` (unsmoothed) of the items;
* ``tail@k``: share of the recommended slots filled by long-tail items (outside the 20% most
  popular items).

Every per-user value is averaged over users; lists shorter than ``k`` count what they hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BeyondContext", "beyond_accuracy", "HEAD_SHARE"]

HEAD_SHARE = 0.2  # the most popular fifth of the catalog is the "head"


@dataclass(frozen=True)
class BeyondContext:
    """The catalog, item popularity and item categories that the metrics are computed against."""

    item_ids: tuple[str, ...]
    users_with: dict[str, int]  # item -> users with it in their history
    n_users: int
    categories: dict[str, frozenset[str]]

    @classmethod
    def from_histories(
        cls,
        item_ids: Sequence[str],
        histories: Iterable[Sequence[str]],
        categories: dict[str, Sequence[str]] | None = None,
    ) -> BeyondContext:
        counts: Counter[str] = Counter()
        n = 0
        for h in histories:
            counts.update(set(h))
            n += 1
        cats = {i: frozenset(c) for i, c in (categories or {}).items() if c}
        return cls(tuple(item_ids), dict(counts), n, cats)

    def share(self, item: str) -> float:
        return self.users_with.get(item, 0) / self.n_users if self.n_users else 0.0

    def head(self) -> set[str]:
        ranked = sorted(self.item_ids, key=lambda i: (-self.users_with.get(i, 0), i))
        return set(ranked[: max(1, int(round(HEAD_SHARE * len(ranked))))])


def _ild(items: Sequence[str], cats: dict[str, frozenset[str]]) -> float | None:
    sets = [cats.get(i, frozenset()) for i in items]
    if len(sets) < 2:
        return None
    dist = []
    for a in range(len(sets)):
        for b in range(a + 1, len(sets)):
            union = len(sets[a] | sets[b])
            dist.append(1.0 - (len(sets[a] & sets[b]) / union if union else 1.0))
    return float(np.mean(dist))


def beyond_accuracy(lists: Sequence[Sequence[str]], k: int, context: BeyondContext) -> dict[str, float]:
    """Coverage, novelty, diversity, ARP and long-tail share of the top ``k`` of each list."""
    tops = [tuple(lst[:k]) for lst in lists]
    slots = [i for top in tops for i in top]
    out = {f"coverage@{k}": len(set(slots)) / len(context.item_ids) if context.item_ids else 0.0}
    if not slots:
        return out
    smoothed = {i: -np.log2((context.users_with.get(i, 0) + 1) / (context.n_users + 1)) for i in set(slots)}
    head = context.head()
    per_user = [top for top in tops if top]
    out[f"novelty@{k}"] = float(np.mean([np.mean([smoothed[i] for i in top]) for top in per_user]))
    out[f"arp@{k}"] = float(np.mean([np.mean([context.share(i) for i in top]) for top in per_user]))
    out[f"tail@{k}"] = float(np.mean([np.mean([i not in head for i in top]) for top in per_user]))
    if context.categories:
        ild = [v for v in (_ild(top, context.categories) for top in per_user) if v is not None]
        if ild:
            out[f"diversity@{k}"] = float(np.mean(ild))
    return out
