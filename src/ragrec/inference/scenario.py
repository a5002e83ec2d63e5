"""``Scenario``: one scenario's catalog, retriever, text encoder, templates, adapter and reranker;
``ScenarioConfig``: what a scenario adds to them (item noun, fusion, list shaping, rules); and the
live updates a service applies to a scenario (new interactions, new items)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.data.text import render_item_text
from ragrec.errors import RagrecError
from ragrec.inference.fusion import FusionModel, ItemPriors
from ragrec.inference.grounding import TitleMatcher
from ragrec.inference.optimise import ListRules
from ragrec.inference.rerank import Reranker, RerankFeatures
from ragrec.prompts import TemplateRegistry
from ragrec.retrieval import Retriever, TextEncoder
from ragrec.types import Item, UserHistory

__all__ = ["Scenario", "ScenarioConfig"]


class ScenarioConfig(BaseModel):
    """What a scenario adds to its data and retriever."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # a setting changed later is checked too

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Scenario name.")
    item_noun: str = Field("item", max_length=40, description="What the catalog holds ('movie', 'game').")
    fusion_weight: float = Field(0.0, ge=0, description="Weight of the retriever score fused with the LLM's.")
    fusion: FusionModel | None = Field(
        None, description="A learned fusion of the LLM, retriever and item priors (replaces fusion_weight when set)."
    )
    candidate_order: Literal["retriever", "shuffled"] = Field(
        "retriever", description="Order the LLM is shown the candidates in: the retriever's, or a fixed shuffle "
        "of them (`shown_order`; what a residual ranker was trained on, so a letter carries no retriever rank).",
    )  # fmt: skip
    diversity: float = Field(
        0.0, ge=0, le=1, description="Default MMR diversity of the final list (0: the ranking as it is; "
        "`recommend(diversity=...)` overrides it).",
    )  # fmt: skip
    long_tail: float = Field(
        0.0, ge=0, le=1, description="Default popularity penalty of the final list (0: none; "
        "`recommend(long_tail=...)` overrides it).",
    )  # fmt: skip
    calibration: float = Field(
        0.0, ge=0, le=1, description="Default pull of the final list toward the category mix of the user's history "
        "(0: none; `recommend(calibration=...)` overrides it). Not combined with diversity.",
    )  # fmt: skip
    rules: ListRules | None = Field(
        None, description="Default business rules (include/exclude items, categories, years; per-category caps); "
        "`recommend(rules=...)` overrides them.",
    )  # fmt: skip
    retriever_choice: dict[str, Any] | None = Field(
        None, description="How the retriever's settings were chosen on validation (e.g. EASE's l2 and decay and "
        "the grid tried), as `build_scenario` reported it.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_reorder(self) -> ScenarioConfig:
        problem = _Shaping(self.diversity, self.long_tail, self.calibration).problem()
        if problem:
            raise ValueError(problem)
        return self


@dataclass(frozen=True)
class _Shaping:
    """How the final list is shaped (each 0-1): popularity penalty, MMR diversity, calibration."""

    diversity: float
    long_tail: float
    calibration: float

    @classmethod
    def of(cls, sc: Scenario, diversity: float | None, long_tail: float | None, calibration: float | None) -> _Shaping:
        """The request's values, the scenario's defaults where ``None``; checked."""
        c = sc.config
        out = cls(c.diversity if diversity is None else diversity, c.long_tail if long_tail is None else long_tail,
                  c.calibration if calibration is None else calibration)  # fmt: skip
        problem = out.problem()
        if problem:
            raise RagrecError(problem)
        return out

    def problem(self) -> str | None:
        """What is wrong with these values (each 0-1; diversity and calibration not both), or None."""
        for name, value in vars(self).items():
            if not 0 <= value <= 1:
                return f"{name} must be between 0 and 1, got {value}"
        if self.diversity > 0 and self.calibration > 0:
            return "diversity and calibration both re-order the list; set one of them"
        return None


def _rules(rules: ListRules | None, fields: Mapping[str, Any]) -> ListRules | None:
    """``rules`` with ``fields`` (ListRules field names, e.g. ``exclude_categories``) set over it;
    exclusions are added to the ones ``rules`` has, every other field replaces its value."""
    if not fields:
        return rules
    unknown = set(fields) - set(ListRules.model_fields)
    if unknown:
        raise RagrecError(f"unknown argument(s) {sorted(unknown)}; rule fields: {', '.join(ListRules.model_fields)}")
    base = rules.model_dump() if rules is not None else {}
    merged = {**base, **fields}
    for key in ("exclude_items", "exclude_categories"):  # exclusions add up: a request cannot lift the scenario's
        merged[key] = list(dict.fromkeys([*base.get(key, []), *(fields.get(key) or [])]))
    try:
        return ListRules(**merged)
    except ValueError as exc:
        raise RagrecError(f"invalid business rules: {exc}") from None


class _HistoryIds(Mapping[str, Sequence[str]]):
    """The item ids of a scenario's histories, read through (what its retriever answers user ids from)."""

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario

    def __getitem__(self, user_id: str) -> Sequence[str]:
        return self._scenario.histories[user_id].item_ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._scenario.histories)

    def __len__(self) -> int:
        return len(self._scenario.histories)


