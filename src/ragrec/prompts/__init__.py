"""Scenario- and task-specific prompt templates, their registry and the pure renderer."""

from ragrec.prompts.context import (
    PromptBudget,
    candidate_block,
    chat_text,
    count_tokens,
    fit_history,
    history_block,
    rank_context,
)
from ragrec.prompts.registry import BUILTIN_DIR, TemplateRegistry, builtin_registry
from ragrec.prompts.templates import TASKS, OutputContract, PromptTemplate, candidate_labels, sanitize

__all__ = [
    "BUILTIN_DIR",
    "OutputContract",
    "PromptBudget",
    "PromptTemplate",
    "TASKS",
    "TemplateRegistry",
    "builtin_registry",
    "candidate_block",
    "candidate_labels",
    "chat_text",
    "count_tokens",
    "fit_history",
    "history_block",
    "rank_context",
    "sanitize",
]
