"""Render an item as one bounded line of text, for prompts and text embeddings."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence

from ragrec.types import Item

__all__ = ["clean_text", "clean_review", "truncate", "render_item_text", "ITEM_TEXT_FIELDS"]

ITEM_TEXT_FIELDS = ("title", "year", "categories", "brand", "description")
_SPACE = re.compile(r"\s+")


def clean_text(text: str | None) -> str:
    """Unescape HTML entities (``&amp;``), drop control characters, collapse white space."""
    if not text:
        return ""
    text = html.unescape(text)
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return _SPACE.sub(" ", text).strip()


def clean_review(text: str | None, max_chars: int) -> str:
    """Whitespace collapsed, HTML breaks removed, cut at the last sentence end within ``max_chars``."""
    if not text:
        return ""
    text = re.sub(r"<br\s*/?>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s|$)", cut)]
    return cut[: ends[-1]] if ends else cut.rsplit(" ", 1)[0] + "..."


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is near, with '…'."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space >= max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def render_item_text(
    item: Item,
    *,
    fields: Sequence[str] = ("title", "year", "categories", "brand"),
    max_chars: int = 160,
    max_title_chars: int = 100,
    max_categories: int = 5,
) -> str:
    """``Item`` -> e.g. ``"Toy Story (1995) | Animation, Children's, Comedy"``, at most ``max_chars``.

    ``fields`` picks from ``title``, ``year``, ``categories``, ``brand``, ``description`` (in
    that display order). An item without any text renders as ``"item <id>"``. An item with no
    title, year, categories or brand (a catalog of ids) renders as ``"item <id> | <description>"``
    when ``title`` is among ``fields`` and it has a description (also when ``description`` is not
    among them): otherwise nothing would say what it is
    (see :func:`ragrec.data.reviews.describe_from_reviews`).
    """
    unknown = set(fields) - set(ITEM_TEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown item text fields {sorted(unknown)}; valid: {', '.join(ITEM_TEXT_FIELDS)}")
    head = truncate(clean_text(item.title), max_title_chars) if "title" in fields and item.title else ""
    if "year" in fields and item.year is not None:
        head = f"{head} ({item.year})" if head else str(item.year)
    parts = [head] if head else []
    if "categories" in fields and item.categories:
        cats = [clean_text(c) for c in item.categories[:max_categories]]
        parts.append(", ".join(c for c in cats if c))
    if "brand" in fields and item.brand:
        parts.append(f"by {clean_text(item.brand)}")
    if not parts and "title" in fields and item.description:  # an id-only catalog: say what the item is
        parts = [f"item {item.item_id}", clean_text(item.description)]
    elif "description" in fields and item.description:
        parts.append(clean_text(item.description))
    text = " | ".join(p for p in parts if p) or f"item {item.item_id}"
    return truncate(text, max_chars)
