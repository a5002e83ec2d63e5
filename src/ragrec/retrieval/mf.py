"""Matrix factorisation first stages through the ``implicit`` package: ALS and BPR.

Training is ``implicit``'s (Hu, Koren & Volinsky's weighted ALS for implicit feedback; Rendle et
al.'s BPR), on the binary user x item matrix of the training interactions. Serving keeps only the
item factors: a user's vector is *folded in* from their history (any history, of a known user or
not, including interactions made after training), so new users and new interactions need no
retraining. The fold-in is ALS's user step with the item factors fixed::

    u = (Y^T Y + sum_h (c_h - 1) y_h y_h^T + lambda I)^-1  sum_h c_h y_h,   c_h = alpha * decay ** age_h

(``implicit``'s confidence of an interaction is ``alpha`` times its value and 1 for every other
item; the newest history item has age 0; ``decay = 1`` weighs the history alike, which is exactly
``implicit``'s ``recalculate_user``). For BPR the last factor column is the item bias
(``implicit`` learns it against a user column fixed at 1): the fold-in solves for the other columns
and the query carries the 1, so the bias stays in every score. BPR does not define a fold-in of its
own; the least-squares one above is an approximation whose cost is measured on validation
(``benchmarks/results/retrieval.md``: BPR with its trained user factors beside the folded-in ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.errors import RagrecError
from ragrec.retrieval.base import ENCODERS, Encoder, interaction_matrix

__all__ = ["MFConfig", "MFEncoder"]

_CHUNK = 512  # histories solved per batched linear solve


class MFConfig(BaseModel):
    """Settings of a matrix factorisation first stage. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    algorithm: Literal["als", "bpr"] = Field("als", description="implicit's weighted ALS, or BPR.")
    factors: int = Field(64, ge=1, description="Latent dimensions (BPR adds one for the item bias).")
    regularization: float = Field(0.05, ge=0, description="L2 weight of the factors in training.")
    alpha: float = Field(
        1.0, gt=0, description="Confidence of an interaction (every other item: 1), in training and fold-in."
    )
    iterations: int | None = Field(None, ge=1, description="Training passes (None: 15 for ALS, 100 for BPR).")
    learning_rate: float = Field(0.01, gt=0, description="BPR's SGD step.")
    fold_in_regularization: float | None = Field(
        None, gt=0, description="L2 weight of the folded-in user vector (None: `regularization`, at least 1e-3)."
    )
    decay: float = Field(1.0, gt=0, le=1, description="Fold-in weight of a history item = decay ** (its age in items).")
    seed: int = Field(0, description="Initialisation and sampling seed.")
    threads: int = Field(0, ge=0, description="Training threads (0: all cores).")

    @property
    def passes(self) -> int:
        return self.iterations or (15 if self.algorithm == "als" else 100)

    @property
    def fold_in_l2(self) -> float:
        return self.fold_in_regularization or max(self.regularization, 1e-3)


@ENCODERS.decorator("mf")
class MFEncoder(Encoder):
    """ALS or BPR item factors with a fold-in query (see module docstring)."""

    kind = "mf"

    def __init__(self, item_ids: Sequence[str], item_factors: np.ndarray, config: MFConfig) -> None:
        super().__init__(item_ids)
        factors = np.asarray(item_factors, dtype=np.float32)
        width = config.factors + (1 if config.algorithm == "bpr" else 0)
        if factors.shape != (len(self.item_ids), width):
            raise ValueError(f"item factors of shape {factors.shape}; expected ({len(self.item_ids)}, {width})")
        self.factors = factors
        self.config = config
        y = self._latent.astype(np.float64)
        self._gram = y.T @ y + config.fold_in_l2 * np.eye(y.shape[1])  # (f, f), shared by every fold-in

    @property
    def _latent(self) -> np.ndarray:
        """(N, f) the factors the fold-in solves against (BPR: without the bias column)."""
        return self.factors[:, : self.config.factors]

    @classmethod
    def fit(
        cls,
        data: InteractionData,
        config: MFConfig | None = None,
        splits: Sequence[str] = (S.TRAIN,),
        *,
        progress: bool = False,
        user_factors: bool = False,
    ):
        """Train on the interactions of ``splits``. With ``user_factors`` also returns the trained
        user vectors (users in the order of ``data.histories``), for comparing them with the fold-in."""
        hist = data.histories(splits=splits if data.has_split else None)
        return cls.from_sequences(data.item_ids(), [h.item_ids for h in hist.values()], config, progress=progress,
                                  user_factors=user_factors)  # fmt: skip

    @classmethod
    def from_sequences(
        cls,
        item_ids: Sequence[str],
        sequences: Iterable[Sequence[str]],
        config: MFConfig | None = None,
        *,
        progress: bool = False,
        user_factors: bool = False,
    ):
        """Train over the catalog ``item_ids`` on users' item sequences (one row each; repeats count
        once). Items outside ``item_ids`` raise; items no sequence holds keep their initial factors
        (ALS: zero after the first pass; BPR: pushed down as negatives)."""
        from threadpoolctl import threadpool_limits

        config = config or MFConfig()
        item_ids = list(item_ids)
        matrix = interaction_matrix(item_ids, sequences)
        if not matrix.nnz:
            raise RagrecError("no interactions to factorise")
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads inside them oversubscribe
            model = _model(config)
            model.fit(matrix, show_progress=progress)
        encoder = cls(item_ids, np.asarray(model.item_factors), config)
        return (encoder, np.asarray(model.user_factors)) if user_factors else encoder

    def item_embeddings(self) -> np.ndarray:
        return self.factors

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """Folded-in user vectors (BPR: with the bias column's 1). An empty history folds in to zero."""
        f, alpha = self.config.factors, self.config.alpha
        y = self._latent.astype(np.float64)
        users = np.zeros((len(histories), f), dtype=np.float64)
        for start in range(0, len(histories), _CHUNK):
            part = [self.recency_weights(h, self.config.decay) for h in histories[start : start + _CHUNK]]
            lhs = np.repeat(self._gram[None], len(part), axis=0)  # (B, f, f)
            rhs = np.zeros((len(part), f))
            for b, weights in enumerate(part):
                if weights:
                    cols = np.fromiter(weights, dtype=np.int64)
                    c = alpha * np.fromiter(weights.values(), dtype=np.float64)  # confidences
                    yh = y[cols]
                    lhs[b] += (yh * (c - 1.0)[:, None]).T @ yh
                    rhs[b] = (c[:, None] * yh).sum(axis=0)
            users[start : start + len(part)] = np.linalg.solve(lhs, rhs[..., None])[..., 0]
        if self.config.algorithm == "bpr":
            users = np.hstack([users, np.ones((len(histories), 1))])
        return users.astype(np.float32)

    def _config(self) -> dict[str, Any]:
        return self.config.model_dump()

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"item_factors": torch.from_numpy(self.factors)}

    @classmethod
    def _rebuild(cls, item_ids: list[str], config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> MFEncoder:
        return cls(item_ids, tensors["item_factors"].numpy(), MFConfig(**config))


def _model(config: MFConfig):
    """The ``implicit`` CPU model of ``config`` (CPU explicitly: results do not depend on a GPU being there)."""
    if config.algorithm == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(factors=config.factors, regularization=config.regularization, alpha=config.alpha,
                                       iterations=config.passes, random_state=config.seed, num_threads=config.threads)  # fmt: skip
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    return BayesianPersonalizedRanking(factors=config.factors, learning_rate=config.learning_rate,
                                       regularization=config.regularization, iterations=config.passes,
                                       random_state=config.seed, num_threads=config.threads)  # fmt: skip
