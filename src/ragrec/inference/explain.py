"""Free-text tasks: explanations (streamed or whole), checked for grounding.

The model writes from the ``explain`` template, prompted with the *evidence*: the history items
that drove the recommendation (:mod:`ragrec.inference.evidence`). Decoding follows the template's
output contract (no repeated n-grams, a repetition penalty, a stop after ``max_sentences``
complete sentences), and only complete sentences are ever shown. The text is then checked by
:class:`~ragrec.inference.grounding.TitleMatcher` sentence by sentence: the longest run of leading
sentences that passes is the explanation (the rest is dropped, and ``notes`` says so); when not
even the first sentence passes, an explanation built from the data
(:func:`~ragrec.inference.grounding.attribute_explanation`, citing the evidence) replaces it and
``fallback`` says why. A stream emits exactly the sentences that pass, so what was shown is what
the final explanation holds: rejected text is never emitted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ragrec.data.text import render_item_text
from ragrec.inference.backends import Backend, Decoding
from ragrec.inference.evidence import evidence_block
from ragrec.inference.grounding import Grounding, TitleMatcher, attribute_explanation
from ragrec.inference.models import LoadedModel
from ragrec.inference.runner import PromptRunner
from ragrec.prompts import (
    OutputContract,
    PromptBudget,
    PromptTemplate,
    chat_text,
    count_tokens,
    fit_history,
    history_block,
    sanitize,
)
from ragrec.types import Evidence, Item

__all__ = [
    "Explanation",
    "Explainer",
    "ExplanationStream",
    "generate_text",
    "check_sentences",
    "SentenceCheck",
    "prompt_text",
]


@dataclass(frozen=True)
class Explanation:
    """Why ``item_id`` suits the user. ``text`` is what to show; ``model_text`` what the model
    wrote; ``fallback`` says why ``text`` is not the model's (``None`` when it is); ``notes`` any
    other change (sentences dropped); ``evidence`` the history items behind the recommendation."""

    item_id: str
    text: str
    model_text: str
    grounding: Grounding
    fallback: str | None = None
    evidence: tuple[Evidence, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def grounded(self) -> bool:
        return self.grounding.grounded


class _SentenceStop:
    """A stop rule (:class:`~ragrec.inference.backends.Decoding`): stop once the answer holds ``n``
    complete sentences, or when ``cancel`` is set (a stream that already rejected a sentence)."""

    def __init__(self, n: int, split: Callable[[str], tuple[list[str], str]]) -> None:
        self.n, self.split = n, split
        self.cancel = False

    def __call__(self, text: str) -> bool:
        return self.cancel or bool(self.n and len(self.split(text)[0]) >= self.n)


def _decoding(output: OutputContract | int, split: Callable[[str], tuple[list[str], str]] | None) -> Decoding:
    if isinstance(output, int):
        return Decoding(output)
    stop = _SentenceStop(output.max_sentences, split) if split and output.max_sentences else None
    return Decoding.of(output, stop)


def generate_text(
    backend: Backend,
    messages: list[dict[str, str]],
    output: OutputContract | int,
    split: Callable[[str], tuple[list[str], str]] | None = None,
) -> str:
    """Greedy answer to chat ``messages`` on ``backend`` under ``output``'s decoding settings (an
    int: at most that many new tokens, no other control). ``split`` finds complete sentences, for
    ``output.max_sentences``."""
    tok = backend.tokenizer
    ids = backend.generate([chat_text(tok, messages)], _decoding(output, split))[0]
    return tok.decode(ids, skip_special_tokens=True).strip()


def prompt_text(template: PromptTemplate, *extra: str) -> str:
    """The template's own words (system and user text without placeholders) plus ``extra`` (the
    user's question): what an answer must not merely repeat."""
    import string

    fixed = [lit for part in (template.system, template.user) for lit, _, _, _ in string.Formatter().parse(part)]
    return " ".join([*fixed, *extra])


@dataclass(frozen=True)
class SentenceCheck:
    """What :func:`check_sentences` kept of a model's text: ``text`` (the leading sentences that pass
    and name their support; '' when none do), ``passed`` (the check of the passing sentences, also
    when they lack support; ``None`` when none pass), ``failed`` (the first failing check),
    ``unsupported`` (sentences passed but named no support), ``extra`` (complete sentences beyond
    the limit) and ``notes`` (what was dropped from a kept text)."""

    text: str
    passed: Grounding | None
    failed: Grounding | None
    unsupported: bool
    extra: int
    notes: tuple[str, ...]


