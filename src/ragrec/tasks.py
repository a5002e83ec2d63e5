"""The tasks ragrec runs, one registration each (:func:`register_task`).

Every list of tasks is derived from this registry, never written out again: which tasks a prompt
template may declare (and the output contract it must have), the ``task`` choices of
``Recommender.recommend`` and the service, which tasks a fine-tuning mixture may name, and what
early stopping watches. A new task is one :class:`TaskSpec` plus its template (a YAML file under
``ragrec/prompts/builtin/default/`` or a scenario's ``templates/``); see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ragrec.registry import Registry

__all__ = ["TaskSpec", "TASKS", "register_task", "task_names", "task_specs"]


@dataclass(frozen=True)
class TaskSpec:
    """One task.

    ``output``: the output contract its templates declare (``label``: one candidate letter,
    scored from the next-token logits; ``text``: free text; ``digit``: a rating digit).
    ``recommend``: it produces a ranked list (a ``recommend(task=...)`` choice).
    ``trainable``: fine-tuning examples are built for it (``FinetuneConfig.mixture`` may name it;
    the builder is registered in :mod:`ragrec.finetune.examples`), and ``needs`` says what a training
    split must hold for them. ``metric``: what validation watches when the mixture trains it
    (``higher_is_better`` says which way); the first registered task of a mixture decides.
    """

    name: str
    output: Literal["label", "text", "digit"]
    description: str
    recommend: bool = False
    trainable: bool = False
    needs: str = ""
    metric: str | None = None
    higher_is_better: bool = True


TASKS: Registry[TaskSpec] = Registry("task")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register ``spec`` under its name (a name registered twice is refused)."""
    if spec.trainable and spec.metric is None:
        raise ValueError(f"trainable task {spec.name!r} needs a validation metric")
    return TASKS.register(spec.name, spec)


def task_specs() -> list[TaskSpec]:
    """Every registered task, in registration order."""
    return [TASKS.get(n) for n in TASKS.in_order()]


def task_names(*, recommend: bool | None = None, trainable: bool | None = None) -> tuple[str, ...]:
    """Names of the registered tasks (registration order), optionally only those that produce a
    ranked list (``recommend``) or that can be fine-tuned (``trainable``)."""
    return tuple(
        s.name
        for s in task_specs()
        if (recommend is None or s.recommend == recommend) and (trainable is None or s.trainable == trainable)
    )


register_task(TaskSpec("rank", "label", "Order the retrieved candidates by the log-probability of their letters.",
                       recommend=True, trainable=True, needs="training sequences of 2+ items",
                       metric="ndcg@10"))  # fmt: skip
register_task(TaskSpec("generate", "text", "Write catalog titles, decoded under a trie of the allowed titles.",
                       recommend=True))  # fmt: skip
register_task(TaskSpec("explain", "text", "Say why an item suits the user, from the evidence in their history.",
                       trainable=True, needs="review text", metric="rouge_l"))  # fmt: skip
register_task(TaskSpec("rate", "digit", "Predict the user's rating of an item (expectation over the digits).",
                       trainable=True, needs="ratings", metric="rating_mae", higher_is_better=False))  # fmt: skip
register_task(TaskSpec("chat", "text", "Answer a follow-up question about the user's recommendations.",
                       trainable=True, needs="training sequences of 3+ items", metric="chat_kept"))  # fmt: skip
