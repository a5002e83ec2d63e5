"""Metrics, evaluation protocol and reports (see issue #3)."""
