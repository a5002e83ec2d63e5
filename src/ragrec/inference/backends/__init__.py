"""Model backends: the seam between the LLM stage and the engine that runs the model.

A backend is registered by name in :data:`BACKENDS` (a factory taking the
:class:`~ragrec.inference.models.LoadedModel`) and chosen with ``RecommenderConfig.backend``.
What an implementer provides (:class:`Backend`), always under whatever adapter the caller holds:

* ``token_logprobs``: the log-probability of given tokens at the position right after each prompt,
  for a batch of prompts (the letter ranker and the rating predictor read candidate letters and
  rating digits this way: one forward pass per batch, nothing generated);
* ``generate``: greedy continuations of a batch of prompts under a :class:`Decoding` (repetition
  controls on the answer, a stop rule on the text so far, and an optional per-step token
  constraint: the catalog trie of constrained title generation);
* ``stream``: one prompt's continuation as text pieces, as it is written (streamed explanations).

Prompts are chat-formatted text ending where the answer starts (``ragrec.prompts.chat_text``),
tokenized by the backend's ``tokenizer`` (the Hugging Face tokenizer ragrec renders with).
Registered: ``transformers`` (default), ``llamacpp`` (GGUF on CPUs;
:mod:`ragrec.inference.backends.llamacpp`) and ``vllm`` (GPUs; :mod:`ragrec.inference.backends.vllm`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ragrec.registry import Registry

__all__ = ["Backend", "BACKENDS", "Decoding", "make_backend"]


@dataclass(frozen=True)
class Decoding:
    """How a backend continues a prompt (greedy, one token at a time).

    ``repetition_penalty`` and ``no_repeat_ngram_size`` look at the answer only (a prompt's titles
    may be written); ``stop`` sees the answer text so far and ends it when true (checked after each
    token); ``allowed`` maps (row, answer token ids so far) to the token ids allowed next;
    ``eos_token_id`` ends an answer (default: the tokenizer's)."""

    max_new_tokens: int
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    stop: Callable[[str], bool] | None = None
    allowed: Callable[[int, list[int]], Sequence[int]] | None = None
    eos_token_id: int | None = None

    @classmethod
    def of(cls, output: Any, stop: Callable[[str], bool] | None = None) -> Decoding:
        """The decoding of a template's output contract (``max_new_tokens``, the repetition controls)."""
        return cls(output.max_new_tokens, float(output.repetition_penalty), int(output.no_repeat_ngram_size), stop)


def banned_ngram_tokens(answer: Sequence[int], n: int) -> set[int]:
    """Tokens that would repeat an ``n``-gram already in ``answer`` (no-repeat n-gram decoding)."""
    if n <= 0 or len(answer) < n:
        return set()
    prefix = tuple(answer[len(answer) - n + 1 :]) if n > 1 else ()
    return {answer[j + n - 1] for j in range(len(answer) - n + 1) if tuple(answer[j : j + n - 1]) == prefix}


class Backend(Protocol):
    """See module docstring."""

    name: str
    tokenizer: Any
    runs_adapters: bool  # whether a scenario's LoRA adapter can be served on it (see bind)

    def bind(self, name: str | None, adapter: Any) -> Backend:
        """The backend to use for scenario ``name`` with LoRA ``adapter`` (a folder; ``None``: the
        base model). Transformers returns itself (the recommender's ModelHost switches adapters on
        the shared model); vLLM returns a view whose requests carry the adapter."""

    def token_logprobs(self, prompts: Sequence[str], token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """For each prompt (chat-formatted text ending where the answer starts), the
        log-probabilities (natural log, normalised over the whole vocabulary) of its ``token_ids``
        as the next token: one array of shape ``(len(token_ids[i]),)`` per prompt, in input order."""

    def generate(self, prompts: Sequence[str], decoding: Decoding) -> list[list[int]]:
        """Each prompt's greedy continuation under ``decoding``: the new token ids, without the end token."""

    def stream(
        self, prompt: str, decoding: Decoding, guard: Callable[[], AbstractContextManager[Any]] | None = None
    ) -> Iterator[str]:
        """The continuation of one prompt as text pieces while it is written; ``guard()`` is held
        around the model's work (a recommender's lock and adapter), wherever that work runs."""


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


def _vllm(loaded, **options) -> Backend:
    from ragrec.inference.backends.vllm import VllmBackend

    return VllmBackend(loaded, **options)


BACKENDS.register("transformers", _transformers)
BACKENDS.register("llamacpp", _llamacpp)
BACKENDS.register("vllm", _vllm)
