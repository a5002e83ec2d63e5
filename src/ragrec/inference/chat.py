"""Chat-style follow-up questions ("why the first one?", "something like Alien but funnier",
"only 90s movies"), with conversation state, each turn re-grounded by retrieval.

A session remembers what it showed: the ordered items of every turn (the first turn's list is the
user's recommendations, :meth:`ChatSession.recommendations`) and the item each turn was about.
Before anything is retrieved or prompted, references in the message are resolved to catalog
items (:func:`resolve`): ordinals ("the first one", "the second", "number 3", "the last one")
index the list shown last, "that one" / "it" is the item the conversation is about, "the last
movie you mentioned" is the last item the previous answer named, and titles are matched in the
catalog.

What the message asks decides the turn (:func:`intent`):

* **about** ("why would I like the first one?", "tell me more about Heat"): the answer is about
  the referenced items, with their evidence (the history items that drove them).
* **like** ("something like Alien but funnier", "similar to Heat"): the referenced items are the
  anchor of the search (item-to-item through the scenario's retriever, fused with the text search
  of the message), never the answer.
* **recommend** (anything else): the history through the retriever, fused with the text search of
  the message.

Items the user has interacted with are never offered unless the message asks for them ("something
I have seen", "to watch again"). A decade or year ("90s", "1995") filters the items; a category the
message names ("comedies") or implies ("funnier", "scary") filters them when any item has it (else
it is reported and ignored). The model answers from those items only, and only its complete
sentences that pass the grounding check are shown (:mod:`ragrec.inference.explain`); when none
does, an answer built from the data (the items and their evidence) replaces it, and the answer
says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ragrec.data.text import clean_text
from ragrec.errors import RagrecError
from ragrec.inference.evidence import display_name, evidence_for
from ragrec.inference.explain import check_sentences, generate_text, prompt_text
from ragrec.inference.grounding import Grounding, attribute_explanation
from ragrec.prompts import count_tokens, fit_history, history_block, sanitize
from ragrec.ranking import RRF_POOL, rrf_add
from ragrec.types import Evidence, Item, RankedItem, UserHistory

if TYPE_CHECKING:
    from ragrec.inference.backends import Backend
    from ragrec.inference.models import LoadedModel
    from ragrec.inference.scenario import Scenario
    from ragrec.prompts import PromptBudget, PromptTemplate

__all__ = ["ChatSession", "ChatAnswer", "ChatTurn", "ChatHost", "year_filter", "resolve", "intent", "wanted_categories"]


class ChatHost(Protocol):
    """What a :class:`ChatSession` needs from the recommender behind it (the
    :class:`~ragrec.inference.Recommender` provides it; a test or another engine can too)."""

    config: Any  # reads candidates, chat_candidates, chat_turns and evidence (a RecommenderConfig)
    budget: PromptBudget
    loaded: LoadedModel

    def recommend(self, user_id: str | None = None, *, history: Sequence[str] | None = None,
                  scenario: str | None = None, k: int = 10) -> Any:  # fmt: skip
        """A ranked list with ``items`` and ``item_ids`` (a Recommendation)."""

    def template(self, scenario: Scenario, task: str) -> PromptTemplate:
        """The scenario's prompt template for ``task``."""

    def use(self, scenario: Scenario) -> AbstractContextManager[None]:
        """Hold the model for ``scenario`` (its adapter on) while generating."""

    def backend_for(self, scenario: Scenario) -> Backend:
        """The model backend that writes for ``scenario``."""

    def history_items(self, scenario: Scenario, ids: Sequence[str]) -> list[Item]:
        """The catalog items of ``ids``."""


_DECADE = re.compile(r"\b(?:(1[89]|20)(\d)0|'?(\d)0)'?s\b", re.I)  # 1990s, 90s, '90s
_YEAR = re.compile(r"\b(1[89]\d\d|20\d\d)\b")
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
             "fifth": 4, "5th": 4, "sixth": 5, "6th": 5, "seventh": 6, "7th": 6, "eighth": 7, "8th": 7,
             "last": -1, "top": 0}  # fmt: skip
