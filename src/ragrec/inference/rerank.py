"""The learning-to-rank second stage: a LightGBM lambdarank model over the first stage's candidates.

Each candidate gets a row of :data:`RERANK_FEATURES`: the first-stage score (raw, standardised,
rank, gap to the best), the item priors of :class:`~ragrec.inference.fusion.ItemPriors`
(popularity, category match, year offset and gap), how often the item followed the user's last
items in the known histories (transitions), the history's length and, from the LLM, how close the
candidate's title is to the history's titles in the LLM's hidden states (:func:`item_vectors`: the
mean hidden state of the item's title at one layer, computed once per catalog item). The LLM's
features need no LLM pass at serving time: the vectors are stored with the reranker.

A :class:`Reranker` is trained by :func:`ragrec.finetune.ltr.fit_reranker` on out-of-fold
candidate lists and saved as a folder (``scenarios/<name>/reranker/``)::

    reranker.json        RerankerInfo: features, base model, how it was fitted and chosen
    model.txt            LightGBM's own text format (no pickle)
    item_vectors.npy     the LLM features' item vectors (only when the features use them)
    item_ids.json        the vectors' row order

An item without a vector (added to the catalog after fitting) gets missing LLM features, which
LightGBM routes down the branch it learned for missing values; nothing is silently invented.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragrec.errors import RagrecError
from ragrec.inference.fusion import ItemPriors
from ragrec.io import atomic_directory, atomic_write_text, read_json_meta
from ragrec.types import Item

__all__ = [
    "RERANK_FEATURES",
    "LLM_RERANK_FEATURES",
    "RerankerInfo",
    "Reranker",
    "Transitions",
    "RerankFeatures",
    "item_vectors",
]

RERANK_FEATURES: dict[str, str] = {
    "retriever": "the first stage's score, standardised over the user's candidates",
    "retriever_raw": "the first stage's score as it is",
    "retriever_rank": "the candidate's 0-based position in the first stage's order",
    "retriever_gap": "the first stage's score minus the best candidate's",
    "popularity": "log(1 + interactions with the item in the known histories)",
    "category_match": "cosine between the item's categories and the recent history's category profile",
    "year_offset": "(item year - median year of the recent history) / 10; 0 without years",
    "year_gap": "|item year - median year of the recent history| / 10; 0 without years",
    "history_length": "log(1 + the user's history length)",
    "transition_last": "log(1 + times the item directly followed the user's last item in the known histories)",
    "transition_recent": "log(1 + times the item followed one of the user's last 3 items, 1 or 2 steps later)",
    "llm_sim_last": "cosine, in the LLM's hidden states, between the item's title and the last history item's",
    "llm_sim_max": "the largest such cosine over the last `max_history` history items",
    "llm_sim_mean": "the mean such cosine over the last `max_history` history items",
    "llm_sim_profile": "cosine between the item's title vector and the mean of the recent history's",
}
LLM_RERANK_FEATURES = ("llm_sim_last", "llm_sim_max", "llm_sim_mean", "llm_sim_profile")
_PRIORS = ("retriever", "popularity", "category_match", "year_offset", "year_gap")

MODEL_FILE, INFO_FILE, VECTORS_FILE, IDS_FILE = "model.txt", "reranker.json", "item_vectors.npy", "item_ids.json"


class Transitions:
    """Counts of item ``b`` following item ``a`` one step (``next``) and two steps (``skip``) later."""

    def __init__(self, next_: Mapping[tuple[str, str], int], skip: Mapping[tuple[str, str], int]) -> None:
        self.next, self.skip = next_, skip

    @classmethod
    def from_histories(cls, histories: Iterable[Sequence[str]]) -> Transitions:
        nxt, skip = Counter(), Counter()
        for h in histories:
            nxt.update(zip(h, h[1:]))
            skip.update(zip(h, h[2:]))
        return cls(nxt, skip)

    def last(self, history: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        if not history:
            return np.zeros(len(candidates))
        return np.log1p([self.next.get((history[-1], c), 0) for c in candidates])

    def recent(self, history: Sequence[str], candidates: Sequence[str], window: int = 3) -> np.ndarray:
        tail = list(history)[-window:]
        return np.log1p([sum(self.next.get((h, c), 0) + self.skip.get((h, c), 0) for h in tail) for c in candidates])


class RerankFeatures:
    """Feature rows of :data:`RERANK_FEATURES` for one scenario's candidate lists: the priors and
    transitions come from the histories the caller passes (those a model may see), the LLM item
    vectors (rows in ``vector_ids`` order, unit length) from :func:`item_vectors`."""

    def __init__(
        self,
        priors: ItemPriors,
        transitions: Transitions,
        vectors: np.ndarray | None = None,
        vector_ids: Sequence[str] = (),
        max_history: int = 10,
    ) -> None:
        self.priors, self.transitions, self.max_history = priors, transitions, max_history
        self.vectors = vectors
        self._row = {i: j for j, i in enumerate(vector_ids)}

    @classmethod
    def from_histories(
        cls,
        catalog: Mapping[str, Item],
        histories: Sequence[Sequence[str]],
        vectors: np.ndarray | None = None,
        vector_ids: Sequence[str] = (),
        max_history: int = 10,
    ) -> RerankFeatures:
        return cls(ItemPriors.from_histories(catalog, histories), Transitions.from_histories(histories), vectors,
                   vector_ids, max_history)  # fmt: skip

    def _vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(n, H) unit vectors; NaN rows for items without one."""
        out = np.full((len(ids), self.vectors.shape[1]), np.nan)
        for j, i in enumerate(ids):
            if (r := self._row.get(i)) is not None:
                out[j] = self.vectors[r]
        return out

    def rows(
        self, history: Sequence[str], candidates: Sequence[str], retriever: np.ndarray, names: Sequence[str]
    ) -> np.ndarray:
        """(C, F) rows of ``candidates`` (first-stage order, scores ``retriever``), columns ``names``."""
        unknown = sorted(set(names) - set(RERANK_FEATURES))
        if unknown:
            raise RagrecError(f"unknown reranker features {unknown}; allowed: {sorted(RERANK_FEATURES)}")
        n = len(candidates)
        raw = np.asarray(retriever, dtype=float)
        priors = self.priors.features(history, candidates, raw, None, _PRIORS, 20)
        cols: dict[str, np.ndarray] = dict(zip(_PRIORS, priors.T))
        cols["retriever_raw"] = raw
        cols["retriever_rank"] = np.argsort(np.argsort(-raw, kind="stable"), kind="stable").astype(float)
        cols["retriever_gap"] = raw - raw.max() if n else raw
        cols["history_length"] = np.full(n, np.log1p(len(history)))
        cols["transition_last"] = self.transitions.last(history, candidates)
        cols["transition_recent"] = self.transitions.recent(history, candidates)
        if any(n_ in LLM_RERANK_FEATURES for n_ in names):
            if self.vectors is None:
                raise RagrecError("the reranker uses LLM features but has no item vectors")
            cand = self._vectors(candidates)
            recent = list(history)[-self.max_history :]
            hist = self._vectors(recent) if recent else np.full((1, cand.shape[1]), np.nan)
            sims = cand @ hist.T  # (C, h); NaN where a vector is missing
            known = hist[~np.isnan(hist).any(axis=1)]
            profile = known.mean(axis=0) if len(known) else np.zeros(cand.shape[1])
            norm = np.linalg.norm(profile)
            cols["llm_sim_profile"] = cand @ (profile / norm) if norm > 0 else np.full(n, np.nan)
            cols["llm_sim_last"] = sims[:, -1]
            with warnings.catch_warnings():  # a row with no known vector is NaN, as it should be
                warnings.simplefilter("ignore", RuntimeWarning)
                cols["llm_sim_max"] = np.nanmax(sims, axis=1)
                cols["llm_sim_mean"] = np.nanmean(sims, axis=1)
        return np.stack([cols[c] for c in names], axis=1) if n else np.zeros((0, len(names)))


