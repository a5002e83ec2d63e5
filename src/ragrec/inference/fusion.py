"""Learned fusion: the LLM's and the retriever's scores plus cheap item priors, weighted by a
conditional logit fitted on validation users.

:func:`~ragrec.inference.recommender.fuse_scores` adds the retriever's score to the LLM's with one
weight. A :class:`FusionModel` scores each candidate by ``features @ weights`` over the named
:data:`FEATURES`, with weights that maximise the likelihood of the held-out target among each
validation user's candidates (a softmax over that user's candidates, so anything constant per user
cancels). The priors are what a title-reading LLM of 135M parameters barely uses but a retriever
built on co-occurrence over- or under-weights: how popular an item is, whether its categories
match the history's, and whether its year is near the history's. A feature the catalog lacks
(items without categories or years) is 0 for every candidate and gets no weight.

The weights are plain numbers saved in the scenario's JSON, so a fitted fusion travels with the
recommender folder and loads without pickle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragrec.errors import RagrecError
from ragrec.types import Item

__all__ = ["FEATURES", "DEFAULT_FEATURES", "LLM_FEATURES", "FusionModel", "ItemPriors", "fit_fusion", "uses_llm"]

FEATURES: dict[str, str] = {
    "llm": "the LLM's score, standardised over the user's candidates",
    "llm_logp": "the LLM's letter log-probability as it is (the residual ranker's delta; its weight is the scale "
    "learned with the adapter, see ragrec.finetune.residual)",
    "retriever": "the retriever's score, standardised over the user's candidates",
    "popularity": "log(1 + interactions with the item in the histories the priors were built from)",
    "category_match": "cosine between the item's categories and the category profile of the recent history",
    "year_offset": "(item year - median year of the recent history) / 10; 0 without years",
    "year_gap": "|item year - median year of the recent history| / 10; 0 without years",
}


def _standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


LLM_FEATURES = ("llm", "llm_logp")
DEFAULT_FEATURES = tuple(n for n in FEATURES if n != "llm_logp")  # the learned fusion's (llm_logp: the residual's)


def uses_llm(names: Iterable[str]) -> bool:
    """Whether a fusion over ``names`` needs the LLM's scores (else the LLM is not run at all)."""
    return any(n in LLM_FEATURES for n in names)


class ItemPriors:
    """Per-item popularity, categories and years of one catalog; builds the feature rows."""

    def __init__(self, catalog: Mapping[str, Item], popularity: Mapping[str, int]) -> None:
        self.catalog = catalog
        self.popularity = popularity
        names = sorted({c for it in catalog.values() for c in it.categories})
        self._cat = {c: j for j, c in enumerate(names)}

    @classmethod
    def from_histories(cls, catalog: Mapping[str, Item], histories: Iterable[Sequence[str]]) -> ItemPriors:
        """Popularity counted over ``histories`` (use only interactions the model may see)."""
        return cls(catalog, Counter(i for h in histories for i in h))

    def _categories(self, item_id: str) -> np.ndarray:
        v = np.zeros(len(self._cat))
        item = self.catalog.get(item_id)
        for c in item.categories if item is not None else ():
            v[self._cat[c]] = 1.0
        return v

    def features(
        self,
        history: Sequence[str],
        candidates: Sequence[str],
        retriever: np.ndarray,
        llm: np.ndarray | None = None,
        names: Sequence[str] = DEFAULT_FEATURES,
        max_history: int = 20,
    ) -> np.ndarray:
        """(C, F) feature rows of one user's ``candidates``, columns in the order of ``names``; the
        category and year priors read the last ``max_history`` history items (a fitted
        :class:`FusionModel` says how many it was fitted with). ``llm`` may be ``None`` only when
        ``names`` leaves out ``"llm"``."""
        recent = list(history)[-max_history:] if max_history else []
        cols: dict[str, np.ndarray] = {}
        if uses_llm(names):
            if llm is None:
                raise RagrecError("the fusion uses the LLM's score but none was given")
            cols["llm"] = _standardise(np.asarray(llm, dtype=float))
            cols["llm_logp"] = np.asarray(llm, dtype=float)
        cols["retriever"] = _standardise(np.asarray(retriever, dtype=float))
        cols["popularity"] = np.log1p([self.popularity.get(i, 0) for i in candidates])
        cand_cats = np.array([self._categories(i) for i in candidates]).reshape(len(candidates), len(self._cat))
        profile = np.mean([self._categories(i) for i in recent], axis=0) if recent and self._cat else None
        if profile is not None and np.linalg.norm(profile) > 0:
            norms = np.linalg.norm(cand_cats, axis=1) * np.linalg.norm(profile)
            cols["category_match"] = np.divide(cand_cats @ profile, norms, out=np.zeros(len(candidates)),
                                               where=norms > 0)  # fmt: skip
        else:
            cols["category_match"] = np.zeros(len(candidates))
        years = [y for i in recent if (y := getattr(self.catalog.get(i), "year", None))]
        cand_years = [getattr(self.catalog.get(i), "year", None) for i in candidates]
        mid = float(np.median(years)) if years else None
        offset = np.array([(y - mid) / 10 if y and mid is not None else 0.0 for y in cand_years])
        cols["year_offset"], cols["year_gap"] = offset, np.abs(offset)
        return np.stack([cols[n] for n in names], axis=1)