_ORDINAL = re.compile(r"\b(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|sixth|6th|seventh|7th|eighth|8th"
                      r"|last|top)\b(?=(?:\s+([a-z'-]+))?(?:\s+([a-z'-]+))?(?:\s+([a-z'-]+))?)", re.I)  # fmt: skip
_NUMBER = re.compile(r"(?:\bnumber\s+|#|\bno\.\s*)([1-9])\b", re.I)
_THAT = re.compile(r"\b(?:that|this)\s+(?:one|[a-z]+)\b|\bit\b", re.I)
_MENTIONED = re.compile(r"\b(?:mention|mentioned|said|named|suggested|recommended)\b", re.I)
_SEEN = re.compile(r"\b(?:already|again|re-?watch|re-?play|re-?read|(?:have|i've|i have|i)\s+(?:seen|watched|"
                   r"played|read)|seen before|from my history)\b", re.I)  # fmt: skip
_ABOUT = re.compile(r"\b(?:why|explain|what makes|how come|tell me (?:more )?about|more about|what is|what's|"
                    r"is it|would i (?:like|enjoy)|should i)\b", re.I)  # fmt: skip
_LIKE = re.compile(r"\b(?:like|similar to|such as|more of|in the vein of|along the lines of)\s+$", re.I)
_LIKE_REF = re.compile(r"\b(like|similar to|more of)\s+(?:it|that(?:\s+one)?|this(?:\s+one)?|the\s+\w+(?:\s+one)?"
                       r"|number\s+\d|#\d)\b", re.I)  # fmt: skip
_NON_ORDINAL_NEXT = {"time", "year", "years", "decade", "century", "night", "week", "few", "couple"}
# Words that imply a category the catalog may have ("funnier" -> Comedy); used only for categories
# the catalog has, matched case-insensitively.
_IMPLIED = {
    "comedy": r"funn(?:y|ier|iest)|hilarious|laugh\w*|comic",
    "horror": r"scar(?:y|ier|iest)|frighten\w*|creepy",
    "romance": r"romantic|love stor(?:y|ies)",
    "thriller": r"thrilling|suspense\w*|tense",
    "animation": r"animated|cartoons?",
    "children's": r"kids?|children|family",
    "sci-fi": r"science fiction|space|futuristic",
    "action": r"action-packed|explosive",
    "documentary": r"documentar(?:y|ies)|true story",
    "musical": r"musicals?|singing",
}


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


_LIKER = {"i", "you", "we", "they", "would", "will", "do", "does", "did", "might", "may", "d", "really", "not"}


def _anchored(before: str) -> bool:
    """Whether the text before a reference ends with "like" / "similar to" used as a comparison
    ("something like", "more like") rather than the verb ("would I like", "I really like")."""
    if not _LIKE.search(before):
        return False
    words = re.findall(r"[a-z]+", before.lower())
    return not (words[-1:] == ["like"] and len(words) >= 2 and words[-2] in _LIKER)


def wanted_categories(question: str, categories: Sequence[str], named: Sequence[str] = ()) -> list[str]:
    """Catalog categories the question asks for: those it names (``named``, from the title
    matcher) and those a word implies ("funnier" -> Comedy), kept only where the catalog has them."""
    by_lower = {c.lower(): c for c in categories}
    out = [c for c in named if c in categories]
    for cat, words in _IMPLIED.items():
        if cat in by_lower and re.search(rf"\b(?:{words})\b", question, re.I):
            out.append(by_lower[cat])
    return list(dict.fromkeys(out))


