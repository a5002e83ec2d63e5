"""Free-text tasks: explanations (streamed or whole), checked for grounding.

The model writes greedily from the ``explain`` template; the text is then checked by
:class:`~ragrec.inference.grounding.TitleMatcher`. An explanation that names an item outside the
user's history and the recommended item, or a quoted title that is not in the catalog, is
replaced by one built from the data (:func:`attribute_explanation`), and the result says so.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ragrec.data.text import render_item_text
from ragrec.inference.grounding import Grounding, TitleMatcher, attribute_explanation
from ragrec.inference.models import LoadedModel
from ragrec.prompts import PromptBudget, PromptTemplate, count_tokens, fit_history, history_block, sanitize
from ragrec.types import Item

__all__ = ["Explanation", "Explainer", "ExplanationStream", "generate_text"]


@dataclass(frozen=True)
class Explanation:
    """Why ``item_id`` suits the user. ``text`` is what to show; ``model_text`` what the model
    wrote; ``fallback`` says why ``text`` is not the model's (``None`` when it is)."""

    item_id: str
    text: str
    model_text: str
    grounding: Grounding
    fallback: str | None = None

    @property
    def grounded(self) -> bool:
        return self.grounding.grounded


@torch.no_grad()
def generate_text(loaded: LoadedModel, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """Greedy answer to chat ``messages`` (at most ``max_new_tokens`` tokens)."""
    tok = loaded.tokenizer
    enc = loaded.encode_chat(messages)
    out = loaded.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


class ExplanationStream:
    """Iterate to receive the explanation's text as the model writes it; afterwards
    ``explanation`` holds the checked result (its ``text`` may be the grounded fallback)."""

    def __init__(self, chunks: Iterator[str], finish) -> None:
        self._chunks = chunks
        self._finish = finish
        self.explanation: Explanation | None = None

    def __iter__(self) -> Iterator[str]:
        parts = []
        for chunk in self._chunks:
            parts.append(chunk)
            yield chunk
        self.explanation = self._finish("".join(parts).strip())


class Explainer:
    """Explains recommendations with the ``explain`` template (output contract: text)."""

    def __init__(
        self,
        loaded: LoadedModel,
        template: PromptTemplate,
        matcher: TitleMatcher,
        *,
        budget: PromptBudget | None = None,
    ) -> None:
        template.require_output("text")
        self.loaded = loaded
        self.template = template
        self.matcher = matcher
        self.budget = budget or PromptBudget()

    def messages(self, history: Sequence[Item], item: Item, item_noun: str) -> list[dict[str, str]]:
        line = sanitize(render_item_text(item, max_chars=self.budget.max_item_chars * 2), self.budget.max_item_chars)
        history = list(history)[-self.budget.max_history :] if self.budget.max_history else []
        messages, _ = fit_history(
            self.template,
            lambda n: {
                "item_noun": item_noun,
                "item": line,
                "history": history_block(history[len(history) - n :] if n else [], self.budget),
            },  # fmt: skip
            lambda m: count_tokens(self.loaded.tokenizer, m),
            self.budget,
        )
        return messages

    def _check(self, text: str, history: Sequence[Item], item: Item, item_noun: str) -> Explanation:
        allowed = {h.item_id for h in history} | {item.item_id}
        grounding = self.matcher.check(text, allowed, about={item.item_id})
        if grounding.grounded and text:
            return Explanation(item.item_id, text, text, grounding)
        why = "the model wrote nothing" if not text else grounding.reason()
        return Explanation(item.item_id, attribute_explanation(item, history, item_noun), text, grounding,
                           fallback=f"{why}; explanation built from the data instead")  # fmt: skip

    def explain(self, history: Sequence[Item], item: Item, *, item_noun: str = "item") -> Explanation:
        text = generate_text(self.loaded, self.messages(history, item, item_noun), self.template.output.max_new_tokens)
        return self._check(text, history, item, item_noun)

    def stream(
        self, history: Sequence[Item], item: Item, *, item_noun: str = "item", guard=contextlib.nullcontext
    ) -> ExplanationStream:
        """Like :meth:`explain`, but the text arrives in pieces as it is generated.

        ``guard()`` is entered by the generating thread around generation (the ``Recommender``
        passes one that holds its lock and activates the scenario's adapter)."""
        from transformers import TextIteratorStreamer

        tok = self.loaded.tokenizer
        enc = self.loaded.encode_chat(self.messages(history, item, item_noun))
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kwargs = dict(**enc, max_new_tokens=self.template.output.max_new_tokens, do_sample=False,
                      pad_token_id=tok.pad_token_id, streamer=streamer)  # fmt: skip

        def run() -> None:
            with guard(), torch.no_grad():
                self.loaded.model.generate(**kwargs)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()

        def chunks() -> Iterator[str]:
            yield from streamer
            worker.join()

        return ExplanationStream(chunks(), lambda text: self._check(text, history, item, item_noun))
