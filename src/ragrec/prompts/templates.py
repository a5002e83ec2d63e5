"""Prompt templates: one versioned file per (scenario, task), with an output contract.

A template is data (YAML): a system message, a user message with ``{placeholders}``, and what the
model must answer (``output``). Rendering is a pure function from (template, context) to chat
messages; chat formatting is left to the tokenizer's chat template. Context values are
inserted verbatim in a single pass (``str.format`` never re-reads what it inserted), and
untrusted text (titles, user chat) is sanitised first by :func:`sanitize`, so data can never
become template syntax, a fake message boundary or a special token.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from os import PathLike
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragrec.config import model_from_yaml
from ragrec.data.text import clean_text, truncate
from ragrec.errors import RagrecError, UnknownNameError
from ragrec.tasks import TASKS

__all__ = ["TASKS", "OutputContract", "PromptTemplate", "sanitize", "candidate_labels"]


# Chat-template control sequences of common model families (<|im_start|>, <|user|>, [INST],
# <start_of_turn>, <s>): removed from untrusted text so it cannot open a new turn.
_SPECIAL = re.compile(
    r"<\|[^|<>]{0,40}\|>|\[/?INST\]|<\/?s>|<(?:start|end)_of_turn>|<\/?(?:system|user|assistant)>", re.I
)


def sanitize(text: str | None, max_chars: int) -> str:
    """Untrusted text -> one bounded line: control characters and newlines folded, chat
    control tokens removed, cut to ``max_chars``."""
    cleaned = clean_text(_SPECIAL.sub(" ", text or ""))
    cleaned = _SPECIAL.sub(" ", cleaned)  # removal can join fragments into a new token
    return truncate(clean_text(cleaned), max_chars) if cleaned else ""


def candidate_labels(n: int) -> list[str]:
    """``A..Z``, then ``AA, AB, ...``: ``n`` distinct labels in order."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    letters = string.ascii_uppercase
    labels = list(letters[:n])
    first = 0
    while len(labels) < n:
        labels.extend(letters[first] + b for b in letters[: n - len(labels)])
        first += 1
    return labels


class OutputContract(BaseModel):
    """What the model must produce for a task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["label", "text", "digit"] = Field(
        description="label: one candidate label; digit: a rating digit; text: free text."
    )
    values: tuple[str, ...] = Field((), description="digit: the allowed digits, e.g. 1-5.")
    max_new_tokens: int = Field(1, ge=1, description="Tokens the answer may take.")
    max_sentences: int = Field(
        0, ge=0, description="text: stop after this many complete sentences (0: no limit); an unfinished last "
        "sentence is never shown.",
    )  # fmt: skip
    no_repeat_ngram_size: int = Field(3, ge=0, description="text: never repeat a token n-gram of this size (0: off).")
    repetition_penalty: float = Field(1.15, ge=1.0, le=2.0, description="text: penalty on tokens already written.")


class PromptTemplate(BaseModel):
    """One (scenario, task) template, as stored in a YAML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str = Field(description="Scenario name; 'default' is the fallback for every scenario.")
    task: str = Field(description="Task name (one registered in ragrec.tasks).")
    version: int = Field(ge=1, description="Bumped whenever the wording changes (adapters record it).")
    system: str = Field(description="System message.")
    user: str = Field(description="User message with {placeholders}.")
    output: OutputContract
    description: str = ""

    @model_validator(mode="after")
    def _registered_task(self) -> PromptTemplate:
        try:
            spec = TASKS.get(self.task)
        except UnknownNameError as exc:  # the message lists the registered tasks
            raise ValueError(str(exc)) from None
        if self.output.type != spec.output:
            raise ValueError(f"task {self.task!r} answers with {spec.output!r}, but the template's output is "
                             f"{self.output.type!r}")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _placeholders(self) -> PromptTemplate:
        for part in (self.system, self.user):
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(part) if f is not None]
            except ValueError as e:
                raise ValueError(f"bad placeholder syntax: {e}") from None
            bad = [f for f in fields if not f.isidentifier()]
            if bad:
                raise ValueError(f"placeholders must be plain names, got {bad}")
        return self

    def require_output(self, kind: str) -> None:
        """Raise :class:`RagrecError` unless this template answers with ``kind`` (label/text/digit)."""
        names = {"label": "a label", "text": "text", "digit": "digits"}
        if self.output.type != kind or (kind == "digit" and not self.output.values):
            raise RagrecError(
                f"template {self.scenario}/{self.task} does not answer with {names.get(kind, kind)} "
                f"(its output is {self.output.type!r})"
            )

    @property
    def key(self) -> tuple[str, str]:
        return self.scenario, self.task

    @property
    def variables(self) -> set[str]:
        names = set()
        for part in (self.system, self.user):
            names |= {f for _, f, _, _ in string.Formatter().parse(part) if f}
        return names

    @classmethod
    def from_file(cls, path: str | PathLike[str]) -> PromptTemplate:
        return model_from_yaml(cls, path)

    def render(self, context: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages ``[{"role": "system", ...}, {"role": "user", ...}]``.

        Every placeholder must be in ``context`` (a missing one raises ``KeyError`` naming it);
        values are inserted as text, once.
        """
        missing = self.variables - set(context)
        if missing:
            raise KeyError(f"template {self.scenario}/{self.task} v{self.version} needs {sorted(missing)}")
        values = {k: str(context[k]) for k in self.variables}
        return [
            {"role": "system", "content": self.system.format_map(values)},
            {"role": "user", "content": self.user.format_map(values)},
        ]

    def to_langchain(self):  # -> langchain_core.prompts.ChatPromptTemplate
        """The same template as a LangChain ``ChatPromptTemplate`` (f-string variables); needs the
        ``langchain`` extra."""
        try:
            from langchain_core.prompts import ChatPromptTemplate
        except ImportError:
            raise RagrecError("to_langchain needs langchain-core: pip install 'ragrec[langchain]'") from None

        return ChatPromptTemplate.from_messages([("system", self.system), ("human", self.user)])
