"""``Retriever``: the first stage. Encoder + FAISS index + the users' histories.

``retrieve`` answers a batch of requests, each by user id (their known history is used and
excluded) or by an explicit history. A user the retriever does not know, or an empty history,
is answered by popularity, and the result says so (``RetrievalResult.fallback``).

Saved as a folder. An exact (``Flat``) index over exactly the encoder's items holds nothing the
encoder does not: it is rebuilt from the encoder at load instead of being stored a second time
(an EASE retriever over 16,859 items would otherwise keep its 1.1 GB of weights twice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError
from ragrec.io import atomic_directory, atomic_write_text, read_json_meta
from ragrec.retrieval.base import Encoder, load_encoder
from ragrec.retrieval.index import ItemIndex, fingerprint
from ragrec.retrieval.popularity import PopularityEncoder
from ragrec.types import Candidate, RetrievalResult

__all__ = ["Retriever", "CandidateSource", "MAX_K"]

MAX_K = 1000  # the most candidates one request may ask for


@runtime_checkable
class CandidateSource(Protocol):
    """What the LLM stage needs from a first stage: typed candidates for users or histories."""

    def retrieve(
        self,
        users: Sequence[str] | None = None,
        *,
        histories: Sequence[Sequence[str]] | None = None,
        k: int = 20,
        exclude_seen: bool = True,
        scenario: str | None = None,
    ) -> list[RetrievalResult]: ...


class Retriever:
    """Retrieves candidates with ``encoder`` through ``index`` (see module docstring).

    ``histories`` maps known user ids to their items (oldest first) — what is excluded and what
    forms the query. ``popularity`` answers unknown users and empty histories.
    """

    def __init__(
        self,
        encoder: Encoder,
        index: ItemIndex,
        histories: Mapping[str, Sequence[str]],
        popularity: PopularityEncoder,
        *,
        scenario: str = S.DEFAULT_SCENARIO,
        name: str | None = None,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.histories: Mapping[str, Sequence[str]] = {u: list(h) for u, h in histories.items()}
        self.popularity = popularity
        self.scenario = scenario
        self.name = name or encoder.kind
        self._pop_order = np.argsort(-popularity.counts, kind="stable")

    @classmethod
    def build(
        cls,
        encoder: Encoder,
        data: InteractionData,
        *,
        factory: str = "Flat",
        splits: Sequence[str] = (S.TRAIN, S.VALID),
        scenario: str | None = None,
        search_params: Mapping[str, float] | None = None,
    ) -> Retriever:
        """Index every catalog item of ``encoder`` and take user histories from ``splits`` of ``data``."""
        index = _index_of(encoder, factory, search_params)
        hist = data.histories(splits=splits if data.has_split else None)
        pop = PopularityEncoder.fit(data, splits=(S.TRAIN,))
        scenarios = data.stats().scenarios
        return cls(encoder, index, {u: h.item_ids for u, h in hist.items()}, pop,
                   scenario=scenario or scenarios[0])  # fmt: skip

    # ------------------------------------------------------------------ retrieval
    def retrieve(
        self,
        users: Sequence[str] | None = None,
        *,
        histories: Sequence[Sequence[str]] | None = None,
        k: int = 20,
        exclude_seen: bool = True,
        scenario: str | None = None,
    ) -> list[RetrievalResult]:
        """Top-``k`` candidates for each user id, or for each explicit history.

        Raises for ``k`` < 1, ``k`` > the catalog (or > ``MAX_K``), another scenario, or when
        both or neither of ``users``/``histories`` are given.
        """
        if scenario is not None and scenario != self.scenario:
            raise RagrecError(f"this retriever serves scenario {self.scenario!r}, not {scenario!r}")
        if (users is None) == (histories is None):
            raise RagrecError("pass either users or histories")
        n_items = len(self.index)
        if not 1 <= k <= min(n_items, MAX_K):
            raise RagrecError(f"k must be between 1 and {min(n_items, MAX_K)} (catalog of {n_items} items), got {k}")
        requests: list[tuple[str | None, list[str], str | None]] = []
        if users is not None:
            for u in users:
                if u in self.histories:
                    requests.append((u, list(self.histories[u]), None))
                else:
                    requests.append((u, [], f"unknown user {u!r}: popularity"))
        else:
            assert histories is not None
            for h in histories:
                known = [i for i in h if i in self.encoder.item_index]
                requests.append((None, known, None if known else "empty history (no known items): popularity"))
        results: list[RetrievalResult | None] = [None] * len(requests)
        personal = [r for r, (_, h, fb) in enumerate(requests) if fb is None and h]
        for r, (u, h, fb) in enumerate(requests):
            if r not in personal:
                results[r] = self._popular(u, h if exclude_seen else [], k, fb or "empty history: popularity")
        if personal:
            queries = self.encoder.encode_histories([requests[r][1] for r in personal])
            extra = max(len(set(requests[r][1])) for r in personal) if exclude_seen else 0
            scores, ids = self.index.search(queries, min(k + extra, n_items))
            for row, r in enumerate(personal):
                seen = set(requests[r][1]) if exclude_seen else set()
                picked = [(i, float(s)) for i, s in zip(ids[row], scores[row]) if i not in seen][:k]
                results[r] = RetrievalResult(
                    requests[r][0],
                    tuple(Candidate(i, s, rank, self.name) for rank, (i, s) in enumerate(picked, start=1)),
                )
        return [r for r in results if r is not None]

    def _popular(self, user: str | None, seen: Sequence[str], k: int, reason: str) -> RetrievalResult:
        seen_set = set(seen)
        ids = self.popularity.item_ids
        picked = [i for i in (ids[j] for j in self._pop_order) if i not in seen_set][:k]
        cands = tuple(
            Candidate(i, float(np.log1p(self.popularity.counts[self.popularity.item_index[i]])), rank, "popularity")
            for rank, i in enumerate(picked, start=1)
        )
        return RetrievalResult(user, cands, fallback=reason)

    # ------------------------------------------------------------------ persistence
    def _index_derived(self) -> bool:
        """Whether the index is the exact one :meth:`build` makes from the encoder (so it need not be saved)."""
        ix = self.index
        return (ix.factory == "Flat" and ix.metric == "ip" and not ix.params and ix._next == len(ix)
                and ix.item_ids == list(self.encoder.item_ids)
                and ix.encoder.get("fingerprint") == fingerprint(self.encoder.item_embeddings()))  # fmt: skip

    def save(self, path: str | PathLike[str]) -> Path:
        """Folder with ``encoder/``, ``index/`` (unless it is rebuilt from the encoder at load: see
        the module docstring), ``popularity/`` and ``retriever.json`` (histories)."""
        path = Path(path)
        derived = self._index_derived()
        with atomic_directory(path) as staging:
            self.encoder.save(staging / "encoder")
            if not derived:
                self.index.save(staging / "index")
            self.popularity.save(staging / "popularity")
            meta = {"name": self.name, "scenario": self.scenario, "histories": {u: list(h) for u, h in self.histories.items()},
                    "index": {"rebuild": derived, "factory": self.index.factory}}  # fmt: skip
            atomic_write_text(staging / "retriever.json", json.dumps(meta) + "\n")
        return path

    @classmethod
    def load(cls, path: str | PathLike[str]) -> Retriever:
        """Load a saved retriever; refuses an index that another encoder state built."""
        path = Path(path)
        meta = read_json_meta(path / "retriever.json", "retriever")
        encoder = load_encoder(path / "encoder")
        if (meta.get("index") or {}).get("rebuild"):
            index = _index_of(encoder, meta["index"]["factory"])
        else:
            vectors = encoder.item_embeddings()
            fp = fingerprint(vectors)
            index = ItemIndex.load(path / "index", encoder={"kind": encoder.kind, "fingerprint": fp})
        popularity = load_encoder(path / "popularity")
        assert isinstance(popularity, PopularityEncoder)
        return cls(encoder, index, meta["histories"], popularity, scenario=meta["scenario"], name=meta["name"])


def _index_of(encoder: Encoder, factory: str, search_params: Mapping[str, float] | None = None) -> ItemIndex:
    """A FAISS index (inner product) over every item of ``encoder``, tagged with its state."""
    vectors = encoder.item_embeddings()
    index = ItemIndex(
        vectors.shape[1], factory, "ip", encoder={"kind": encoder.kind, "fingerprint": fingerprint(vectors)}
    )
    index.add(encoder.item_ids, vectors)
    if search_params:
        index.set_params(**search_params)
    return index
