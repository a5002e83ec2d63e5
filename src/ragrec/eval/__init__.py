"""Metrics, the evaluation protocol of docs/evaluation.md, and readable reports."""

from ragrec.eval.metrics import BootstrapResult, coverage, metric_table, paired_bootstrap, per_user, target_ranks
from ragrec.eval.protocol import EvalResult, evaluate_encoder, evaluate_retriever

__all__ = [
    "BootstrapResult",
    "EvalResult",
    "coverage",
    "evaluate_encoder",
    "evaluate_retriever",
    "metric_table",
    "paired_bootstrap",
    "per_user",
    "target_ranks",
]
