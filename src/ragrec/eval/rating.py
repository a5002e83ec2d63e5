"""Rating prediction, evaluated like practitioners do: MAE and RMSE on held-out ratings, with paired CIs.

The held-out ratings of a split are the ratings of its targets (leave-one-out: one per user). The
classic predictors come from scikit-surprise (SVD, the baseline estimates, item kNN) and are
fitted on the ratings of the splits before it; the LLM's ``rate`` task
(:meth:`~ragrec.inference.Recommender.predict_rating`) is scored on the same users with the same
history, so every row of a table is comparable user by user.

>>> from ragrec.eval.rating import RatingResult
>>> RatingResult("x", ["u1", "u2"], [4.0, 2.0], [5.0, 2.0]).metrics()
{'mae': 0.5, 'rmse': 0.707107, 'users': 2}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError
from ragrec.eval.metrics import BootstrapResult, paired_bootstrap

__all__ = [
    "HeldOutRatings",
    "RatingResult",
    "SURPRISE_ALGORITHMS",
    "SurpriseRater",
    "compare_ratings",
    "held_out_ratings",
    "select_surprise",
]

SURPRISE_ALGORITHMS = ("svd", "svdpp", "baseline", "knn_baseline")


@dataclass(frozen=True)
class HeldOutRatings:
    """The rated targets of a split: per user the item, its rating, and the history before it."""

    split: str
    users: list[str]
    items: list[str]
    ratings: np.ndarray  # (U,) float64
    histories: list[tuple[str, ...]]
    history_ratings: list[tuple[float | None, ...]]


def held_out_ratings(data: InteractionData, split: str) -> HeldOutRatings:
    """The ``split`` targets that carry a rating, with each user's earlier items and ratings.

    Raises when the dataset has no ratings (implicit feedback has nothing to predict)."""
    order = (S.TRAIN, S.VALID, S.TEST)
    if split not in order[1:]:
        raise RagrecError(f"held-out ratings come from {S.VALID!r} or {S.TEST!r}, not {split!r}")
    frame = data.interactions_frame()
    if S.RATING not in frame or not frame[S.RATING].notna().any():
        raise RagrecError(f"dataset {data.name!r} has no ratings: rating prediction needs explicit feedback")
    held = frame[(frame[S.SPLIT] == split) & frame[S.RATING].notna()]
    if held[S.USER_ID].duplicated().any():
        raise RagrecError(f"split {split!r} holds several targets per user; rating evaluation expects one")
    before = data.histories(splits=order[: order.index(split)])
    users, items, ratings, hists, hist_ratings = [], [], [], [], []
    for u, i, r in zip(held[S.USER_ID], held[S.ITEM_ID], held[S.RATING]):
        h = before.get(str(u))
        users.append(str(u))
        items.append(str(i))
        ratings.append(float(r))
        hists.append(h.item_ids if h else ())
        hist_ratings.append(h.ratings if h and h.ratings else (None,) * (len(h.item_ids) if h else 0))
    return HeldOutRatings(split, users, items, np.asarray(ratings, dtype=np.float64), hists, hist_ratings)


@dataclass
class RatingResult:
    """Predicted and true ratings of one system for the same users (in the same order)."""

    system: str
    users: list[str]
    predicted: Sequence[float]
    actual: Sequence[float]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.predicted = np.asarray(self.predicted, dtype=np.float64)
        self.actual = np.asarray(self.actual, dtype=np.float64)
        if not (len(self.users) == len(self.predicted) == len(self.actual)):
            raise ValueError("users, predicted and actual must have one entry per user")
        if not np.isfinite(self.predicted).all():
            raise RagrecError(f"{self.system}: predictions that are not finite numbers")

    @property
    def errors(self) -> np.ndarray:
        return self.predicted - self.actual

    def metrics(self) -> dict[str, float]:
        e = self.errors
        return {"mae": round(float(np.abs(e).mean()), 6), "rmse": round(float(np.sqrt((e**2).mean())), 6),
                "users": len(e)}  # fmt: skip

    def row(self) -> dict[str, Any]:
        return {"system": self.system, **self.metrics(), **self.info}


def compare_ratings(a: RatingResult, b: RatingResult, *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``a - b`` for MAE and RMSE, paired bootstrap over users (negative: ``a`` errs less).

    RMSE is not a mean of per-user values, so its interval resamples users and recomputes both RMSEs."""
    if a.users != b.users:
        raise ValueError(f"{a.system} and {b.system} cover different users")
    mae: BootstrapResult = paired_bootstrap(np.abs(a.errors), np.abs(b.errors), metric="mae", resamples=resamples,
                                            seed=seed)  # fmt: skip
    sq_a, sq_b = a.errors**2, b.errors**2
    idx = np.random.default_rng(seed).integers(0, len(sq_a), size=(resamples, len(sq_a)))
    diffs = np.sqrt(sq_a[idx].mean(axis=1)) - np.sqrt(sq_b[idx].mean(axis=1))
    low, high = np.quantile(diffs, [0.025, 0.975])
    rmse = {"difference": float(math.sqrt(sq_a.mean()) - math.sqrt(sq_b.mean())), "low": float(low),
            "high": float(high)}  # fmt: skip
    return {"name": f"{a.system} - {b.system}", "mae": vars(mae), "rmse": rmse, "users": len(a.users)}


