"""The evaluation protocol of docs/evaluation.md: held-out targets, full ranking, history masked.

* :func:`evaluate_encoder` ranks every catalog item for each user (exact, dense scores) and
  returns the pessimistic rank of each target.
* :func:`evaluate_retriever` evaluates a two-stage system's first stage as it runs: each target's
  pessimistic rank among the retrieved candidates (by their scores), or a miss (``inf``) when it
  is not retrieved.

Both take every target of a user (several under a ``ratio:`` split: ``ranks`` is then ``(U, T)``,
see :mod:`ragrec.ranking`) and keep each user's top-``k`` list for the beyond-accuracy metrics
(:mod:`ragrec.eval.beyond`). For ``split="test"`` the history is train + valid; for ``"valid"`` it
is train. With ``mask_history`` (the default, ragrec's convention) history items cannot be
recommended; without it they stay in the ranking (RecBole's convention for sequential models).
NaN or infinite scores raise an error; they never count as a hit.
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
from ragrec.eval.beyond import BeyondContext, beyond_accuracy
from ragrec.ranking import DEFAULT_KS, check_finite, metric_table, pad_ranks, target_ranks
from ragrec.retrieval.base import Encoder
from ragrec.retrieval.retriever import CandidateSource

__all__ = ["EvalResult", "evaluate_encoder", "evaluate_retriever", "eval_users", "eval_target_sets", "beyond_context",
           "external_ranks"]  # fmt: skip


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

    lists: list[tuple[str, ...]] | None = None  # (U,) each user's top-k recommendation, best first
    context: BeyondContext | None = None  # catalog and popularity for the beyond-accuracy metrics

    def metrics(self, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
        """Accuracy metrics (:func:`ragrec.ranking.metric_table`) and, with ``lists``, coverage,
        novelty, diversity and popularity bias at each k (:func:`ragrec.eval.beyond.beyond_accuracy`)."""
        out = metric_table(self.ranks, ks)
        if self.lists is not None and self.context is not None:
            for k in ks:
                out.update(beyond_accuracy(self.lists, k, self.context))
        return out

    @property
    def targets_per_user(self) -> float:
        return float((~np.isnan(self.ranks)).sum() / max(len(self.users), 1)) if self.ranks.ndim == 2 else 1.0

    def row(self, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Any]:
        """A flat JSON row: dataset, system, split, users, metric keys (``ndcg@10``...) and extras."""
        return {
            "dataset": self.dataset,
            "system": self.system,
            "split": self.split,
            "history_masked": self.mask_history,
            "users": len(self.users),
            **({"targets_per_user": round(self.targets_per_user, 4)} if self.ranks.ndim == 2 else {}),
            **{k: round(v, 6) for k, v in self.metrics(ks).items()},
            **self.extra,
        }


def eval_users(data: InteractionData, split: str) -> tuple[list[str], list[tuple[str, ...]], list[str]]:
    """Users with a ``split`` target, their history at that point (oldest first), their targets.

    One target per user (raises for a split that holds several: see :func:`eval_target_sets`)."""
    users, histories, targets = eval_target_sets(data, split)
    one = data.targets(split)  # raises with the explanation when a user has several
    return users, histories, [one[u] for u in users]


def eval_target_sets(
    data: InteractionData, split: str, users: Sequence[str] | None = None
) -> tuple[list[str], list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Like :func:`eval_users` with every target of each user (a tuple); ``users`` restricts
    the evaluation to those users (in that order)."""
    if split not in (S.VALID, S.TEST):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    targets = data.target_sets(split)
    seen = data.histories(splits=(S.TRAIN,) if split == S.VALID else (S.TRAIN, S.VALID))
    if users is None:
        users = list(targets)
    else:
        missing = [u for u in users if u not in targets]
        if missing:
            raise ValueError(f"{len(missing)} users have no {split} target (e.g. {missing[0]!r})")
        users = list(users)
    return users, [seen[u].item_ids if u in seen else () for u in users], [targets[u] for u in users]


RANK_COLUMNS = ("rank", "rank_masked")


def external_ranks(path, data: InteractionData, split: str = S.TEST, system: str | None = None) -> EvalResult:
    """Per-user ranks computed by another library (RecBole, Cornac...) as an :class:`EvalResult`, so
    they sit in ragrec's report beside its own systems, with paired CIs over the same users.

    The CSV has a ``user_id`` column and a ``rank`` (or ``rank_masked``) column: the 1-based rank of
    the user's ``split`` target in the full catalog ranking, history masked like ragrec's protocol
    (docs/evaluation.md); empty, ``inf`` or ``nan`` = not ranked. An optional ``target`` column is
    checked against the split's targets (a file from another split is refused). Every user with a
    ``split`` target must appear exactly once, and no other user."""
    from pathlib import Path

    import pandas as pd

    from ragrec.errors import RagrecError

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RagrecError(f"{path}: not a readable CSV ({exc})") from exc
    column = next((c for c in RANK_COLUMNS if c in frame), None)
    if "user_id" not in frame or column is None:
        raise RagrecError(f"{path}: needs columns user_id and one of {RANK_COLUMNS}; found {list(frame.columns)}")
    if frame["user_id"].duplicated().any():
        raise RagrecError(f"{path}: user {frame['user_id'][frame['user_id'].duplicated()].iloc[0]!r} appears twice")
    users, _, targets = eval_target_sets(data, split)
    given = dict(zip(frame["user_id"], frame[column]))
    missing = [u for u in users if u not in given]
    extra = sorted(set(given) - set(users))
    if missing or extra:
        raise RagrecError(f"{path}: the users differ from {data.name}'s {split} users: {len(missing)} missing "
                          f"(e.g. {missing[:3]}), {len(extra)} not in the split (e.g. {extra[:3]})")  # fmt: skip
    if "target" in frame:
        stated = dict(zip(frame["user_id"], frame["target"]))
        wrong = [u for u, t in zip(users, targets) if stated[u] and stated[u] not in t]
        if wrong:
            raise RagrecError(f"{path}: {len(wrong)} targets differ from the {split} split (e.g. user {wrong[0]!r}: "
                              f"{stated[wrong[0]]!r}); the ranks were computed on another split")  # fmt: skip
    ranks = np.empty(len(users))
    for j, u in enumerate(users):
        cell = given[u].strip().lower()
        try:
            ranks[j] = np.inf if cell in ("", "inf", "nan") else float(cell)
        except ValueError:
            raise RagrecError(f"{path}: user {u!r} has rank {given[u]!r}, not a number") from None
        if not ranks[j] >= 1:
            raise RagrecError(f"{path}: user {u!r} has rank {given[u]!r}; ranks start at 1")
    return EvalResult(system or path.stem, data.name, split, users, ranks, extra={"source": str(path)})


