"""Metrics for evaluation reports: the rank-based metrics of :mod:`ragrec.ranking` and the
paired bootstrap for differences between two systems."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ragrec.ranking import DEFAULT_KS, metric_table, mrr_at, ndcg_at, per_user, recall_at, target_ranks

__all__ = [
    "BootstrapResult",
    "DEFAULT_KS",
    "metric_table",
    "mrr_at",
    "ndcg_at",
    "paired_bootstrap",
    "per_user",
    "recall_at",
    "target_ranks",
    "coverage",
]


def coverage(recommended: list[list[str]] | np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one user's recommendation list."""
    seen = {item for row in recommended for item in row}
    return len(seen) / n_items if n_items else 0.0


@dataclass(frozen=True)
class BootstrapResult:
    """Mean difference ``a - b`` of a per-user metric and its percentile confidence interval."""

    metric: str
    difference: float
    low: float
    high: float
    confidence: float
    resamples: int

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    metric: str = "",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Paired bootstrap over users of ``mean(a) - mean(b)``; ``a`` and ``b`` are per-user values
    for the same users in the same order."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"need two equal-length, non-empty 1-d arrays, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return BootstrapResult(metric, float(diff.mean()), float(low), float(high), confidence, resamples)
