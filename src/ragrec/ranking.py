"""Ranking metrics for one held-out target per user (shared: training loops and eval use them).

Everything starts from the **rank** of each user's target (1 = best; ``inf`` = not retrieved,
which counts as a miss in every metric). Ranks are computed pessimistically: items whose score
equals the target's are placed before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "target_ranks",
    "recall_at",
    "ndcg_at",
    "mrr_at",
    "metric_table",
    "per_user",
    "DEFAULT_KS",
]

DEFAULT_KS = (10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pessimistic 1-based rank of each target among all items.

    ``scores``: (B, N) float; ``targets``: (B,) item indices; ``mask``: (B, N) bool, True where an
    item must not be ranked (the user's history). Masked items get ``-inf``; a masked target gets
    rank ``inf`` (it cannot be recommended, so it is a miss).
    """
    scores = scores.float()
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    rows = torch.arange(scores.shape[0], device=scores.device)
    target_score = scores[rows, targets]  # (B,)
    # Pessimistic: every item scoring >= the target (itself included) is at or above it.
    ranks = (scores >= target_score[:, None]).sum(dim=1).double()
    ranks[torch.isneginf(target_score)] = float("inf")
    return ranks


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user hit (= recall with one target) at ``k``."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with one relevant item: ``1 / log2(rank + 1)`` if rank <= k, else 0."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = np.zeros_like(ranks)
    hit = ranks <= k
    out[hit] = 1.0 / np.log2(ranks[hit] + 1.0)
    return out


def mrr_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user reciprocal rank, 0 beyond ``k``."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = np.zeros_like(ranks)
    hit = ranks <= k
    out[hit] = 1.0 / ranks[hit]
    return out


_METRICS = {"recall": recall_at, "ndcg": ndcg_at, "mrr": mrr_at}


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user values of a metric named like ``ndcg@10``."""
    name, _, k = metric.partition("@")
    if name not in _METRICS or not k.isdigit():
        raise ValueError(f"unknown metric {metric!r}; use recall@K, ndcg@K or mrr@K")
    return _METRICS[name](ranks, int(k))


def metric_table(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean ``recall@k``, ``ndcg@k``, ``mrr@k`` over users for each k (keys like ``ndcg@10``)."""
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in _METRICS.items():
            out[f"{name}@{k}"] = float(fn(ranks, k).mean()) if len(ranks) else 0.0
    return out