def resolve(
    question: str,
    shown: Sequence[str],
    *,
    subject: Sequence[str] = (),
    mentioned: Sequence[str] = (),
    titles: Sequence[tuple[int, str]] = (),
    protected: Sequence[tuple[int, int]] = (),
) -> list[str]:
    """Item ids the question refers to, in the order it refers to them.

    ``shown``: the list shown last (ordinals index it); ``subject``: what the conversation is about
    ("that one", "it"); ``mentioned``: the items the previous answer named, in order ("the last
    movie you mentioned"); ``titles``: (position, item id) of the catalog titles the question names;
    ``protected``: the character spans of those titles, whose words ("First Wives Club", "That Thing
    You Do!") are not references."""
    refs: list[tuple[int, str]] = []

    def free(m: re.Match) -> bool:
        return not any(a <= m.start() < b for a, b in protected)

    for m in filter(free, _ORDINAL.finditer(question)):
        following = [w.lower() for w in m.groups()[1:] if w]
        if following and (following[0] in _NON_ORDINAL_NEXT or following[:2] == ["of", "all"]):  # "last year"
            continue
        pool = mentioned if m.group(1).lower() == "last" and _MENTIONED.search(" ".join(following)) else shown
        if pool:
            k = _ORDINALS[m.group(1).lower()]
            if k < len(pool):
                refs.append((m.start(), pool[k]))
    for m in filter(free, _NUMBER.finditer(question)):
        k = int(m.group(1)) - 1
        if k < len(shown):
            refs.append((m.start(), shown[k]))
    refs += list(titles)
    if not refs:
        m = next(filter(free, _THAT.finditer(question)), None)
        target = list(subject) or list(shown[:1])
        if m and target:
            refs.append((m.start(), target[0]))
    return list(dict.fromkeys(i for _, i in sorted(refs, key=lambda r: r[0])))


def intent(question: str, references: Sequence[str], anchors: Sequence[str]) -> Literal["about", "like", "recommend"]:
    """What a message asks for: ``like`` when it names an anchor ("like Alien"), ``about`` when
    it asks why/about referenced items, else ``recommend``."""
    if anchors:
        return "like"
    if references and _ABOUT.search(question):
        return "about"
    if references and not re.search(r"\b(?:recommend|suggest|something|anything|another|others?|more)\b",
                                    question, re.I):  # fmt: skip
        return "about"  # "and the second one?"
    return "recommend"


@dataclass(frozen=True)
class ChatTurn:
    """A message resolved, before the model writes (:meth:`ChatSession.prepare`): the question as
    used, what it asks (``kind``), the items it offers or is about (with their evidence), the items
    it referred to, whether seen items were asked for, notes and the prompt ``messages``."""

    question: str
    kind: Literal["about", "like", "recommend"]
    items: tuple[RankedItem, ...]
    references: tuple[str, ...]
    include_seen: bool
    notes: tuple[str, ...]
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class ChatAnswer:
    """One turn: the question as used, the answer to show, the items it offers or is about (with
    their evidence), what the model wrote, its grounding, any fallback and notes, the items the
    message referred to and what it asked (``intent``)."""

    question: str
    text: str
    items: tuple[RankedItem, ...]
    model_text: str
    grounding: Grounding
    fallback: str | None = None
    notes: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    intent: str = "recommend"
    include_seen: bool = False