class SurpriseRater:
    """A scikit-surprise algorithm fitted on the ratings of some splits, predicting (user, item) ratings.

    ``algorithm``: ``svd`` (biased matrix factorisation, Funk/Koren), ``svdpp`` (SVD++, with implicit
    feedback), ``baseline`` (global mean + user and item biases, ALS) or ``knn_baseline`` (item-item
    kNN on baseline residuals, pearson_baseline similarity). ``params`` go to the surprise class.
    Unknown users or items get surprise's documented fallback (the global mean, or the known biases)
    and are counted in :attr:`impossible`.
    """

    def __init__(self, algorithm: str = "svd", params: Mapping[str, Any] | None = None, *, seed: int = 0) -> None:
        if algorithm not in SURPRISE_ALGORITHMS:
            raise RagrecError(f"unknown surprise algorithm {algorithm!r}; valid: {', '.join(SURPRISE_ALGORITHMS)}")
        self.algorithm = algorithm
        self.params = dict(params or {})
        self.seed = seed
        self.model = None
        self.impossible = 0

    def _make(self):
        import surprise

        if self.algorithm == "svd":
            return surprise.SVD(random_state=self.seed, **self.params)
        if self.algorithm == "svdpp":
            return surprise.SVDpp(random_state=self.seed, **self.params)
        if self.algorithm == "baseline":
            return surprise.BaselineOnly(verbose=False, **self.params)
        sim = {"name": "pearson_baseline", "user_based": False, "shrinkage": 100}
        return surprise.KNNBaseline(sim_options=sim, verbose=False, **self.params)

    def fit(self, data: InteractionData, splits: Sequence[str] = (S.TRAIN,)) -> SurpriseRater:
        import surprise

        frame = data.interactions_frame()
        if S.RATING not in frame:
            raise RagrecError(f"dataset {data.name!r} has no ratings")
        rated = frame[frame[S.SPLIT].isin(list(splits)) & frame[S.RATING].notna()] if data.has_split else frame
        rated = rated[[S.USER_ID, S.ITEM_ID, S.RATING]].astype({S.USER_ID: str, S.ITEM_ID: str})
        if rated.empty:
            raise RagrecError(f"no ratings in splits {list(splits)}")
        lo, hi = float(rated[S.RATING].min()), float(rated[S.RATING].max())
        trainset = surprise.Dataset.load_from_df(rated, surprise.Reader(rating_scale=(lo, hi))).build_full_trainset()
        self.model = self._make()
        self.model.fit(trainset)
        return self

    def predict(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """Predicted rating of each (user, item) pair, clipped to the training rating scale."""
        if self.model is None:
            raise RagrecError("fit the rater first")
        out = np.empty(len(users), dtype=np.float64)
        self.impossible = 0
        for k, (u, i) in enumerate(zip(users, items)):
            p = self.model.predict(str(u), str(i))
            out[k] = p.est
            self.impossible += bool(p.details.get("was_impossible"))
        return out

    def evaluate(self, held: HeldOutRatings, system: str | None = None) -> RatingResult:
        pred = self.predict(held.users, held.items)
        info = {"algorithm": self.algorithm, "params": self.params, "fallback_predictions": self.impossible}
        return RatingResult(system or self.algorithm, held.users, pred, held.ratings, info)


def select_surprise(
    data: InteractionData, algorithm: str, grid: Sequence[Mapping[str, Any]], *, seed: int = 0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The parameters of ``grid`` with the lowest validation RMSE (fitted on train, scored on the
    validation targets' ratings; first best on ties), and every setting's figures."""
    held = held_out_ratings(data, S.VALID)
    tried, best = [], None
    for params in grid:
        m = SurpriseRater(algorithm, params, seed=seed).fit(data, (S.TRAIN,)).evaluate(held).metrics()
        tried.append({"params": dict(params), "valid_rmse": m["rmse"], "valid_mae": m["mae"]})
        if best is None or m["rmse"] < best[0]:
            best = (m["rmse"], dict(params))
    if best is None:
        raise RagrecError("empty grid")
    return best[1], tried
