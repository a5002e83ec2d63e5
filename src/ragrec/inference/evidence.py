"""Evidence: the history items that actually moved a recommended item's score.

A first-stage score is a function of the user's history. For EASE it is a sum of one term per
history item (``decay**age * B[h, item]``), so each history item's term *is* its contribution and
the attribution is exact. For any other encoder (SASRec, hybrid, text) a history item's
contribution is measured by leaving it out: the score with the full history minus the score
without that item, for all history items in one batched call
(:meth:`~ragrec.retrieval.Encoder.contributions`).

The evidence of a recommended item is its history items with the largest positive contributions,
each with its weight, its share of the positive total and the categories it shares with the item.
Explanations and chat answers are prompted with it, and applications can show it ("because you
watched X and Y"). The LLM stage's own re-ordering is not attributed (one LLM pass per ablated
history item is too costly per request); the evidence is the first stage's, and says so
(``Evidence.method``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ragrec.data.text import clean_text
from ragrec.prompts import sanitize
from ragrec.retrieval import Encoder
from ragrec.types import Evidence, Item

__all__ = ["evidence_for", "evidence_block", "display_name"]


def evidence_for(
    encoder: Encoder,
    catalog: Mapping[str, Item],
    history: Sequence[str],
    item_ids: Sequence[str],
    top: int = 3,
) -> list[tuple[Evidence, ...]]:
    """For each of ``item_ids``, the ``top`` history items with the largest positive
    contribution to its score under ``encoder``, strongest first (empty when none is positive,
    e.g. for a popularity encoder, whose scores ignore the history)."""
    if top <= 0 or not item_ids:
        return [() for _ in item_ids]
    hist_ids, contrib = encoder.contributions(history, item_ids)  # (H, C)
    out = []
    for c, item_id in enumerate(item_ids):
        col = contrib[:, c]  # (H,): every history item's contribution to this item (H may be 0)
        positive = float(col[col > 0].sum())
        order = np.argsort(-col, kind="stable")[:top]
        cats = set(catalog[item_id].categories) if item_id in catalog else set()
        picked = []
        for j in order:
            if col[j] <= 0:
                break
            h = catalog.get(hist_ids[j])
            shared = tuple(cat for cat in h.categories if cat in cats) if h else ()
            picked.append(Evidence(hist_ids[j], float(col[j]), float(col[j]) / positive, encoder.attribution,
                                   h.title if h else None, h.year if h else None, shared))  # fmt: skip
        out.append(tuple(picked))
    return out


def display_name(title: str | None, year: int | None, item_id: str) -> str:
    """``Title (year)`` for people to read (the year once, when the title does not carry it), or the
    id of an item without a title."""
    name = clean_text(title) or item_id
    return f"{name} ({year})" if year and f"({year})" not in name else name


def evidence_block(evidence: Sequence[Evidence], max_chars: int = 90) -> str:
    """Prompt lines for the evidence of one item: ``- Title (year): shares Drama, Crime``."""
    lines = []
    for ev in evidence:
        shared = f": also {', '.join(ev.shared[:3])}" if ev.shared else ""
        lines.append(f"- {sanitize(display_name(ev.title, ev.year, ev.item_id) + shared, max_chars)}")
    return "\n".join(lines) if lines else "(none)"
