"""Grounding checks for free text the model writes (explanations, chat answers).

A small LM names items that do not exist, or items the user never saw, with confidence, and
invents facts about real ones ("Titanic, a gripping horror film"). We find which catalog titles a
text names (whole-word, case-insensitive match of each title, with and without its year), which
quoted spans ("...") name no catalog item at all, which words are a catalog title written wrong
("Young Gangs II" for Young Guns II: the same first word and almost the same words), and which
attributes it states: the catalog's
category names (singular or plural: "comedy", "comedies", "film noir") and years or decades
("1997", "1990s"), outside the titles it names. A text is *grounded* when it names no unknown
quoted title, every catalog item it names is in the allowed set (the user's history, the
recommended item, the retrieved candidates), and every attribute it states belongs to an item the
text is about (the explained item, the items a chat answer offers) or names, and it misquotes no
title. "You like action
films" about a drama that names no action film fails: strict, since the fallback is cheap and
a small LM's taste statements are often invented. Unquoted invented titles cannot be told from
ordinary words, and attributes the catalog does not record (directors, plots) cannot be checked;
those limits are documented, not hidden.

Beyond facts, a text must read like an answer: degenerate repetition ("the genre of the genre of
the genre"), text that mostly repeats the prompt's own wording or talks about "the user's
question", and a recommended item presented as something the user already watched ("fits your
history of Conspiracy Theory", where Conspiracy Theory is the recommendation) are refused too.
:func:`sentences` splits a text into complete sentences (punctuation inside catalog titles such as
"Faster Pussycat! Kill! Kill!" does not end one), so answers are only ever shown whole sentences.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ragrec.data.text import clean_text, truncate
from ragrec.types import Item

__all__ = ["Grounding", "TitleMatcher", "attribute_explanation", "sentences", "repetition", "echoes"]

_QUOTED = re.compile(r"[\"“”«»]([^\"“”«»\n]{2,80})[\"“”«»]")
_WORD = re.compile(r"\w+", re.UNICODE)
_YEAR = re.compile(r"(18[89]|19\d|20[0-4])\d|(18[89]|19\d|20[0-4])0s")  # 1880-2049, or a decade "1990s"
_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|el|die|der|das)$", re.I)  # "Usual Suspects, The"
_SENT_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_ABBREV = re.compile(r"(?:\b(?:mr|mrs|ms|dr|st|vs|jr|sr|vol|no|etc|e\.g|i\.e)|\b[a-z])\.$", re.I)
# A recommended item written as if it were in the user's past ("you watched X", "history of X").
_PAST_CUE = re.compile(
    r"\b(?:watched|seen|saw|enjoyed|liked|loved|rated|played|bought|owned|read|history(?: of| includes| with| like)?"
    r"|past)\s+(?:[\w'-]+\s+){0,2}[\"“]?$", re.I)  # fmt: skip
# The prompt's own list layout copied back ("1. Heat (1995) | Crime" on its own line) instead of an answer.
_LIST_LINE = re.compile(r"(?m)^\s*(?:\d{1,2}[.)]|[-*\u2022])\s|\s\|\s")
# Words too common to start a misquoted title (see TitleMatcher.misquoted).
_COMMON = frozenset(["the", "a", "an", "of", "and", "in", "on", "to", "for", "with", "my", "your", "you", "i", "it",
                     "is", "are", "was", "be", "this", "that", "these", "those", "from", "at", "by", "as", "or", "but",
                     "not", "no", "so", "if", "all", "one", "two", "some", "more", "most", "very"])  # fmt: skip
# Talk about the exchange instead of the items ("the user's question", "The best answer is", "added to
# the list"), or a line that ends without punctuation inside the text (a heading, a list row).
_META = re.compile(
    r"\b(?:the user'?s?|your) (?:question|message|request)\b|\bI(?:'m| am) asking\b|\bas an ai\b|\blanguage model\b"
    r"|\b(?:the|this|my|your) (?:best |correct |right |final )?(?:answer|response)\b|\b(?:added|add) to (?:the|a|your) list\b"
    r"|[^\s.!?;\"'\u201d\u2019)\]][ \t]*\n[ \t]*\S", re.I)  # fmt: skip


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(clean_text(text).lower()))


def _title_forms(title: str) -> set[str]:
    """Normalised ways a title is written: as stored, and with a trailing article moved to the front."""
    base = clean_text(title)
    forms = {_norm(base)}
    m = _ARTICLE.match(base)
    if m:
        forms.add(_norm(f"{m.group(2)} {m.group(1)}"))
    return {f for f in forms if len(f) >= 3}


def _plural(form: str) -> str:
    head, _, last = form.rpartition(" ")
    last = last[:-1] + "ies" if last.endswith("y") and last[-2:-1] not in "aeiou" else last + "s"
    return f"{head} {last}".strip()


@dataclass(frozen=True)
class Grounding:
    """What a text names: catalog items (``cited``), the subset outside the allowed set
    (``outside``), quoted titles that are not in the catalog (``unknown``), and stated categories
    or years that no allowed item has (``unsupported``)."""

    cited: tuple[str, ...]
    outside: tuple[str, ...]
    unknown: tuple[str, ...]
    unsupported: tuple[str, ...] = ()
    misattributed: tuple[str, ...] = ()  # recommended items presented as part of the user's past
    degenerate: str | None = None  # the repetition found, if any
    echo: bool = False  # the text repeats the prompt, copies its layout or talks about the exchange

    @property
    def grounded(self) -> bool:
        return not (self.outside or self.unknown or self.unsupported or self.misattributed or self.degenerate
                    or self.echo)  # fmt: skip

    def reason(self, allowed: str = "the user's history") -> str:
        """Why the text is not grounded, in words ('' when it is)."""
        parts = []
        if self.outside:
            parts.append(f"named items outside {allowed}: {list(self.outside)}")
        if self.unknown:
            parts.append(f"named titles not in the catalog: {list(self.unknown)}")
        if self.unsupported:
            parts.append(f"stated categories or years that none of those items has: {list(self.unsupported)}")
        if self.misattributed:
            parts.append(f"presented recommended items as already seen: {list(self.misattributed)}")
        if self.degenerate:
            parts.append(f"wrote degenerate text ({self.degenerate})")
        if self.echo:
            parts.append("repeated the prompt or talked about the exchange instead of answering")
        return "the model " + " and ".join(parts) if parts else ""


class TitleMatcher:
    """Finds the catalog items and attributes a text names. Built once per catalog (normalised
    titles and category names by first word)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._cats_by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._forms: set[str] = set()
        self._attrs: dict[str, tuple[frozenset[str], int | None]] = {}
        self._punct_titles: list[str] = []  # titles whose punctuation must not end a sentence
        self._titles: dict[str, str] = {}
        self._prompt: tuple[str, list[str]] = ("", [])  # the last prompt masked (check runs per sentence prefix)
        for item in items:
            self._attrs[item.item_id] = (frozenset(item.categories), item.year)
            if item.title:
                self._titles[item.item_id] = item.title
            for cat in item.categories:
                for form in {_norm(cat), _plural(_norm(cat))} - {""}:
                    words = tuple(form.split())
                    if (words, cat) not in self._cats_by_first.get(words[0], []):
                        self._cats_by_first.setdefault(words[0], []).append((words, cat))
            if not item.title:
                continue
            if re.search(r"[.!?]\s", clean_text(item.title) + " "):
                self._punct_titles.append(clean_text(item.title))
            for form in _title_forms(item.title):
                words = tuple(form.split())
                self._by_first.setdefault(words[0], []).append((words, item.item_id))
                self._forms.add(form)
        self._punct_titles.sort(key=len, reverse=True)
        self._protect = (
            re.compile("|".join(re.escape(t) for t in self._punct_titles), re.I) if self._punct_titles else None
        )

    def protected(self, text: str) -> list[tuple[int, int]]:
        """Character spans of catalog titles in ``text`` whose punctuation ("Kill! Kill!") does not
        end a sentence."""
        return [m.span() for m in self._protect.finditer(text)] if self._protect else []

    def title_spans(self, text: str, item_id: str) -> list[tuple[int, int]]:
        """Character spans where ``text`` names ``item_id``'s title (any of its written forms)."""
        spans = []
        for form in _title_forms(self._titles.get(item_id, "")):
            pattern = r"\b" + r"\W+".join(re.escape(w) for w in form.split()) + r"\b"
            spans += [m.span() for m in re.finditer(pattern, text, re.I)]
        return sorted(set(spans))

    def masked_words(self, text: str) -> list[str]:
        """``text``'s normalised words with every catalog title it names replaced by one word, its
        item id in brackets: a list of titles is not a repetition, the same title over and over is."""
        words = _norm(text).split()
        out, last = [], 0
        for i, n, item_id in self._spans(words, self._by_first):
            out += words[last:i] + [f"<{item_id}>"]
            last = i + n
        return out + words[last:]

    @staticmethod
    def _spans(words: list[str], index: dict[str, list[tuple[tuple[str, ...], str]]]) -> list[tuple[int, int, str]]:
        """(start, length, value) of the longest whole-word matches of ``index`` in ``words``."""
        out, i = [], 0
        while i < len(words):
            best: tuple[int, str] | None = None
            for form, value in index.get(words[i], ()):
                if tuple(words[i : i + len(form)]) == form and (best is None or len(form) > best[0]):
                    best = (len(form), value)
            if best:
                out.append((i, *best))
                i += best[0]
            else:
                i += 1
        return out

    def cited(self, text: str) -> list[str]:
        """Item ids whose title appears in ``text`` as whole words, longest match first, in order."""
        return list(dict.fromkeys(v for _, _, v in self._spans(_norm(text).split(), self._by_first)))

    def misquoted(self, text: str, similarity: float = 0.75) -> list[str]:
        """Words of ``text`` (outside the titles it names) that are a catalog title written wrong:
        they start like a title of two or more words (same first word, not a common word) and read
        almost like it ("Young Gangs II" for Young Guns II, "Apollo 20" for Apollo 13)."""
        from difflib import SequenceMatcher

        words = _norm(text).split()
        in_title = {i + k for i, n, _ in self._spans(words, self._by_first) for k in range(n)}
        out = []
        for i, w in enumerate(words):
            if i in in_title or w in _COMMON:
                continue
            for form, _ in self._by_first.get(w, ()):
                got = words[i : i + len(form)]
                if len(form) < 2 or len(got) < len(form) or any(i + k in in_title for k in range(len(form))):
                    continue
                if SequenceMatcher(None, " ".join(got), " ".join(form)).ratio() >= similarity:
                    out.append(" ".join(got))
                    break
        return list(dict.fromkeys(out))

    def stated(self, text: str) -> tuple[list[str], list[str]]:
        """Categories and years/decades (as written) that ``text`` states outside the titles it names."""
        words = _norm(text).split()
        in_title = {i + k for i, n, _ in self._spans(words, self._by_first) for k in range(n)}
        rest = [w if j not in in_title else "" for j, w in enumerate(words)]
        cats = list(dict.fromkeys(v for _, _, v in self._spans(rest, self._cats_by_first)))
        years = list(dict.fromkeys(w for w in rest if _YEAR.fullmatch(w)))
        return cats, years

    def unsupported(self, text: str, allowed: Collection[str], history: Sequence[str] = ()) -> list[str]:
        """Stated categories and years that no item of ``allowed`` has (a decade: no year in it).
        With ``history`` (the user's items), a year of any history item is accepted, and so is a
        category that at least a fifth (and two) of the history items have: "you like dramas" is
        true of a user whose history is a third dramas, whichever of them the text names."""
        cats, years = self.stated(text)
        known = [self._attrs[i] for i in allowed if i in self._attrs]
        have_cats = set().union(*(c for c, _ in known)) if known else set()
        have_years = {y for _, y in known if y}
        if history:
            past = [self._attrs[i] for i in dict.fromkeys(history) if i in self._attrs]
            have_years |= {y for _, y in past if y}
            counts = Counter(c for cs, _ in past for c in cs)
            have_cats |= {c for c, n in counts.items() if n >= max(2, len(past) / 5)}
        out = [c.lower() for c in cats if c not in have_cats]
        for w in years:
            decade = w.endswith("s")
            y = int(w[:4])
            if not any((y <= h < y + 10) if decade else h == y for h in have_years):
                out.append(w)
        return out

    def check(
        self,
        text: str,
        allowed: Collection[str],
        about: Collection[str] | None = None,
        *,
        history: Sequence[str] = (),
        prompt: str = "",
    ) -> Grounding:
        """Ground ``text`` against the catalog, allowing the item ids in ``allowed``. Stated
        attributes must belong to an item of ``about`` (what the text is about: the explained
        item, the items a chat answer offers), to an allowed item the text names, or to the
        user's ``history`` (see :meth:`unsupported`); without ``about``, to any allowed item.
        With ``history``, an item outside it that the text presents as seen ("you watched X") is
        refused; with ``prompt`` (the instructions and the user's message, not the data), text that
        mostly repeats it is, and so is text that copies the prompt's list layout (numbered or bulleted
        lines, "Title | categories"), and text that talks about the exchange ("the best answer is",
        "added to the list") or breaks a line mid-sentence. Degenerate repetition is always refused."""
        cited = self.cited(text)
        unknown = []
        for span in _QUOTED.findall(text):
            form = _norm(re.sub(r"\(\d{4}\)", "", span))
            if form and form not in self._forms:
                unknown.append(span.strip())
        unknown += [m for m in self.misquoted(text) if m not in unknown]
        support = allowed if about is None else set(about) | {i for i in cited if i in allowed}
        seen = set(history)
        misattributed = []
        if history:
            for i in cited:
                if i not in seen and any(
                    _PAST_CUE.search(text[max(0, a - 60) : a]) for a, _ in self.title_spans(text, i)
                ):
                    misattributed.append(i)
        words = self.masked_words(text)
        return Grounding(tuple(cited), tuple(i for i in cited if i not in allowed), tuple(unknown),
                         tuple(self.unsupported(text, support, history)), tuple(misattributed), repetition(words),
                         echoes(words, self._masked_prompt(prompt)) or bool(_META.search(text) or _LIST_LINE.search(text)))  # fmt: skip

    def _masked_prompt(self, prompt: str) -> list[str]:
        """:meth:`masked_words` of ``prompt``, kept for the next call with the same prompt."""
        last = self._prompt  # one read: another thread may replace it meanwhile
        if last[0] != prompt or not prompt:
            last = (prompt, self.masked_words(prompt))
            self._prompt = last
        return last[1]

    def sentences(self, text: str) -> tuple[list[str], str]:
        """:func:`sentences` with this catalog's titles protected."""
        return sentences(text, self.protected(text))