def item_vectors(loaded, catalog: Mapping[str, Item], *, layer: int | None = None, batch: int = 64,
                 max_tokens: int = 32, progress: bool = True,
                 text: Callable[[Item], str] | None = None) -> tuple[np.ndarray, list[str], int]:  # fmt: skip
    """Unit-length, mean-centred LLM vectors of every catalog item's title (with its year; or
    ``text(item)`` when given): the mean hidden state over the text's first ``max_tokens`` tokens
    at ``layer`` (default: the middle layer); texts are sorted by length into batches so little
    padding is computed. Returns the vectors (float32), the item ids in row order and the layer used."""
    import torch
    from tqdm.auto import tqdm

    model, tok = loaded.model, loaded.tokenizer
    layers = model.config.num_hidden_layers
    layer = layers // 2 if layer is None else layer
    if not 0 < layer <= layers:
        raise RagrecError(f"layer {layer} of a {layers}-layer model: need 1..{layers}")
    ids = list(catalog)
    texts = [(text or _title)(catalog[i]) for i in ids]
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths batched together
    out = []
    device = next(model.parameters()).device
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    with torch.no_grad():
        for b in tqdm(range(0, len(texts), batch), desc="LLM item vectors", disable=not progress, leave=False):
            part = [texts[j] for j in order[b : b + batch]]
            enc = tok(part, return_tensors="pt", padding=True, truncation=True, max_length=max_tokens,
                      add_special_tokens=False).to(device)  # fmt: skip
            positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # padding does not shift positions
            hidden = decoder(**enc, position_ids=positions, output_hidden_states=True).hidden_states[layer].float()
            mask = enc["attention_mask"][..., None].float()
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu().numpy())
    x = np.zeros((len(ids), model.config.hidden_size))
    if out:
        x[order] = np.concatenate(out)
    x = x - x.mean(axis=0, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x.astype(np.float32), ids, layer


def _title(item: Item) -> str:
    title = item.title or item.item_id
    return f"{title} ({item.year})" if getattr(item, "year", None) else title


class RerankerInfo(BaseModel):
    """What a saved reranker is: its features and how it was fitted and chosen."""

    model_config = ConfigDict(extra="forbid")

    features: list[str] = Field(description="Feature names, in the model's column order (from RERANK_FEATURES).")
    max_history: int = Field(10, ge=1, description="Recent history items the LLM similarity features read.")
    base_model: str | None = Field(None, description="The LLM the item vectors came from (None: no LLM features).")
    base_fingerprint: list[float] | None = Field(None, description="Fingerprint of that model's weights (provenance).")
    vector_layer: int | None = Field(None, description="The hidden layer the item vectors were read at.")
    fitted_on: dict[str, Any] = Field(default_factory=dict, description="Lists, rounds, validation figures.")

    @field_validator("features")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(RERANK_FEATURES))
        if unknown or not v:
            raise ValueError(f"unknown or no reranker features {unknown}; allowed: {sorted(RERANK_FEATURES)}")
        return v

    @property
    def uses_llm(self) -> bool:
        return any(n in LLM_RERANK_FEATURES for n in self.features)


