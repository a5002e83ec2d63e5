"""Ranking metrics from the ranks of each user's held-out targets (shared: training loops and eval).

Everything starts from the **rank** of each target (1 = best; ``inf`` = not ranked or not
retrieved, a miss in every metric). ``ranks`` is ``(U,)`` with one target per user (leave-one-out)
or ``(U, T)`` with several, padded with ``nan`` where a user has fewer than ``T`` targets. Ranks
are computed pessimistically: items whose score equals a target's are placed before it. See
docs/evaluation.md for the definitions.

Per user, with ``n`` targets, ``h`` of them in the top ``k``:

* ``recall@k`` = h / n (with one target: the hit rate);
* ``precision@k`` = h / k; ``f1@k`` = their harmonic mean (0 when both are 0);
* ``ndcg@k`` = sum over the hits of 1 / log2(rank + 1), divided by the ideal DCG of
  min(n, k) targets at ranks 1, 2, ...;
* ``mrr@k`` = 1 / (rank of the best-ranked target) when it is in the top ``k``, else 0;
* ``map@k`` = the mean over the top-k hits, in rank order, of (hits so far / rank), divided by
  min(n, k) (with one target equal to ``mrr@k``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "target_ranks",
    "recall_at",
    "precision_at",
    "f1_at",
    "ndcg_at",
    "mrr_at",
    "map_at",
    "metric_table",
    "per_user",
    "check_finite",
    "pad_ranks",
    "METRICS",
    "DEFAULT_KS",
    "rrf_add",
    "RRF_K",
    "RRF_POOL",
]

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
RRF_POOL = 200  # items taken from each ranked source before fusing them (chat, text search)

DEFAULT_KS = (10, 20)


def check_finite(scores, what: str = "scores") -> None:
    """Refuse NaN or infinite scores (a NaN compares false with everything, so it would silently
    rank as a hit or a miss depending on the comparison). Raises ``ValueError``."""
    arr = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(np.asarray(scores, dtype=np.float64))
    bad = ~torch.isfinite(arr)
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} of the {what} are NaN or infinite; a score must be a finite number")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pessimistic 1-based rank of each target among all items.

    ``scores``: (B, N) float, finite (NaN/inf raise ``ValueError``); ``targets``: (B,) item
    indices, or (B, T) for several targets per user with ``-1`` for padding (rank ``nan``);
    ``mask``: (B, N) bool, True where an item must not be ranked (the user's history). A masked
    target gets rank ``inf`` (it cannot be recommended, so it is a miss). Other targets of the
    same user stay in the ranking: each target's rank is its position in the user's list.
    """
    scores = scores.float()
    check_finite(scores)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    single = targets.dim() == 1
    tgt = targets[:, None] if single else targets  # (B, T)
    pad = tgt < 0
    target_score = scores.gather(1, tgt.clamp(min=0))  # (B, T)
    # Pessimistic: every item scoring >= the target (itself included) is at or above it.
    ranks = (scores[:, None, :] >= target_score[:, :, None]).sum(dim=2).double()  # (B, T)
    ranks[torch.isneginf(target_score)] = float("inf")
    ranks[pad] = float("nan")
    return ranks[:, 0] if single else ranks


def pad_ranks(per_user_ranks: Sequence[Sequence[float]]) -> np.ndarray:
    """Ragged per-user rank lists -> ``(U,)`` when every user has one target, else ``(U, T)``
    padded with ``nan``."""
    width = max((len(r) for r in per_user_ranks), default=1)
    if width == 1 and all(len(r) == 1 for r in per_user_ranks):
        return np.array([r[0] for r in per_user_ranks], dtype=np.float64)
    out = np.full((len(per_user_ranks), width), np.nan)
    for row, r in enumerate(per_user_ranks):
        out[row, : len(r)] = r
    return out


def _two_d(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, T) ranks with ``inf`` for padding too, and each user's number of targets (U,)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim == 1:
        ranks = ranks[:, None]
    n = (~np.isnan(ranks)).sum(axis=1)
    if len(n) and (n == 0).any():
        raise ValueError(f"{int((n == 0).sum())} users have no target; leave them out of the evaluation")
    return np.where(np.isnan(ranks), np.inf, ranks), n


def _hits(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, n = _two_d(ranks)
    return r, n, (r <= k).sum(axis=1).astype(np.float64)


def recall_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user share of the targets in the top ``k`` (= the hit rate with one target)."""
    _, n, h = _hits(ranks, k)
    return h / n


def precision_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user share of the top ``k`` that are targets."""
    return _hits(ranks, k)[2] / k


def f1_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user harmonic mean of precision@k and recall@k (0 when both are 0)."""
    p, r = precision_at(ranks, k), recall_at(ranks, k)
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros_like(total), where=total > 0)


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary relevance: DCG of the hits over the ideal DCG of min(n, k) targets."""
    r, n = _two_d(ranks)
    gains = np.where(r <= k, 1.0 / np.log2(np.minimum(r, k) + 1.0), 0.0).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))])
    return gains / ideal_cum[np.minimum(n, k)]


def mrr_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user reciprocal rank of the best-ranked target, 0 beyond ``k``."""
    r, _ = _two_d(ranks)
    best = r.min(axis=1)
    return np.where(best <= k, 1.0 / best, 0.0)


def map_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user average precision at ``k``, normalised by min(n, k)."""
    r, n = _two_d(ranks)
    r = np.sort(r, axis=1)  # hits in rank order
    hit = r <= k
    order = np.cumsum(hit, axis=1)  # hits so far, at each hit
    prec = np.where(hit, order / np.where(hit, r, 1.0), 0.0)
    return prec.sum(axis=1) / np.minimum(n, k)


METRICS = {"recall": recall_at, "ndcg": ndcg_at, "mrr": mrr_at, "precision": precision_at, "f1": f1_at,
           "map": map_at}  # fmt: skip


def per_user(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user values of a metric named like ``ndcg@10`` (any of :data:`METRICS`)."""
    name, _, k = metric.partition("@")
    if name not in METRICS or not k.isdigit():
        raise ValueError(f"unknown metric {metric!r}; use {', '.join(f'{m}@K' for m in METRICS)}")
    return METRICS[name](ranks, int(k))


def metric_table(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean of every metric of :data:`METRICS` over users for each k (keys like ``ndcg@10``)."""
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in METRICS.items():
            out[f"{name}@{k}"] = float(fn(ranks, k).mean()) if len(ranks) else 0.0
    return out


def rrf_add(fused: dict[str, float], ranked: Iterable[str], k: int = RRF_K) -> dict[str, float]:
    """Add one ranked list (best first) to a reciprocal-rank fusion: each id gains ``1 / (k + rank)``
    (rank 1-based). Returns ``fused``, updated in place."""
    for rank, i in enumerate(ranked, 1):
        fused[i] = fused.get(i, 0.0) + 1.0 / (k + rank)
    return fused
