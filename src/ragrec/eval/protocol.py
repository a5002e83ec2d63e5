"""The evaluation protocol of PROTOCOL.md: leave-one-out targets, full ranking, history masked.

* :func:`evaluate_encoder` ranks every catalog item for each user (exact, dense scores) and
  returns the pessimistic rank of the target.
* :func:`evaluate_retriever` evaluates a two-stage system's first stage as it runs: the target's
  rank in the retrieved list, or a miss (``inf``) when it is not retrieved.

For ``split="test"`` the history is train + valid; for ``"valid"`` it is train. With
``mask_history`` (the default, ragrec's convention) history items cannot be recommended;
without it they stay in the ranking (RecBole's convention for sequential models).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.data.dataset import InteractionData
from ragrec.ranking import DEFAULT_KS, metric_table, target_ranks
from ragrec.retrieval.base import Encoder
from ragrec.retrieval.retriever import CandidateSource

__all__ = ["EvalResult", "evaluate_encoder", "evaluate_retriever", "eval_users"]


@dataclass
class EvalResult:
    """Per-user ranks of one system on one split, and their metrics."""

    system: str
    dataset: str
    split: str
    users: list[str]
    ranks: np.ndarray  # (U,) 1-based pessimistic ranks, inf = not ranked/retrieved
    mask_history: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics(self, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
        return metric_table(self.ranks, ks)

    def row(self, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
        """A flat JSON row: dataset, system, split, users, metric keys (``ndcg@10``...) and extras."""
        return {
            "dataset": self.dataset,
            "system": self.system,
            "split": self.split,
            "history_masked": self.mask_history,
            "users": len(self.users),
            **{k: round(v, 6) for k, v in self.metrics(ks).items()},
            **self.extra,
        }


def eval_users(data: InteractionData, split: str) -> tuple[list[str], list[tuple[str, ...]], list[str]]:
    """Users with a ``split`` target, their history at that point (oldest first), their targets."""
    if split not in (S.VALID, S.TEST):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    targets = data.targets(split)
    seen = data.histories(splits=(S.TRAIN,) if split == S.VALID else (S.TRAIN, S.VALID))
    users = [u for u in targets]
    return users, [seen[u].item_ids if u in seen else () for u in users], [targets[u] for u in users]


def evaluate_encoder(
    encoder: Encoder,
    data: InteractionData,
    *,
    split: str = S.TEST,
    system: str | None = None,
    mask_history: bool = True,
    batch_size: int = 256,
    progress: bool = False,
) -> EvalResult:
    """Exact full-ranking evaluation of an encoder's scores (every catalog item ranked)."""
    users, histories, targets = eval_users(data, split)
    ranks = []
    for start in tqdm(
        range(0, len(users), batch_size), desc=f"eval {system or encoder.kind}", disable=not progress, leave=False
    ):
        hist = histories[start : start + batch_size]
        scores = torch.from_numpy(encoder.scores(hist))  # (B, N)
        mask = None
        if mask_history:
            mask = torch.zeros_like(scores, dtype=torch.bool)
            for row, h in enumerate(hist):
                mask[row, encoder.indices(h)] = True
        rows = [encoder.item_index.get(t, -1) for t in targets[start : start + batch_size]]
        valid = torch.tensor([r >= 0 for r in rows])
        r = target_ranks(scores, torch.tensor([max(x, 0) for x in rows]), mask)
        r[~valid] = float("inf")  # a target outside the encoder's catalog cannot be recommended
        ranks.append(r.numpy())
    return EvalResult(
        system or encoder.kind, data.name, split, users, np.concatenate(ranks) if ranks else np.zeros(0), mask_history
    )


def evaluate_retriever(
    retriever: CandidateSource,
    data: InteractionData,
    *,
    k: int,
    split: str = S.TEST,
    system: str = "retriever",
    batch_size: int = 256,
    progress: bool = False,
) -> EvalResult:
    """Two-stage evaluation: the target's rank among ``k`` retrieved candidates (history given
    explicitly and excluded), ``inf`` when it is not among them."""
    users, histories, targets = eval_users(data, split)
    ranks = np.full(len(users), np.inf)
    fallbacks = 0
    for start in tqdm(range(0, len(users), batch_size), desc=f"retrieve {system}", disable=not progress, leave=False):
        results = retriever.retrieve(histories=list(histories[start : start + batch_size]), k=k, exclude_seen=True)
        for offset, res in enumerate(results):
            fallbacks += res.fallback is not None
            ids = res.item_ids
            t = targets[start + offset]
            if t in ids:
                ranks[start + offset] = ids.index(t) + 1
    return EvalResult(system, data.name, split, users, ranks, True, {"k": k, "fallbacks": fallbacks})