def beyond_context(data: InteractionData, split: str) -> BeyondContext:
    """Catalog, popularity (from every user's history visible at ``split``: train for ``valid``,
    train + valid for ``test``) and categories for the beyond-accuracy metrics."""
    seen = data.histories(splits=(S.TRAIN,) if split == S.VALID else (S.TRAIN, S.VALID))
    return BeyondContext.from_histories(data.item_ids(), (h.item_ids for h in seen.values()),
                                        {i: data.item(i).categories for i in data.item_ids()})  # fmt: skip


def evaluate_encoder(
    encoder: Encoder,
    data: InteractionData,
    *,
    split: str = S.TEST,
    system: str | None = None,
    mask_history: bool = True,
    batch_size: int = 256,
    progress: bool = False,
    users: Sequence[str] | None = None,
    list_k: int = max(DEFAULT_KS),
) -> EvalResult:
    """Exact full-ranking evaluation of an encoder's scores (every catalog item ranked); keeps
    each user's top ``list_k`` (0: none) for the beyond-accuracy metrics."""
    users, histories, targets = eval_target_sets(data, split, users)
    ranks: list[list[float]] = []
    lists: list[tuple[str, ...]] = []
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
        batch_targets = targets[start : start + batch_size]
        width = max(len(t) for t in batch_targets)
        cols = [[encoder.item_index.get(t, -2) for t in ts] + [-1] * (width - len(ts)) for ts in batch_targets]
        idx = torch.tensor(cols)  # (B, T): -1 padding, -2 a target outside the encoder's catalog
        r = target_ranks(scores, idx.clamp(min=-1), mask)  # (B, T)
        r[idx == -2] = float("inf")  # a target outside the encoder's catalog cannot be recommended
        ranks.extend([[x for x in row if x == x] for row in r.tolist()])
        if list_k:
            masked = scores.masked_fill(mask, float("-inf")) if mask is not None else scores
            top = torch.topk(masked, min(list_k, masked.shape[1]), dim=1)
            for vals, ids in zip(top.values.tolist(), top.indices.tolist()):
                lists.append(tuple(encoder.item_ids[i] for v, i in zip(vals, ids) if v != float("-inf")))
    return EvalResult(system or encoder.kind, data.name, split, users, pad_ranks(ranks), mask_history,
                      lists=lists if list_k else None, context=beyond_context(data, split) if list_k else None)  # fmt: skip


def evaluate_retriever(
    retriever: CandidateSource,
    data: InteractionData,
    *,
    k: int,
    split: str = S.TEST,
    system: str = "retriever",
    batch_size: int = 256,
    progress: bool = False,
    users: Sequence[str] | None = None,
) -> EvalResult:
    """Two-stage evaluation: each target's pessimistic rank among ``k`` retrieved candidates (by
    the candidates' scores; history given explicitly and excluded), ``inf`` when it is not among
    them. The retrieved lists are kept for the beyond-accuracy metrics."""
    users, histories, targets = eval_target_sets(data, split, users)
    ranks: list[list[float]] = []
    lists: list[tuple[str, ...]] = []
    fallbacks = 0
    for start in tqdm(range(0, len(users), batch_size), desc=f"retrieve {system}", disable=not progress, leave=False):
        results = retriever.retrieve(histories=list(histories[start : start + batch_size]), k=k, exclude_seen=True)
        for offset, res in enumerate(results):
            fallbacks += res.fallback is not None
            scores = np.array([c.score for c in res.candidates], dtype=np.float64)
            check_finite(scores, f"retriever scores of user {users[start + offset]!r}")
            by_id = dict(zip(res.item_ids, scores))
            # Pessimistic: a target ranks after every candidate scoring at least as high.
            ranks.append([float((scores >= by_id[t]).sum()) if t in by_id else float("inf")
                          for t in targets[start + offset]])  # fmt: skip
            lists.append(tuple(res.item_ids))
    return EvalResult(system, data.name, split, users, pad_ranks(ranks), True, {"k": k, "fallbacks": fallbacks},
                      lists=lists, context=beyond_context(data, split))  # fmt: skip