def sentences(text: str, protected: Sequence[tuple[int, int]] = ()) -> tuple[list[str], str]:
    """Complete sentences of ``text`` and the unfinished rest ('' when it ends a sentence).

    A sentence ends at ``.``, ``!`` or ``?`` (closing quotes and brackets kept) before white space
    or the end, except inside a ``protected`` span (a title) or after an abbreviation ("Dr.",
    "vs.", an initial)."""
    out, start = [], 0
    for m in _SENT_END.finditer(text):
        end = m.end()
        if any(a <= m.start() < b for a, b in protected) or _ABBREV.search(text[start : m.start() + 1]):
            continue
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out, text[start:].strip()


def repetition(words: Sequence[str]) -> str | None:
    """The degenerate repetition in ``words`` (normalised, titles masked: :meth:`TitleMatcher.masked_words`), or ``None``: a unit of
    one to four words repeated back to back to four words or more ("algorithm s algorithm s"),
    a three-word sequence three times, or a four-word one twice."""
    words = list(words)
    for n in (1, 2, 3, 4):
        for i in range(len(words) - 2 * n + 1):
            unit = words[i : i + n]
            copies = 1
            while words[i + copies * n : i + (copies + 1) * n] == unit:
                copies += 1
            if copies >= 2 and copies * n >= 4:
                return f"'{' '.join(unit)}' {copies} times in a row"
    for n, limit in ((3, 3), (4, 2)):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        for gram, count in grams.most_common(1):
            if count >= limit:
                return f"'{' '.join(gram)}' {count} times"
    return None