@dataclass
class ChatSession:
    """A multi-turn conversation about one user's recommendations in one scenario."""

    recommender: ChatHost
    scenario: Scenario
    history: UserHistory
    user_id: str | None = None
    fallback: str | None = None  # how the user was resolved (e.g. unknown user)
    turns: list[ChatAnswer] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # the item list shown last, in order
    subject: list[str] = field(default_factory=list)  # what the conversation is about now

    def recommendations(self, k: int | None = None) -> tuple[RankedItem, ...]:
        """The user's recommendations (the list "the first one" refers to before any answer)."""
        rec = self.recommender
        k = min(k or rec.config.chat_candidates, rec.config.candidates)
        if self.user_id is not None and self.history is not None and self.fallback is None:
            res = rec.recommend(self.user_id, scenario=self.scenario.name, k=k)
        else:
            res = rec.recommend(history=list(self.history.item_ids), scenario=self.scenario.name, k=k)
        self.shown = res.item_ids
        return res.items

    def show_retrieved(self, k: int | None = None) -> list[str]:
        """Show the retriever's top ``k`` unseen items (default ``chat_candidates``) as the list
        "the first one" refers to, without a model call (training and validation conversations)."""
        k = k or self.recommender.config.chat_candidates
        seen = set(self.history.item_ids)
        res = self.scenario.retriever.retrieve(histories=[list(self.history.item_ids)], k=k + len(seen))[0]
        self.shown = [c.item_id for c in res.candidates if c.item_id not in seen][:k]
        return self.shown

    # ------------------------------------------------------------------ retrieval
    def _pool(self, query: str, anchors: Sequence[str], keep: Callable[[Item], bool] | None, wanted: Sequence[str],
              include_seen: bool, n: int, notes: list[str]) -> list[str]:  # fmt: skip
        sc, seen = self.scenario, set(self.history.item_ids)
        fused: dict[str, float] = {}
        pool = min(RRF_POOL, len(sc.retriever.index))
        seeds = list(anchors) or list(self.history.item_ids)
        if seeds:
            res = sc.retriever.retrieve(histories=[seeds], k=pool, exclude_seen=not include_seen)[0]
            rrf_add(fused, (c.item_id for c in res.candidates))  # candidates come in rank order
        if include_seen:  # the history itself, most recent first
            rrf_add(fused, reversed(self.history.item_ids))
        if sc.text is not None:
            scores = sc.text.encode_text([query])[0] @ sc.text.vectors.T  # (N,) cosine to the question
            order = [sc.text.item_ids[j] for j in np.argsort(-scores, kind="stable")]
            if keep is not None or wanted:  # a filter: search the whole catalog, not just the top of it
                order = [i for i in order if i in sc.catalog and self._fits(sc.catalog[i], keep, wanted)]
            rrf_add(fused, order[:pool])
        else:
            notes.append("no text encoder in this scenario: items retrieved from the history only")
        ranked = sorted(fused, key=lambda i: -fused[i])
        picked = [i for i in ranked if i not in anchors and (include_seen or i not in seen) and i in sc.catalog]
        if keep is not None:
            picked = [i for i in picked if keep(sc.catalog[i])]
        if wanted:
            matching = [i for i in picked if self._fits(sc.catalog[i], None, wanted)]
            if matching:
                picked = matching
            else:
                notes.append(f"no item matches {', '.join(wanted)}: not filtered by it")
        if include_seen:
            picked = [i for i in picked if i in seen] or picked
        return picked[:n]

    @staticmethod
    def _fits(item: Item, keep: Callable[[Item], bool] | None, wanted: Sequence[str]) -> bool:
        return (keep is None or keep(item)) and (not wanted or any(c in item.categories for c in wanted))

    # ------------------------------------------------------------------ one turn
    def prepare(self, question: str) -> ChatTurn:
        """What ``question`` asks, before the model writes: references resolved, the items retrieved
        (or referred to) with their evidence, and the prompt; raises for an empty message. The
        session's state changes only when a turn is committed (:meth:`ask`, :meth:`commit`)."""
        rec, sc = self.recommender, self.scenario
        budget = rec.budget
        raw = clean_text(question)
        if not raw:
            raise RagrecError("empty chat message")
        q = sanitize(raw, budget.max_user_chars)
        notes = []
        if len(raw) > budget.max_user_chars:
            notes.append(f"message cut from {len(raw)} to {budget.max_user_chars} characters")
        if not self.shown and (_ORDINAL.search(q) or _NUMBER.search(q)):
            self.recommendations()  # "the first one" before any answer: the user's recommendations
        previous = self.turns[-1] if self.turns else None
        mentioned = sc.matcher.cited(previous.text) if previous else []  # what the last answer showed
        spans = {i: sc.matcher.title_spans(q, i) or [(len(q), len(q))] for i in sc.matcher.cited(q) if i in sc.catalog}
        titles = [(s[0][0], i) for i, s in spans.items()]
        refs = resolve(q, self.shown, subject=self.subject, mentioned=mentioned, titles=titles,
                       protected=[span for s in spans.values() for span in s])  # fmt: skip
        anchors = [i for a, i in titles if _anchored(q[:a])]
        m = _LIKE_REF.search(q)
        if not anchors and refs and m and _anchored(q[: m.end(1)] + " "):  # "something like it / the first one"
            anchors = refs[:1]
        kind = intent(q, refs, anchors)
        include_seen = bool(_SEEN.search(q))
        keep, described = year_filter(q)
        if described:
            notes.append(f"filter: {described}")
        wanted = wanted_categories(q, sc.categories, sc.matcher.stated(q)[0])
        if wanted:
            notes.append(f"wanted: {', '.join(wanted)}")
        if kind == "about":
            ids = refs[:3]
        else:
            query = f"{' '.join(clean_text(sc.catalog[a].title) or '' for a in anchors)} {q}".strip()
            if kind == "recommend" and previous is not None and not refs:
                query = f"{previous.question} {q}"  # a follow-up ("only 90s ones") refines the last question
            ids = self._pool(query, anchors, keep, wanted, include_seen, rec.config.chat_candidates, notes)
            if not ids and (keep is not None or wanted):
                notes.append(f"no {'seen' if include_seen else 'unseen'} item matches the filter")
        evidence = self._evidence(ids)
        items = tuple(RankedItem(i, 1.0 / r, r, None, None, e) for r, (i, e) in enumerate(zip(ids, evidence), 1))
        return ChatTurn(q, kind, items, tuple(refs), include_seen, tuple(notes), self._messages(q, kind, items))

    def ask(self, question: str) -> ChatAnswer:
        """Answer one question; raises for an empty one. Long messages are cut (reported in ``notes``)."""
        turn = self.prepare(question)
        with self.recommender.use(self.scenario):
            text = generate_text(self.recommender.backend_for(self.scenario), turn.messages, self._template().output,
                                 self.scenario.matcher.sentences)  # fmt: skip
        return self.commit(turn, text)

    def commit(self, turn: ChatTurn, text: str) -> ChatAnswer:
        """Check the model's ``text`` for ``turn`` (from :meth:`prepare`), keep its complete sentences
        that pass (else answer from the data, saying why) and add the turn to the conversation."""
        sc = self.scenario
        res = check_sentences(text, sc.matcher.sentences, self._template().output.max_sentences,
                              lambda t: self.check(turn, t),
                              lambda t: bool({i.item_id for i in turn.items} & set(sc.matcher.cited(t))))  # fmt: skip
        if res.text:  # the answer names the items it is about or offers
            grounding, answer, fallback, more = res.passed, res.text, None, list(res.notes)
        else:
            if not text:
                why = "the model wrote nothing"
            elif res.failed is not None:
                why = res.failed.reason("the history and the items offered")
            elif res.unsupported:
                why = "the model's answer named none of the items it is about or offers"
            else:
                why = "the model's text ended mid-sentence"
            grounding, more = res.failed or self.check(turn, text), []
            answer, fallback = self.data_answer(turn.kind, turn.items), f"{why}; answered from the data"
        out = ChatAnswer(turn.question, answer, turn.items, text, grounding, fallback, turn.notes + tuple(more),
                         turn.references, turn.kind, turn.include_seen)  # fmt: skip
        self.turns.append(out)
        ids = [i.item_id for i in turn.items]
        if turn.kind == "about":
            self.subject = ids
        else:
            self.shown, self.subject = ids, ids[:1]
        return out

    def check(self, turn: ChatTurn, text: str) -> Grounding:
        """The grounding check of an answer to ``turn``: it may name the history and the items offered."""
        allowed = set(self.history.item_ids) | {i.item_id for i in turn.items}
        return self.scenario.matcher.check(text, allowed, about={i.item_id for i in turn.items},
                                           history=list(self.history.item_ids),
                                           prompt=prompt_text(self._template(), turn.question))  # fmt: skip

    def record(self, question: str, answer: str) -> ChatAnswer:
        """Take an earlier turn of this conversation as given, without a model call: a stateless
        client (the OpenAI chat API) sends the whole conversation every time. The items the answer
        names, in order, become the list "the first one" refers to; the turn is checked like a
        fresh answer (``grounding``) and noted as replayed."""
        sc = self.scenario
        q = sanitize(clean_text(question) or "", self.recommender.budget.max_user_chars)
        cited = [i for i in sc.matcher.cited(answer) if i in sc.catalog]
        items = tuple(
            RankedItem(i, 1.0 / r, r, None, None, e) for r, (i, e) in enumerate(zip(cited, self._evidence(cited)), 1)
        )
        grounding = sc.matcher.check(
            answer, set(self.history.item_ids) | set(cited), history=list(self.history.item_ids)
        )
        turn = ChatAnswer(q, answer, items, answer, grounding, None, ("replayed from the conversation sent",))
        self.turns.append(turn)
        if cited:
            self.shown, self.subject = cited, cited[:1]
        return turn

    def _evidence(self, ids: Sequence[str]) -> list[tuple[Evidence, ...]]:
        n = self.recommender.config.evidence
        if not ids or not n or not self.history.item_ids:
            return [() for _ in ids]
        return evidence_for(self.scenario.retriever.encoder, self.scenario.catalog, self.history.item_ids, ids, n)

    def _lines(self, items: Sequence[RankedItem]) -> str:
        sc, budget = self.scenario, self.recommender.budget
        lines = []
        for it in items:
            line = sanitize(_name(sc.catalog[it.item_id]) + _cats(sc.catalog[it.item_id]), budget.max_item_chars)
            because = [sanitize(clean_text(e.title) or e.item_id, 60) for e in it.evidence[:2]]
            lines.append(
                f"{it.rank}. {line}" + (f" (because of {' and '.join(because)} in your history)" if because else "")
            )
        return "\n".join(lines) if lines else "(none)"

    def _template(self) -> PromptTemplate:
        template = self.recommender.template(self.scenario, "chat")
        template.require_output("text")
        return template

    def _messages(self, q: str, kind: str, items: tuple[RankedItem, ...]) -> list[dict[str, str]]:
        """The chat prompt of one turn: the template's messages with the earlier turns in between."""
        rec, sc = self.recommender, self.scenario
        budget = rec.budget
        template = self._template()
        hist = rec.history_items(sc, self.history.item_ids)[-budget.max_history :]
        about = ""
        if kind == "about" and items:
            about = f"I am asking about: {'; '.join(_name(sc.catalog[i.item_id]) for i in items)}\n"
        earlier = []
        for turn in self.turns[-rec.config.chat_turns :] if rec.config.chat_turns else []:
            earlier += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.text}]

        def with_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
            return messages[:1] + earlier + messages[1:]

        messages, _ = fit_history(
            template,
            lambda n: {
                "item_noun": sc.config.item_noun,
                "candidates": self._lines(items),
                "about": about,
                "question": q,
                "history": history_block(hist[len(hist) - n :] if n else [], budget),
            },  # fmt: skip
            lambda m: count_tokens(rec.loaded.tokenizer, with_turns(m)),
            budget,
        )
        return with_turns(messages)

    def data_answer(self, kind: str, items: Sequence[RankedItem]) -> str:
        """An answer built from the items and their evidence alone (also what the chat adapter learns
        to write: titles as the lists show them, without years, each item before its evidence)."""
        sc = self.scenario
        noun = sc.config.item_noun
        if not items:
            return f"I found no {noun} in the catalog that fits; try another request."
        if kind == "about":
            out = []
            hist = self.recommender.history_items(sc, self.history.item_ids)[-self.recommender.budget.max_history :]
            for it in items:
                item = sc.catalog[it.item_id]
                because = [clean_text(e.title) for e in it.evidence[:2] if e.title]
                if because:
                    shared = sorted({c for e in it.evidence[:2] if e.title for c in e.shared})
                    also = f"; it is also {', '.join(shared[:3])}" if shared else ""
                    out.append(f"{_title(item)} is there because of {' and '.join(because)} in your history{also}.")
                else:
                    out.append(attribute_explanation(item, hist, noun))
            return " ".join(out)
        names = [_title(sc.catalog[i.item_id]) for i in items[:3]]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        first = items[0]
        because = [clean_text(e.title) for e in first.evidence[:2] if e.title]
        why = f" {names[0]} is there because of {' and '.join(because)} in your history." if because else ""
        return f"You may like {listed}.{why}"


def _title(item: Item) -> str:
    return clean_text(item.title) or item.item_id


def _name(item: Item) -> str:
    return display_name(item.title, item.year, item.item_id)


def _cats(item: Item) -> str:
    return f", {', '.join(item.categories[:3])}" if item.categories else ""
