"""Fit the learning-to-rank stage (:mod:`ragrec.inference.rerank`) of a scenario, and choose what it serves.

The recipe:

1. **Out-of-fold training lists** (:func:`ragrec.finetune.residual.out_of_fold_lists`): every
   training position of every user gets the top candidates of a recency EASE fitted on the other
   folds' users, so the target sits in them as often as at serving time. The lists holding their
   target are the training groups (one relevant item each); the priors and transitions of each
   list come from its fold's fitting users only.
2. **Two LightGBM lambdarank models**, one with the LLM's features (title similarity in its hidden
   states, :func:`~ragrec.inference.rerank.item_vectors`) and one without, early-stopped on the
   validation users' served lists (NDCG@10; priors and transitions from the training split).
3. **The choice, on validation**: of the retriever + priors fusion (the anchor also used by the
   residual recipe), the reranker without the LLM and the reranker with it, the scenario serves
   the one with the best validation NDCG@10 over all validation users; the report carries all
   three figures, so the LLM features' share of the gain is visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragrec import schema as S
from ragrec.errors import RagrecError
from ragrec.finetune.config import RerankerConfig
from ragrec.finetune.residual import CandidateList, _fit_anchor, fold_histories, out_of_fold_lists, serving_lists
from ragrec.inference.fusion import FEATURES, LLM_FEATURES, FusionModel
from ragrec.inference.rerank import (
    LLM_RERANK_FEATURES,
    RERANK_FEATURES,
    Reranker,
    RerankerInfo,
    RerankFeatures,
    Transitions,
    item_vectors,
)
from ragrec.inference.scenario import Scenario
from ragrec.ranking import metric_table

__all__ = ["RerankerConfig", "RerankerRun", "fit_reranker", "list_ranks", "SERVED_NAMES"]

SERVED = ("fusion", "reranker_no_llm", "reranker")
SERVED_NAMES = {
    "fusion": "retriever + item priors fusion (no LLM)",
    "reranker_no_llm": "reranker without the LLM's features",
    "reranker": "reranker with the LLM's item vectors",
}


def list_ranks(lists: list[CandidateList], scores: list[np.ndarray]) -> np.ndarray:
    """Pessimistic 1-based rank of each list's target under ``scores`` (inf: not retrieved), as
    every two-stage evaluation ranks them (:meth:`ragrec.eval.llm.LLMScores.ranks`)."""
    from ragrec.eval.llm import LLMScores

    return LLMScores.without_llm("", "", lists).ranks(list(scores))


def _ndcg(lists: list[CandidateList], scores: list[np.ndarray]) -> float:
    return float(metric_table(list_ranks(lists, scores), (10,))["ndcg@10"])


@dataclass
class RerankerRun:
    """What :func:`fit_reranker` fitted and chose: ``served`` is ``"fusion"``, ``"reranker_no_llm"`` or
    ``"reranker"``; ``valid`` holds each candidate's validation NDCG@10 (and the retriever's)."""

    served: str
    fusion: FusionModel
    rerankers: dict[str, Reranker]
    valid: dict[str, float]
    out_of_fold: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def reranker(self) -> Reranker | None:
        """The reranker to serve (None when the fusion won)."""
        return self.rerankers.get(self.served)

    def report(self) -> dict[str, Any]:
        return {
            "served": self.served,
            "valid_ndcg@10": self.valid,
            "out_of_fold": self.out_of_fold,
            "rounds": {k: r.info.fitted_on.get("rounds") for k, r in self.rerankers.items()},
            "importance": {k: r.importance for k, r in self.rerankers.items()},
            "timing": self.timing,
        }


def _matrix(builders, lists: list[CandidateList], names: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Stacked rows, one-hot relevance and group sizes of ``lists`` (builders: one, or one per fold)."""
    rows, rel, groups = [], [], []
    for cl in lists:
        b = builders[str(cl.fold)] if isinstance(builders, dict) else builders
        rows.append(b.rows(cl.history, cl.candidates, cl.retriever, names))
        y = np.zeros(len(cl.candidates))
        y[cl.target] = 1
        rel.append(y)
        groups.append(len(cl.candidates))
    return np.vstack(rows), np.concatenate(rel), groups


