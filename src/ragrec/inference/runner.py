"""``PromptRunner``: what every task runner (rank, rate, explain, generate) starts from."""

from __future__ import annotations

from typing import Any, ClassVar

from ragrec.inference.backends import Backend, make_backend
from ragrec.inference.models import LoadedModel
from ragrec.prompts import PromptBudget, PromptTemplate

__all__ = ["PromptRunner"]


class PromptRunner:
    """A model, a template whose output contract is ``output_kind`` (checked here), the prompt
    budget and the backend that runs the prompts (default: transformers over ``loaded``, built with
    :meth:`backend_options`); :meth:`setup` then prepares what the task needs (label tokens...)."""

    output_kind: ClassVar[str]

    def __init__(
        self,
        loaded: LoadedModel,
        template: PromptTemplate,
        *,
        budget: PromptBudget | None = None,
        backend: Backend | None = None,
    ) -> None:
        template.require_output(self.output_kind)
        self.loaded = loaded
        self.template = template
        self.budget = budget or PromptBudget()
        self.backend = backend or make_backend("transformers", loaded, **self.backend_options())
        self.setup()

    def backend_options(self) -> dict[str, Any]:
        """Settings of the default transformers backend (after ``budget`` is set)."""
        return {}

    def setup(self) -> None:
        """What a runner prepares once its model, template, budget and backend are set."""
