"""Building template contexts from typed inputs, within a token budget.

Every string that comes from data or users goes through :func:`sanitize` here, so templates only
ever receive bounded, single-line, control-token-free text. History is cut oldest-first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ragrec.data.text import render_item_text
from ragrec.errors import RagrecError
from ragrec.prompts.templates import PromptTemplate, candidate_labels, sanitize
from ragrec.types import Item

__all__ = [
    "PromptBudget",
    "history_block",
    "candidate_block",
    "rank_context",
    "fit_history",
    "chat_text",
    "count_tokens",
]


@dataclass(frozen=True)
class PromptBudget:
    """Bounds on what goes into a prompt."""

    max_history: int = 20  # most recent history items shown
    max_item_chars: int = 90  # per rendered item (title + year + categories)
    max_user_chars: int = 1000  # a chat message
    max_tokens: int = 2048  # the whole rendered prompt


def _item_line(item: Item, budget: PromptBudget) -> str:
    return sanitize(render_item_text(item, max_chars=budget.max_item_chars * 2), budget.max_item_chars)


def history_block(history: Sequence[Item], budget: PromptBudget, ratings: Sequence[float | None] | None = None) -> str:
    """Numbered lines of the most recent ``budget.max_history`` items, oldest first."""
    items = list(history)[-budget.max_history :] if budget.max_history else []
    rates = list(ratings)[-len(items) :] if ratings is not None and items else [None] * len(items)
    lines = []
    for i, (item, r) in enumerate(zip(items, rates), start=1):
        suffix = f" (rated {r:g}/5)" if r is not None else ""
        lines.append(f"{i}. {_item_line(item, budget)}{suffix}")
    return "\n".join(lines) if lines else "(no history)"


def candidate_block(
    candidates: Sequence[Item], budget: PromptBudget, labels: Sequence[str] | None = None
) -> tuple[str, list[str]]:
    """Lettered candidate lines and the labels used (``labels``, else ``A, B, ...``)."""
    labels = list(labels) if labels is not None else candidate_labels(len(candidates))
    if len(labels) < len(candidates):
        raise RagrecError(f"{len(labels)} labels for {len(candidates)} candidates")
    labels = labels[: len(candidates)]
    return "\n".join(f"{lab}. {_item_line(c, budget)}" for lab, c in zip(labels, candidates)), labels


def rank_context(
    history: Sequence[Item],
    candidates: Sequence[Item],
    item_noun: str,
    budget: PromptBudget,
    labels: Sequence[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Context of the ``rank`` task and the candidate labels, in candidate order."""
    if not candidates:
        raise RagrecError("rank needs at least one candidate")
    block, labels = candidate_block(candidates, budget, labels)
    span = labels[0] if len(labels) == 1 else f"{labels[0]}-{labels[-1]}"
    return {
        "item_noun": item_noun,
        "history": history_block(history, budget),
        "candidates": block,
        "labels": span,
    }, labels


def fit_history(
    template: PromptTemplate,
    make_context: Callable[[int], dict[str, str]],
    count_tokens: Callable[[list[dict[str, str]]], int],
    budget: PromptBudget,
) -> tuple[list[dict[str, str]], int]:
    """Render with the longest recent history (at most ``budget.max_history`` items) whose prompt
    fits ``budget.max_tokens``; ``make_context(n)`` builds the context with ``n`` history items.

    Returns the messages and the number of history items kept. Raises if even an empty history
    does not fit (the candidates alone are too long).
    """
    lo, hi = 0, budget.max_history
    full = template.render(make_context(hi))
    if count_tokens(full) <= budget.max_tokens:  # the common case: one tokenisation
        return full, hi
    if count_tokens(template.render(make_context(0))) > budget.max_tokens:
        raise RagrecError(f"prompt exceeds {budget.max_tokens} tokens even without history; use fewer candidates")
    while lo < hi:  # largest n that fits (token count grows with n)
        mid = (lo + hi + 1) // 2
        if count_tokens(template.render(make_context(mid))) <= budget.max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return template.render(make_context(lo)), lo


def chat_text(tokenizer, messages: list[dict[str, str]]) -> str:
    """Chat messages -> the prompt string, through the tokenizer's own chat template, ending
    where the assistant's answer starts."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def count_tokens(tokenizer, messages: list[dict[str, str]]) -> int:
    """Length in tokens of the chat-formatted prompt of ``messages``."""
    return len(tokenizer(chat_text(tokenizer, messages), add_special_tokens=False)["input_ids"])
