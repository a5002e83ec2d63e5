"""Grounding checks for free text the model writes (explanations, chat answers).

A small LM names items that do not exist, or items the user never saw, with confidence, and
invents facts about real ones ("Titanic, a gripping horror film"). We find which catalog titles a
text names (whole-word, case-insensitive match of each title, with and without its year), which
quoted spans ("...") name no catalog item at all, and which attributes it states: the catalog's
category names (singular or plural: "comedy", "comedies", "film noir") and years or decades
("1997", "1990s"), outside the titles it names. A text is *grounded* when it names no unknown
quoted title, every catalog item it names is in the allowed set (the user's history, the
recommended item, the retrieved candidates), and every attribute it states belongs to an item the
text is about (the explained item, the items a chat answer offers) or names. "You like action
films" about a drama that names no action film fails: strict, since the fallback is cheap and
a small LM's taste statements are often invented. Unquoted invented titles cannot be told from
ordinary words, and attributes the catalog does not record (directors, plots) cannot be checked;
those limits are documented, not hidden.
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
_YEAR = re.compile(r"(18[89]|19\d|20[0-4])\d|(18[89]|19\d|20[0-4])0s")  # 1880-2049, or a decade "1990s"
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

    @property
    def grounded(self) -> bool:
        return not self.outside and not self.unknown and not self.unsupported

    def reason(self, allowed: str = "the user's history") -> str:
        """Why the text is not grounded, in words ('' when it is)."""
        parts = []
        if self.outside:
            parts.append(f"named items outside {allowed}: {list(self.outside)}")
        if self.unknown:
            parts.append(f"named titles not in the catalog: {list(self.unknown)}")
        if self.unsupported:
            parts.append(f"stated categories or years that none of those items has: {list(self.unsupported)}")
        return "the model " + " and ".join(parts) if parts else ""


class TitleMatcher:
    """Finds the catalog items and attributes a text names. Built once per catalog (normalised
    titles and category names by first word)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._cats_by_first: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self._forms: set[str] = set()
        self._attrs: dict[str, tuple[frozenset[str], int | None]] = {}
        for item in items:
            self._attrs[item.item_id] = (frozenset(item.categories), item.year)
            for cat in item.categories:
                for form in {_norm(cat), _plural(_norm(cat))} - {""}:
                    words = tuple(form.split())
                    if (words, cat) not in self._cats_by_first.get(words[0], []):
                        self._cats_by_first.setdefault(words[0], []).append((words, cat))
            if not item.title:
                continue
            for form in _title_forms(item.title):
                words = tuple(form.split())
                self._by_first.setdefault(words[0], []).append((words, item.item_id))
                self._forms.add(form)

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

    def stated(self, text: str) -> tuple[list[str], list[str]]:
        """Categories and years/decades (as written) that ``text`` states outside the titles it names."""
        words = _norm(text).split()
        in_title = {i + k for i, n, _ in self._spans(words, self._by_first) for k in range(n)}
        rest = [w if j not in in_title else "" for j, w in enumerate(words)]
        cats = list(dict.fromkeys(v for _, _, v in self._spans(rest, self._cats_by_first)))
        years = list(dict.fromkeys(w for w in rest if _YEAR.fullmatch(w)))
        return cats, years

    def unsupported(self, text: str, allowed: Collection[str]) -> list[str]:
        """Stated categories and years that no item of ``allowed`` has (a decade: no year in it)."""
        cats, years = self.stated(text)
        known = [self._attrs[i] for i in allowed if i in self._attrs]
        have_cats = set().union(*(c for c, _ in known)) if known else set()
        have_years = {y for _, y in known if y}
        out = [c.lower() for c in cats if c not in have_cats]
        for w in years:
            decade = w.endswith("s")
            y = int(w[:4])
            if not any((y <= h < y + 10) if decade else h == y for h in have_years):
                out.append(w)
        return out

    def check(self, text: str, allowed: Collection[str], about: Collection[str] | None = None) -> Grounding:
        """Ground ``text`` against the catalog, allowing the item ids in ``allowed``. Stated
        attributes must belong to an item of ``about`` (what the text is about: the explained
        item, the items a chat answer offers) or to an allowed item the text names; without
        ``about``, to any allowed item (lenient: a long history has every genre)."""
        cited = self.cited(text)
        unknown = []
        for span in _QUOTED.findall(text):
            form = _norm(re.sub(r"\(\d{4}\)", "", span))
            if form and form not in self._forms:
                unknown.append(span.strip())
        support = allowed if about is None else set(about) | {i for i in cited if i in allowed}
        return Grounding(tuple(cited), tuple(i for i in cited if i not in allowed), tuple(unknown),
                         tuple(self.unsupported(text, support)))  # fmt: skip


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