def check_sentences(
    text: str,
    split: Callable[[str], tuple[list[str], str]],
    max_sentences: int,
    check: Callable[[str], Grounding],
    supported: Callable[[str], bool],
) -> SentenceCheck:
    """The leading complete sentences of ``text`` (at most ``max_sentences``; 0: any number) that
    pass ``check`` together, kept when ``supported`` accepts them: what explanations and chat
    answers show of a model's text."""
    parts, rest = split(text)
    extra = len(parts) - max_sentences if max_sentences and len(parts) > max_sentences else 0
    parts = parts[:max_sentences] if max_sentences else parts
    kept, passed, failed = 0, None, None
    for k in range(1, len(parts) + 1):
        g = check(" ".join(parts[:k]))
        if not g.grounded:
            failed = g
            break
        kept, passed = k, g
    unsupported = bool(kept) and not supported(" ".join(parts[:kept]))
    if not kept or unsupported:
        return SentenceCheck("", passed, failed, unsupported, extra, ())
    notes = []
    if failed is not None:
        notes.append(f"kept {kept} of {len(parts)} sentences: the next one failed the check ({failed.reason()})")
    if rest:
        notes.append("dropped an unfinished last sentence")
    return SentenceCheck(" ".join(parts[:kept]), passed, failed, False, extra, tuple(notes))


class ExplanationStream:
    """Iterate to receive the explanation as it is written, one checked sentence at a time;
    afterwards ``explanation`` holds the result. The pieces joined are exactly
    ``explanation.text``: a sentence that fails the check ends the stream (generation is
    cancelled), and when none passed the data-built explanation is sent as the only piece."""

    def __init__(self, chunks: Iterator[str], explainer: Explainer, ctx: dict, stop: _SentenceStop | None) -> None:
        self._chunks = chunks
        self._explainer = explainer
        self._ctx = ctx
        self._stop = stop
        self.explanation: Explanation | None = None

    def __iter__(self) -> Iterator[str]:
        ex, n = self._explainer, self._explainer.template.output.max_sentences
        written, shown, passed, failed = "", 0, 0, False

        def advance(final: bool) -> Iterator[str]:
            # Sentences are held until the text passes the check and names its support (an
            # evidence item), then sent; the first failing sentence ends the stream. A sentence
            # that ends exactly where the text written so far ends may still grow ("Heat." ->
            # "Heat.com"), so it waits for more text unless generation is over.
            nonlocal shown, passed, failed
            parts, rest = ex.matcher.sentences(written)
            if not final and not rest and parts and not written[-1:].isspace():
                parts = parts[:-1]
            parts = parts[:n] if n else parts
            while passed < len(parts) and not failed:
                if not ex._grounding(" ".join(parts[: passed + 1]), self._ctx).grounded:
                    failed = True
                    if self._stop is not None:
                        self._stop.cancel = True  # nothing more will be shown: stop generating
                    break
                passed += 1
            if shown < passed and ex._supported(" ".join(parts[:passed]), self._ctx):
                yield ("" if shown == 0 else " ") + " ".join(parts[shown:passed])
                shown = passed

        for chunk in self._chunks:
            written += chunk
            if not failed:
                yield from advance(final=False)
        if not failed:
            yield from advance(final=True)
        self.explanation = ex._finish(written.strip(), self._ctx)
        if shown == 0:
            yield self.explanation.text