@dataclass
class Scenario:
    """One scenario's catalog, retriever, optional text encoder, templates and adapter."""

    config: ScenarioConfig
    data: InteractionData
    retriever: Retriever
    text: TextEncoder | None = None
    templates: TemplateRegistry = field(default_factory=TemplateRegistry)
    adapter: Path | None = None
    reranker: Reranker | None = None  # the learning-to-rank stage (ragrec.finetune.ltr); replaces the fusion
    _updates: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One store of histories: the retriever answers user ids from this scenario's (feedback included).
        self.retriever.histories = _HistoryIds(self)

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def rerank_features(self) -> RerankFeatures:
        """The reranker's feature rows over the known histories."""
        if self.reranker is None:
            raise RagrecError(f"scenario {self.name!r} has no reranker")
        return self.reranker.feature_builder(self.catalog, [h.item_ids for h in self.histories.values()])

    @cached_property
    def histories(self) -> dict[str, UserHistory]:
        """Known users' histories: train + valid when the data has a split (test stays held out)."""
        return self.data.histories(splits=(S.TRAIN, S.VALID) if self.data.has_split else None)

    @cached_property
    def catalog(self) -> dict[str, Item]:
        return {i: self.data.item(i) for i in self.data.item_ids()}

    @cached_property
    def priors(self) -> ItemPriors:
        """Popularity, categories and years for a learned fusion, from the known histories."""
        return ItemPriors.from_histories(self.catalog, (h.item_ids for h in self.histories.values()))

    def item_vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """The retriever's embeddings of ``item_ids`` (catalog items), one row each, for diversity."""
        encoder = self.retriever.encoder
        return encoder.item_rows(encoder.indices(list(item_ids)))

    @cached_property
    def categories(self) -> list[str]:
        """The catalog's categories, sorted."""
        return sorted({c for it in self.catalog.values() for c in it.categories})

    @cached_property
    def matcher(self) -> TitleMatcher:
        return TitleMatcher(self.catalog.values())

    def item(self, item_id: str) -> Item:
        try:
            return self.catalog[item_id]
        except KeyError:
            raise RagrecError(_unknown_items([item_id], self)) from None

    # ------------------------------------------------------------------ live updates (feedback)
    def add_interactions(
        self,
        user_id: str,
        item_ids: Sequence[str],
        timestamps: Sequence[int],
        ratings: Sequence[float | None] | None = None,
    ) -> UserHistory:
        """Add interactions of ``user_id`` (known or new) to the histories this scenario serves
        from, at once: the next request of that user retrieves from, excludes and prompts with the
        new history. Every item must be in the catalog (``add_items`` first for new ones); the
        merged history stays in time order (equal timestamps: older entries first). The saved
        folder is not changed (the service keeps feedback in its own database and replays it)."""
        if len(timestamps) != len(item_ids) or (ratings is not None and len(ratings) != len(item_ids)):
            raise RagrecError("item_ids, timestamps and ratings must have the same length")
        unknown = [i for i in item_ids if i not in self.catalog]
        if unknown:
            raise RagrecError(_unknown_items(unknown, self))
        with self._updates:
            old = self.histories.get(user_id) or UserHistory(user_id, ())
            n = len(old)
            rows = list(zip(old.item_ids, old.timestamps or [None] * n, old.ratings or [None] * n))
            rows += zip(item_ids, (int(t) for t in timestamps), ratings or [None] * len(item_ids))
            if all(t is not None for _, t, _ in rows):
                rows.sort(key=lambda r: r[1])  # stable: equal timestamps keep the older entry first
            ids, times, rates = (tuple(col) for col in zip(*rows))
            merged = UserHistory(user_id, ids, times if None not in times else (), rates)
            self.histories[user_id] = merged
        return merged

    def check_new_items(self, ids: Sequence[str]) -> None:
        """Raise :class:`RagrecError` unless ``ids`` are distinct and none is in the catalog yet."""
        known = [i for i in ids if i in self.catalog]
        if known or len(set(ids)) != len(ids):
            raise RagrecError(f"item ids already in the catalog of {self.name!r} or repeated: {(known or ids)[:10]}")

    def add_items(self, items: Sequence[Item]) -> list[str]:
        """Add new catalog items (ids not in the catalog yet), at once: they can be named in
        feedback and histories, chat and text search find them (the scenario's text encoder embeds
        them), and a scenario whose retriever is the text encoder retrieves them for users (they
        join its FAISS index). Other retrievers score them after a retrain, once they have
        interactions. Returns the ids added."""
        ids = [it.item_id for it in items]
        self.check_new_items(ids)
        with self._updates:
            texts = {it.item_id: render_item_text(it) for it in items}
            if self.text is not None:
                self.text.add_items(texts)
            encoder = self.retriever.encoder
            if isinstance(encoder, TextEncoder) and encoder is not self.text:
                encoder.add_items(texts)
            if isinstance(encoder, TextEncoder):
                self.retriever.index.add(ids, encoder.item_rows(encoder.indices(ids)))
            for it in items:
                self.catalog[it.item_id] = it
            for cached in ("matcher", "categories", "priors"):  # rebuilt from the grown catalog on next use
                self.__dict__.pop(cached, None)
        return ids


def _unknown_items(ids: Sequence[str], sc: Scenario) -> str:
    examples = ", ".join(repr(i) for i in list(sc.catalog)[:5])
    return f"unknown item ids {list(ids)[:10]} in scenario {sc.name!r} ({len(sc.catalog)} items, e.g. {examples})"
