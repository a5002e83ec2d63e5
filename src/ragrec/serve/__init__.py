"""``ragrec serve``: the HTTP service over a :class:`~ragrec.inference.Recommender`.

:func:`create_app` builds the FastAPI app; :class:`ServeSettings` its limits; :class:`Deployment`
and :class:`FeedbackStore` the durable state (feedback in SQLite, versions written by
``ragrec retrain``, see :mod:`ragrec.serve.live`).
"""

from ragrec.serve.app import create_app, serve_in_background
from ragrec.serve.live import replay, retrain
from ragrec.serve.settings import ServeSettings
from ragrec.serve.store import Deployment, FeedbackStore, Version

__all__ = [
    "create_app",
    "serve_in_background",
    "ServeSettings",
    "Deployment",
    "FeedbackStore",
    "Version",
    "replay",
    "retrain",
]
