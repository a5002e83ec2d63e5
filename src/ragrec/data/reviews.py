"""What reviewers say about an item, for catalogs that have no item text.

Review datasets without metadata (Amazon 5-core files whose ``meta_*`` file is missing) name items
only by id, so a prompt says nothing of what an item is. :func:`review_terms` finds, for each item,
the words and two-word phrases that *several* of its reviews use and that few other items' reviews
do (the number of the item's reviews that use a term, as a share of its reviews, times the term's
inverse document frequency over items): "capo, planet waves, action capo" for a capo, "strap,
leather, supple" for a strap. :func:`describe_from_reviews` writes them into the ``description``
of items that have none, so prompts render ``item B008BPI2HE | reviews mention: capo, ...``.

Only the training split's reviews are read (when the data is split), so an item's description
never holds a held-out review.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError

__all__ = ["review_terms", "describe_from_reviews", "REVIEW_DESCRIPTION_PREFIX"]

REVIEW_DESCRIPTION_PREFIX = "reviews mention: "
_WORDS = r"(?u)\b[a-zA-Z][a-zA-Z]+\b"  # letters only: no numbers, ids or markup reach a prompt


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _reviews(data: InteractionData, splits: Iterable[str] | None) -> pd.DataFrame:
    frame = data.interactions_frame()
    if S.REVIEW not in frame or frame[S.REVIEW].isna().all():
        raise RagrecError(f"dataset {data.name!r} has no review text to describe items from")
    if splits is None:
        splits = [S.TRAIN] if data.has_split else None
    if splits is not None:
        if not data.has_split:
            raise RagrecError(f"dataset {data.name!r} is not split: pass splits=None to read every review")
        frame = frame[frame[S.SPLIT].isin(list(splits))]
    return frame[frame[S.REVIEW].notna() & (frame[S.REVIEW].astype(str).str.strip() != "")]


def review_terms(
    data: InteractionData,
    *,
    terms: int = 6,
    min_reviews: int = 2,
    min_df: int = 3,
    splits: Iterable[str] | None = None,
) -> dict[str, list[str]]:
    """Item id -> up to ``terms`` distinctive words or two-word phrases of its reviews, best first.

    A term counts for an item when at least ``min_reviews`` of the item's reviews use it (an item
    with a single review: that one); terms in fewer than ``min_df`` of all the reviews read (a rare
    name or typo) and English stop words are never picked. A term whose words (plural ``s`` aside)
    are all in terms already picked is skipped ("picks" after "pick"; "pop filter" after "pop" and
    "filter"). ``splits``: which interactions' reviews to read; default the training split of split
    data, every review of data that is not split. Items without reviews are left out of the result."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    if min(terms, min_reviews, min_df) < 1:
        raise ValueError(f"terms, min_reviews and min_df must be >= 1, got {terms}, {min_reviews}, {min_df}")
    frame = _reviews(data, splits)
    if frame.empty:
        return {}
    vec = CountVectorizer(stop_words="english", ngram_range=(1, 2), binary=True, token_pattern=_WORDS,
                          min_df=min(min_df, len(frame)))  # fmt: skip
    try:
        used = vec.fit_transform(frame[S.REVIEW].astype(str).to_numpy())  # (reviews, terms) 0/1
    except ValueError:  # no term left (every word a stop word or too rare)
        return {}
    items, row = np.unique(frame[S.ITEM_ID].astype(str).to_numpy(), return_inverse=True)
    owner = sparse.csr_matrix((np.ones(len(row)), (row, np.arange(len(row)))), shape=(len(items), len(row)))
    counts = (owner @ used).tocsr()  # (items, terms): how many of the item's reviews use the term
    n_reviews = np.bincount(row, minlength=len(items))
    idf = np.log(len(items) / np.maximum(np.asarray((counts > 0).sum(axis=0)).ravel(), 1))
    vocab = vec.get_feature_names_out()
    out: dict[str, list[str]] = {}
    for i, item in enumerate(items):
        lo, hi = counts.indptr[i], counts.indptr[i + 1]
        cols, n = counts.indices[lo:hi], counts.data[lo:hi]
        keep = n >= min(min_reviews, n_reviews[i])
        cols, score = cols[keep], (n[keep] / n_reviews[i]) * idf[cols[keep]]
        picked: list[str] = []
        covered: set[str] = set()
        for j in np.lexsort((cols, -score)):  # best score first; ties by vocabulary order
            if score[j] <= 0:
                break
            words = {_stem(w) for w in vocab[cols[j]].split()}
            if words <= covered:
                continue
            picked.append(str(vocab[cols[j]]))
            covered |= words
            if len(picked) == terms:
                break
        if picked:
            out[str(item)] = picked
    return out


def describe_from_reviews(data: InteractionData, *, overwrite: bool = False, **options) -> InteractionData:
    """``data`` with ``description = "reviews mention: a, b, c"`` (:func:`review_terms`, same
    ``options``) for each item that has reviews and no description (every such item when
    ``overwrite``). The catalog, interactions and splits are otherwise unchanged."""
    found = review_terms(data, **options)
    items = data.items_frame()
    ids = items[S.ITEM_ID].astype(str)
    new = ids.map(lambda i: REVIEW_DESCRIPTION_PREFIX + ", ".join(found[i]) if i in found else None)
    empty = items[S.DESCRIPTION].isna() | (items[S.DESCRIPTION].astype(str).str.strip() == "")
    take = new.notna() & (empty | overwrite)
    items[S.DESCRIPTION] = items[S.DESCRIPTION].where(~take, new)
    note = {"items_described_from_reviews": int(take.sum())}
    return data.replace(items=items, info_update=note)