def _train(config: RerankerConfig, names: list[str], train, valid, info: dict) -> tuple[RerankerInfo, Any]:
    import lightgbm as lgb

    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [10],
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": config.seed,
        "deterministic": True,
        "verbose": -1,
        **({"num_threads": config.threads} if config.threads else {}),
    }
    dtrain = lgb.Dataset(train[0], train[1], group=train[2], feature_name=names, free_raw_data=False)
    dvalid = lgb.Dataset(valid[0], valid[1], group=valid[2], reference=dtrain, free_raw_data=False)
    booster = lgb.train(params, dtrain, config.max_rounds, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(config.early_stopping, verbose=False)])  # fmt: skip
    rounds = booster.best_iteration or booster.current_iteration()
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))  # the kept rounds only
    fitted = {"rounds": rounds, "train_lists": len(train[2]), "valid_lists": len(valid[2]), **info}
    return RerankerInfo(features=names, fitted_on=fitted), booster


def fit_reranker(
    sc: Scenario, loaded=None, config: RerankerConfig | None = None, *, progress: bool = True
) -> RerankerRun:
    """The recipe of the module docstring on scenario ``sc``. ``loaded`` (a
    :class:`~ragrec.inference.models.LoadedModel`) supplies the LLM features; without it, or with
    ``config.llm_features`` off, only the reranker without them is fitted."""
    from ragrec.inference.adapters import model_fingerprint

    config = config or RerankerConfig()
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    lists, fold_priors, oof = out_of_fold_lists(sc, config, progress=progress)
    if not lists:
        raise RagrecError(f"no training position of scenario {sc.name!r} has its target among {config.candidates} "
                          "out-of-fold candidates")  # fmt: skip
    vlists = serving_lists(sc, S.VALID, None, config.candidates)
    vkept = [cl for cl in vlists if cl.target >= 0]
    if len(vkept) < 10:
        raise RagrecError(f"{len(vkept)} validation users have their target retrieved: too few to choose a reranker")
    timing["lists_seconds"] = time.perf_counter() - t0

    vectors, ids, layer, vec_info = None, [], None, {}
    use_llm = config.llm_features and loaded is not None
    if use_llm:
        t1 = time.perf_counter()
        vectors, ids, layer = item_vectors(loaded, sc.catalog, layer=config.vector_layer, progress=progress)
        timing["item_vectors_seconds"] = time.perf_counter() - t1
        vec_info = {"base_model": loaded.source, "base_fingerprint": model_fingerprint(loaded.model),
                    "vector_layer": layer}  # fmt: skip

    folds = {f: RerankFeatures(fold_priors[f], Transitions.from_histories(h), vectors, ids, config.max_history)
             for f, h in fold_histories(sc, config).items()}  # fmt: skip
    train_hist = [h.item_ids for h in sc.data.histories(splits=(S.TRAIN,)).values()]
    vbuild = RerankFeatures.from_histories(sc.catalog, train_hist, vectors, ids, config.max_history)
    base = [n for n in RERANK_FEATURES if n not in LLM_RERANK_FEATURES]
    variants = {"reranker_no_llm": base}
    if use_llm:
        variants["reranker"] = base + list(LLM_RERANK_FEATURES)
    rerankers: dict[str, Reranker] = {}
    valid: dict[str, float] = {"retriever": _ndcg(vlists, [cl.retriever for cl in vlists])}
    names = [n for n in FEATURES if n not in LLM_FEATURES]
    fusion = _fit_anchor(vlists, vbuild.priors, names)
    valid["fusion"] = _ndcg(vlists, [fusion.score(vbuild.priors.features(cl.history, cl.candidates, cl.retriever,
                                                                         None, names)) for cl in vlists])  # fmt: skip
    for key, feats in variants.items():
        t1 = time.perf_counter()
        train = _matrix(folds, lists, feats)
        vmat = _matrix(vbuild, vkept, feats)
        info, booster = _train(config, feats, train, vmat, {"recipe": "out-of-fold lists, early stopping on valid"})
        llm = key == "reranker"
        info = info.model_copy(update={"max_history": config.max_history, **(vec_info if llm else {})})
        rr = Reranker(info, booster, vectors if llm else None, ids if llm else ())
        scores = [rr.score(vbuild.rows(cl.history, cl.candidates, cl.retriever, feats)) for cl in vlists]
        valid[key] = _ndcg(vlists, scores)
        rr.info.fitted_on["valid_ndcg@10"] = round(valid[key], 6)
        rerankers[key] = rr
        timing[f"{key}_seconds"] = time.perf_counter() - t1
    served = max((k for k in SERVED if k in valid), key=lambda k: (valid[k], -SERVED.index(k)))
    valid = {k: round(v, 6) for k, v in valid.items()}
    return RerankerRun(served, fusion, rerankers, valid, oof, {k: round(v, 2) for k, v in timing.items()})
