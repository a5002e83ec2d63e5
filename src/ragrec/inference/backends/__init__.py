"""Model backends: the seam between the LLM stage and the engine that runs the model.

A backend is registered by name in :data:`BACKENDS` (a factory taking the
:class:`~ragrec.inference.models.LoadedModel`) and chosen with ``RecommenderConfig.backend``.
What an implementer provides (:class:`Backend`): ``token_logprobs``, the log-probability of given
tokens at the position right after each prompt, for a batch of prompts, under whatever adapter the
caller holds (the letter ranker and the rating predictor read candidate letters and rating digits
this way: one forward pass per batch, nothing generated). Registered: ``transformers`` (default) and
``llamacpp`` (GGUF on CPUs; :mod:`ragrec.inference.backends.llamacpp`). Text generation
(explanations, chat, catalog-constrained titles) still runs on transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ragrec.registry import Registry

__all__ = ["Backend", "BACKENDS", "make_backend"]


class Backend(Protocol):
    """See module docstring."""

    name: str

    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """For each prompt (chat-formatted text ending where the answer starts), the
        log-probabilities (natural log, normalised over the whole vocabulary) of its ``token_ids``
        as the next token: one array of shape ``(len(token_ids[i]),)`` per prompt, in input order."""


BACKENDS: Registry[Callable[..., Backend]] = Registry("backend")


def make_backend(name: str, loaded, **options) -> Backend:
    """The backend registered as ``name`` over ``loaded`` (its error lists the registered names)."""
    return BACKENDS.get(name)(loaded, **options)


def _transformers(loaded, **options) -> Backend:
    from ragrec.inference.backends.transformers import TransformersBackend

    return TransformersBackend(loaded, **options)


def _llamacpp(loaded, **options) -> Backend:
    from ragrec.inference.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(loaded, **options)


BACKENDS.register("transformers", _transformers)
BACKENDS.register("llamacpp", _llamacpp)