def echoes(words: Sequence[str], prompt_words: Sequence[str], share: float = 0.5) -> bool:
    """Whether at least ``share`` of the text's word 4-grams (and at least three) occur in the
    prompt: the model repeated its instructions or the question instead of answering."""
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    if len(grams) < 3 or not prompt_words:
        return False
    known = {tuple(prompt_words[i : i + 4]) for i in range(len(prompt_words) - 3)}
    return sum(g in known for g in grams) >= share * len(grams)


def _label(item: Item, item_noun: str) -> str:
    """An item's title, else ``"<noun> <id>"`` plus its description (bounded) in brackets."""
    if item.title:
        return clean_text(item.title)
    what = f" ({truncate(clean_text(item.description), 70)})" if item.description else ""
    return f"{item_noun} {item.item_id}{what}"


def attribute_explanation(
    item: Item, history: Sequence[Item], item_noun: str = "item", evidence: Sequence[Item] = ()
) -> str:
    """A grounded explanation built from data alone: the ``evidence`` items (the history items
    that drove the recommendation, strongest first) when given, else the history items that
    share the most categories with ``item`` (else the most recent ones). Used when the model's
    text fails the check. Items without a title are named by id, with their description
    (e.g. what their reviews mention) in brackets."""
    cats = set(item.categories)
    scored = sorted(
        ((len(cats & set(h.categories)), -pos, h) for pos, h in enumerate(reversed(history)) if h.title),
        key=lambda t: (t[0], t[1]),
        reverse=True,
    )
    picks = [h for h in evidence if h.title][:2] or [h for _, _, h in scored[:2]] or list(evidence[:1])
    name = _label(item, item_noun)
    if not picks:
        what = f" ({', '.join(item.categories[:3])})" if item.categories else ""
        return f"{name}{what} is popular with users like you."
    shared = sorted(cats & set().union(*(set(p.categories) for p in picks)))
    liked = " and ".join(_label(p, item_noun) for p in picks)
    if shared:
        return f"You enjoyed {liked}; {name} is also {', '.join(shared[:3])}."
    return f"You enjoyed {liked}, and users with that taste often choose {name}."
