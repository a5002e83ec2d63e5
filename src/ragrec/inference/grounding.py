"""Grounding checks for free text the model writes (explanations, chat answers).

A small LM names items that do not exist, or items the user never saw, with confidence. We find
which catalog titles a text names (whole-word, case-insensitive match of each title, with and
without its year) and which quoted spans ("...") name no catalog item at all. A text is
*grounded* when it names no unknown quoted title and every catalog item it names is in the
allowed set (the user's history, the recommended item, the retrieved candidates). Unquoted
invented titles cannot be told from ordinary words; that limit is documented, not hidden.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ragrec.data.text import clean_text
from ragrec.types import Item

__all__ = ["Grounding", "TitleMatcher", "attribute_explanation"]

_QUOTED = re.compile(r"[\"“”«»]([^\"“”«»\n]{2,80})[\"“”«»]")
_WORD = re.compile(r"\w+", re.UNICODE)
_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|il|el|die|der|das)$", re.I)  # "Usual Suspects, The"


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


@dataclass(frozen=True)
class Grounding:
    """What a text names: catalog items (``cited``), the subset outside the allowed set
    (``outside``), and quoted titles that are not in the catalog (``unknown``)."""

    cited: tuple[str, ...]
    outside: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def grounded(self) -> bool:
        return not self.outside and not self.unknown


class TitleMatcher:
    """Finds the catalog items a text names. Built once per catalog (normalised titles by first word)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._forms: set[str] = set()
        for item in items:
            if not item.title:
                continue
            for form in _title_forms(item.title):
                words = tuple(form.split())
                self._by_first.setdefault(words[0], []).append((words, item.item_id))
                self._forms.add(form)

    def cited(self, text: str) -> list[str]:
        """Item ids whose title appears in ``text`` as whole words, longest match first, in order."""
        words = _norm(text).split()
        found: list[str] = []
        i = 0
        while i < len(words):
            best: tuple[int, str] | None = None
            for title, item_id in self._by_first.get(words[i], ()):
                if tuple(words[i : i + len(title)]) == title and (best is None or len(title) > best[0]):
                    best = (len(title), item_id)
            if best:
                if best[1] not in found:
                    found.append(best[1])
                i += best[0]
            else:
                i += 1
        return found

    def check(self, text: str, allowed: Collection[str]) -> Grounding:
        """Ground ``text`` against the catalog, allowing the item ids in ``allowed``."""
        cited = self.cited(text)
        unknown = []
        for span in _QUOTED.findall(text):
            form = _norm(re.sub(r"\(\d{4}\)", "", span))
            if form and form not in self._forms:
                unknown.append(span.strip())
        return Grounding(tuple(cited), tuple(i for i in cited if i not in allowed), tuple(unknown))


def attribute_explanation(item: Item, history: Sequence[Item], item_noun: str = "item") -> str:
    """A grounded explanation built from data alone: the history items that share the most
    categories with ``item`` (else the most recent ones). Used when the model's text fails the check."""
    cats = set(item.categories)
    scored = sorted(
        ((len(cats & set(h.categories)), -pos, h) for pos, h in enumerate(reversed(history)) if h.title),
        key=lambda t: (t[0], t[1]),
        reverse=True,
    )
    picks = [h for _, _, h in scored[:2]]
    name = clean_text(item.title) or f"{item_noun} {item.item_id}"
    if not picks:
        what = f" ({', '.join(item.categories[:3])})" if item.categories else ""
        return f"{name}{what} is popular with users like you."
    shared = sorted(cats & set().union(*(set(p.categories) for p in picks)))
    liked = " and ".join(clean_text(p.title) for p in picks)
    if shared:
        return f"You enjoyed {liked}; {name} is also {', '.join(shared[:3])}."
    return f"You enjoyed {liked}, and users with that taste often choose {name}."