class FusionModel(BaseModel):
    """Fitted fusion weights, one per feature of :data:`FEATURES` (see :func:`fit_fusion`)."""

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(description="Feature name -> weight, names from FEATURES.")
    max_history: int = Field(20, ge=0, description="Recent history items the category and year priors read.")
    fitted_on: dict[str, float | int | str] = Field(default_factory=dict, description="Users, targets, loss, l2.")

    @field_validator("weights")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(FEATURES))
        if unknown or not v:
            raise ValueError(f"unknown or no fusion features {unknown}; allowed: {sorted(FEATURES)}")
        return v

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    @property
    def uses_llm(self) -> bool:
        return uses_llm(self.weights)

    def score(self, features: np.ndarray) -> np.ndarray:
        """(C,) fused scores of (C, F) rows built with ``names``."""
        return features @ np.array([self.weights[n] for n in self.names])


def fit_fusion(
    rows: Sequence[np.ndarray],
    target_pos: Sequence[int],
    names: Sequence[str],
    *,
    l2: float = 1e-2,
    max_history: int = 20,
) -> FusionModel:
    """Conditional logit over each user's candidates: ``rows[u]`` (C_u, F) features, the target at
    ``target_pos[u]`` (users whose target was not retrieved, -1, carry no information and are
    skipped). Minimises the mean negative log-likelihood + ``l2 * |w|^2`` with L-BFGS."""
    import torch

    keep = [u for u, p in enumerate(target_pos) if p >= 0 and len(rows[u]) > 1]
    if len(keep) < 2 * len(names):
        raise RagrecError(f"{len(keep)} users with a retrieved target: too few to fit {len(names)} fusion weights")
    width = max(len(rows[u]) for u in keep)
    x = torch.zeros(len(keep), width, len(names), dtype=torch.float64)  # (U, C, F), padded
    mask = torch.zeros(len(keep), width, dtype=torch.bool)
    for j, u in enumerate(keep):
        x[j, : len(rows[u])] = torch.as_tensor(rows[u], dtype=torch.float64)
        mask[j, : len(rows[u])] = True
    y = torch.tensor([target_pos[u] for u in keep])
    w = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        logits = (x @ w).masked_fill(~mask, float("-inf"))  # (U, C)
        return torch.nn.functional.cross_entropy(logits, y) + l2 * (w**2).sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        nll = float(loss() - l2 * (w**2).sum())
    weights = {n: round(float(v), 6) for n, v in zip(names, w.detach())}
    return FusionModel(weights=weights, max_history=max_history,
                       fitted_on={"users": len(keep), "nll": round(nll, 6), "l2": l2})  # fmt: skip
