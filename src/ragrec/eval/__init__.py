"""Metrics, the evaluation protocol of docs/evaluation.md, and readable reports."""

from ragrec.eval.metrics import BootstrapResult, coverage, metric_table, paired_bootstrap, per_user, target_ranks
from ragrec.eval.protocol import EvalResult, evaluate_encoder, evaluate_retriever, external_ranks
from ragrec.eval.rating import RatingResult, SurpriseRater, compare_ratings, held_out_ratings

__all__ = [
    "BootstrapResult",
    "EvalResult",
    "RatingResult",
    "SurpriseRater",
    "compare_ratings",
    "coverage",
    "evaluate_encoder",
    "evaluate_retriever",
    "external_ranks",
    "held_out_ratings",
    "metric_table",
    "paired_bootstrap",
    "per_user",
    "target_ranks",
]