class Explainer(PromptRunner):
    """Explains recommendations with the ``explain`` template (output contract: text)."""

    output_kind = "text"

    def __init__(
        self,
        loaded: LoadedModel,
        template: PromptTemplate,
        matcher: TitleMatcher,
        *,
        budget: PromptBudget | None = None,
        backend: Backend | None = None,
    ) -> None:
        super().__init__(loaded, template, budget=budget, backend=backend)
        self.matcher = matcher

    def messages(
        self, history: Sequence[Item], item: Item, item_noun: str, evidence: Sequence[Evidence] = ()
    ) -> list[dict[str, str]]:
        line = sanitize(render_item_text(item, max_chars=self.budget.max_item_chars * 2), self.budget.max_item_chars)
        history = list(history)[-self.budget.max_history :] if self.budget.max_history else []
        block = evidence_block(evidence, self.budget.max_item_chars)
        messages, _ = fit_history(
            self.template,
            lambda n: {
                "item_noun": item_noun,
                "item": line,
                "evidence": block,
                "history": history_block(history[len(history) - n :] if n else [], self.budget),
            },  # fmt: skip
            lambda m: count_tokens(self.loaded.tokenizer, m),
            self.budget,
        )
        return messages

    def _context(self, history: Sequence[Item], item: Item, item_noun: str, evidence: Sequence[Evidence]) -> dict:
        return {"history": list(history), "item": item, "item_noun": item_noun, "evidence": tuple(evidence),
                "prompt": prompt_text(self.template)}  # fmt: skip

    def _grounding(self, text: str, ctx: dict) -> Grounding:
        history = ctx["history"]
        allowed = {h.item_id for h in history} | {ctx["item"].item_id}
        return self.matcher.check(text, allowed, about={ctx["item"].item_id},
                                  history=[h.item_id for h in history], prompt=ctx["prompt"])  # fmt: skip

    def _supported(self, text: str, ctx: dict) -> bool:
        """Whether ``text`` names what supports the recommendation: an evidence item (a history
        item when there is no evidence); always true when none of those has a title to name."""
        support = [e.item_id for e in ctx["evidence"] if e.title] or [h.item_id for h in ctx["history"] if h.title]
        return not support or bool(set(self.matcher.cited(text)) & set(support))

    def _finish(self, text: str, ctx: dict) -> Explanation:
        """The checked explanation of the model's ``text`` (see the module docstring)."""
        item, evidence = ctx["item"], ctx["evidence"]
        n = self.template.output.max_sentences
        res = check_sentences(text, self.matcher.sentences, n, lambda t: self._grounding(t, ctx),
                              lambda t: self._supported(t, ctx))  # fmt: skip
        if res.text:
            notes = res.notes + ((f"dropped {res.extra} sentences beyond the template's max_sentences={n}",)
                                 if res.extra else ())  # fmt: skip
            assert res.passed is not None
            return Explanation(item.item_id, res.text, text, res.passed, None, evidence, notes)
        if not text:
            why, grounding = "the model wrote nothing", self._grounding("", ctx)
        elif res.unsupported:
            why, grounding = "the model named none of the history items behind the recommendation", res.passed
        elif res.failed is None:  # no complete sentence at all
            why, grounding = "the model's text ended mid-sentence", self._grounding(text, ctx)
        else:
            why, grounding = res.failed.reason(), res.failed
        by_id = {h.item_id: h for h in ctx["history"]}
        support = [by_id[e.item_id] for e in evidence if e.item_id in by_id]
        fallback = attribute_explanation(item, ctx["history"], ctx["item_noun"], support)
        return Explanation(item.item_id, fallback, text, grounding, f"{why}; explanation built from the data instead",
                           evidence)  # fmt: skip

    def explain(
        self, history: Sequence[Item], item: Item, *, item_noun: str = "item", evidence: Sequence[Evidence] = ()
    ) -> Explanation:
        messages = self.messages(history, item, item_noun, evidence)
        text = generate_text(self.backend, messages, self.template.output, self.matcher.sentences)
        return self._finish(text, self._context(history, item, item_noun, evidence))

    def stream(
        self,
        history: Sequence[Item],
        item: Item,
        *,
        item_noun: str = "item",
        evidence: Sequence[Evidence] = (),
        guard=contextlib.nullcontext,
    ) -> ExplanationStream:
        """Like :meth:`explain`, but the text arrives in checked sentences as it is generated.

        ``guard()`` is held around generation (the ``Recommender`` passes one that holds its lock and
        activates the scenario's adapter)."""
        prompt = chat_text(self.backend.tokenizer, self.messages(history, item, item_noun, evidence))
        output = self.template.output
        stop = _SentenceStop(output.max_sentences, self.matcher.sentences)
        chunks = self.backend.stream(prompt, Decoding.of(output, stop), guard)
        return ExplanationStream(chunks, self, self._context(history, item, item_noun, evidence), stop)
