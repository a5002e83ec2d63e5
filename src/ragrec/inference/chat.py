"""Chat-style follow-up questions ("why Heat?", "something like Alien but funnier", "only 90s
movies"), each turn re-grounded by retrieval.

Every turn retrieves afresh: the user's history through the scenario's retriever, and the
question (with the previous one, for follow-ups) through the scenario's text encoder; the two
lists are merged by reciprocal-rank fusion, filtered by any decade or year the question names,
and the items the question itself names (``why Heat?``) are put first. The model answers from
those items only; an answer that names an item outside them, or a quoted title not in the
catalog, is replaced by a plain list of the retrieved items, and the answer says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ragrec.data.text import clean_text
from ragrec.errors import RagrecError
from ragrec.inference.explain import generate_text
from ragrec.inference.grounding import Grounding
from ragrec.prompts import candidate_block, count_tokens, fit_history, history_block, sanitize
from ragrec.types import Item, RankedItem, UserHistory

if TYPE_CHECKING:
    from ragrec.inference.recommender import Recommender, Scenario

__all__ = ["ChatSession", "ChatAnswer", "year_filter"]

RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009)
POOL = 200  # items taken from each source before fusion and filtering

_DECADE = re.compile(r"\b(?:(1[89]|20)(\d)0|'?(\d)0)'?s\b", re.I)  # 1990s, 90s, '90s
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")


def year_filter(question: str) -> tuple[Callable[[Item], bool] | None, str | None]:
    """A predicate on ``Item.year`` from a decade ("90s", "1990s") or a year ("1995") in the
    question, and its description; ``(None, None)`` when the question names neither."""
    m = _DECADE.search(question)
    if m:
        if m.group(1):
            start = int(m.group(1) + m.group(2) + "0")
        else:
            d = int(m.group(3))
            start = (1900 if d >= 2 else 2000) + d * 10  # '90s -> 1990, '00s/'10s -> 2000/2010
        return (lambda item, s=start: item.year is not None and s <= item.year < s + 10), f"{start}s"
    m = _YEAR.search(question)
    if m:
        year = int(m.group(1))
        return (lambda item, y=year: item.year == y), str(year)
    return None, None


@dataclass(frozen=True)
class ChatAnswer:
    """One turn: the question as used, the answer to show, the retrieved items it rests on."""

    question: str
    text: str
    items: tuple[RankedItem, ...]
    model_text: str
    grounding: Grounding
    fallback: str | None = None
    notes: tuple[str, ...] = ()


@dataclass
class ChatSession:
    """A multi-turn conversation about one user's recommendations in one scenario."""

    recommender: Recommender
    scenario: Scenario
    history: UserHistory
    user_id: str | None = None
    fallback: str | None = None  # how the user was resolved (e.g. unknown user)
    turns: list[ChatAnswer] = field(default_factory=list)

    def _pool(self, query: str, mentioned: list[str], keep: Callable[[Item], bool] | None, n: int, notes: list[str]):
        sc, seen = self.scenario, set(self.history.item_ids)
        fused: dict[str, float] = {}
        pool = min(POOL, len(sc.retriever.index))
        res = sc.retriever.retrieve(histories=[list(self.history.item_ids)], k=pool)[0]
        for c in res.candidates:
            fused[c.item_id] = fused.get(c.item_id, 0.0) + 1.0 / (RRF_K + c.rank)
        if sc.text is not None:
            scores = sc.text.encode_text([query])[0] @ sc.text.vectors.T  # (N,) cosine to the question
            order = np.argsort(-scores, kind="stable")
            if keep is not None:  # a filter: search the whole catalog, not just the top of it
                order = [
                    j for j in order if sc.text.item_ids[j] in sc.catalog and keep(sc.catalog[sc.text.item_ids[j]])
                ]
            for rank, j in enumerate(list(order)[:pool], 1):
                i = sc.text.item_ids[j]
                fused[i] = fused.get(i, 0.0) + 1.0 / (RRF_K + rank)
        else:
            notes.append("no text encoder in this scenario: items retrieved from the history only")
        picked = [i for i in sorted(fused, key=lambda i: -fused[i]) if i not in seen and i not in mentioned]
        if keep is not None:
            picked = [i for i in picked if keep(sc.catalog[i])]
        ranked = [(i, 1.0) for i in mentioned] + [(i, fused[i]) for i in picked[:n]]
        return tuple(RankedItem(i, float(s), r) for r, (i, s) in enumerate(ranked, 1))

    def ask(self, question: str) -> ChatAnswer:
        """Answer one question; raises for an empty one. Long messages are cut (reported in ``notes``)."""
        rec, sc = self.recommender, self.scenario
        budget = rec.budget
        raw = clean_text(question)
        if not raw:
            raise RagrecError("empty chat message")
        q = sanitize(raw, budget.max_user_chars)
        notes = []
        if len(raw) > budget.max_user_chars:
            notes.append(f"message cut from {len(raw)} to {budget.max_user_chars} characters")
        mentioned = [i for i in sc.matcher.cited(q) if i in sc.catalog][:3]
        keep, described = year_filter(q)
        if described:
            notes.append(f"filter: {described}")
        query = q if not self.turns else f"{self.turns[-1].question} {q}"
        items = self._pool(query, mentioned, keep, rec.config.chat_candidates, notes)
        if len(items) == len(mentioned) and keep is not None:
            notes.append(f"no unseen item matches {described}")
        cand_items = [sc.catalog[i.item_id] for i in items]
        block = candidate_block(cand_items, budget)[0] if cand_items else "(none)"
        hist = rec._items(sc, self.history.item_ids)[-budget.max_history :]
        template = rec.template(sc, "chat")
        template.require_output("text")
        earlier = []
        for turn in self.turns[-rec.config.chat_turns :] if rec.config.chat_turns else []:
            earlier += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.text}]

        def with_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
            return messages[:1] + earlier + messages[1:]

        messages, _ = fit_history(
            template,
            lambda n: {
                "item_noun": sc.config.item_noun,
                "candidates": block,
                "question": q,
                "history": history_block(hist[len(hist) - n :] if n else [], budget),
            },  # fmt: skip
            lambda m: count_tokens(rec.loaded.tokenizer, with_turns(m)),
            budget,
        )
        with rec.use(sc):
            text = generate_text(rec.loaded, with_turns(messages), template.output.max_new_tokens)
        allowed = set(self.history.item_ids) | {i.item_id for i in items}
        grounding = sc.matcher.check(text, allowed, about={i.item_id for i in items})
        answer, fallback = text, None
        if not text or not grounding.grounded:
            listed = "; ".join(clean_text(c.title) or c.item_id for c in cand_items[:5]) or "nothing"
            answer = f"From the catalog: {listed}."
            fallback = ("the model wrote nothing" if not text else grounding.reason("the history and retrieved items")
                        ) + "; answered with the retrieved items"  # fmt: skip
        turn = ChatAnswer(q, answer, items, text, grounding, fallback, tuple(notes))
        self.turns.append(turn)
        return turn