class Reranker:
    """A fitted LightGBM lambdarank model with its features (and the LLM item vectors it reads)."""

    def __init__(self, info: RerankerInfo, booster, vectors: np.ndarray | None = None,
                 vector_ids: Sequence[str] = ()) -> None:  # fmt: skip
        if info.uses_llm and vectors is None:
            raise RagrecError("a reranker with LLM features needs the item vectors")
        if booster.num_feature() != len(info.features):
            raise RagrecError(f"the model reads {booster.num_feature()} features, its info names {len(info.features)}")
        self.info, self.booster = info, booster
        self.vectors, self.vector_ids = vectors, list(vector_ids)

    @property
    def features(self) -> list[str]:
        return self.info.features

    def feature_builder(self, catalog: Mapping[str, Item], histories: Sequence[Sequence[str]]) -> RerankFeatures:
        """Features over ``histories`` (the scenario's known ones at serving time)."""
        return RerankFeatures.from_histories(catalog, histories, self.vectors, self.vector_ids, self.info.max_history)

    def score(self, rows: np.ndarray) -> np.ndarray:
        """(C,) scores of (C, F) rows built with :attr:`features`."""
        if len(rows) == 0:
            return np.zeros(0)
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=float)

    def save(self, folder: str | PathLike[str]) -> Path:
        folder = Path(folder)
        with atomic_directory(folder) as staging:
            atomic_write_text(staging / MODEL_FILE, self.booster.model_to_string())
            atomic_write_text(staging / INFO_FILE, self.info.model_dump_json(indent=2) + "\n")
            if self.vectors is not None:
                np.save(staging / VECTORS_FILE, self.vectors, allow_pickle=False)
                atomic_write_text(staging / IDS_FILE, json.dumps(self.vector_ids) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | PathLike[str]) -> Reranker:
        import lightgbm as lgb

        folder = Path(folder)
        info = RerankerInfo(**read_json_meta(folder / INFO_FILE, "reranker"))
        if not (folder / MODEL_FILE).is_file():
            raise RagrecError(f"{folder}: {MODEL_FILE} missing")
        try:
            booster = lgb.Booster(model_str=(folder / MODEL_FILE).read_text())
        except lgb.basic.LightGBMError as e:
            raise RagrecError(f"{folder / MODEL_FILE}: not a LightGBM model ({e})") from None
        vectors, ids = None, []
        if info.uses_llm:
            try:
                vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
                ids = json.loads((folder / IDS_FILE).read_text())
            except (OSError, ValueError) as e:
                raise RagrecError(f"{folder}: item vectors unreadable ({e})") from None
            if vectors.ndim != 2 or len(ids) != len(vectors):
                raise RagrecError(f"{folder}: {len(ids)} item ids for {vectors.shape} vectors")
        return cls(info, booster, vectors, ids)

    @cached_property
    def importance(self) -> dict[str, float]:
        """Each feature's share of the model's total split gain."""
        gain = self.booster.feature_importance("gain")
        total = float(gain.sum()) or 1.0
        return {n: round(float(g) / total, 4) for n, g in zip(self.features, gain)}
