"""Two-stage evaluation of the LLM stage: the retriever's candidates, re-ranked by the LLM.

For each evaluated user the retriever returns ``k`` candidates for their history at that point
(docs/evaluation.md: train for ``valid``, train + valid for ``test``; seen items excluded). The target's
rank is its position in the re-ranked list, ``inf`` when the retriever missed it, so a re-ranker
can only move targets the retriever found. Ranks are pessimistic: a tie with the target counts
against it. One LLM pass serves every fusion weight: ``score = z(llm) + w * z(retriever)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from ragrec import schema as S
from ragrec.errors import RagrecError
from ragrec.eval.beyond import BeyondContext
from ragrec.eval.protocol import EvalResult, eval_users
from ragrec.inference.fusion import DEFAULT_FEATURES, LLM_FEATURES, FusionModel, ItemPriors, fit_fusion
from ragrec.inference.recommender import Recommender, fuse_scores
from ragrec.ranking import check_finite, metric_table

__all__ = [
    "LLMScores",
    "score_llm",
    "llm_results",
    "choose_fusion_weight",
    "choose_fusion",
    "sample_users",
    "split_priors",
    "fit_learned_fusion",
    "SlotBias",
    "slot_bias",
    "slot_calibrated",
    "evaluate_llm_stage",
    "LLMStageReport",
]


@dataclass
class LLMScores:
    """Per user: candidate ids (retriever order), retriever and LLM scores, target position."""

    dataset: str
    split: str
    users: list[str]
    candidates: list[list[str]]
    retriever: list[np.ndarray]
    llm: list[np.ndarray]
    target_pos: np.ndarray  # (U,) index of the target among the candidates, -1 when not retrieved
    histories: list[list[str]] = field(default_factory=list)  # the histories the candidates came from

    @classmethod
    def without_llm(cls, dataset: str, split: str, lists: Sequence) -> LLMScores:
        """Scores of candidate lists that no LLM scored (its column is zeros): ``lists`` hold
        ``user_id``, ``history``, ``candidates``, ``retriever`` and ``target`` (e.g.
        :func:`ragrec.finetune.residual.serving_lists`), for systems that re-order them by other scores."""
        return cls(dataset, split, [cl.user_id for cl in lists], [list(cl.candidates) for cl in lists],
                   [np.asarray(cl.retriever, dtype=float) for cl in lists],
                   [np.zeros(len(cl.candidates)) for cl in lists], np.array([cl.target for cl in lists], dtype=int),
                   [list(cl.history) for cl in lists])  # fmt: skip

    def ranks(self, weight: float | None | Sequence[np.ndarray]) -> np.ndarray:
        """Pessimistic 1-based ranks: ``weight=None`` the retriever's order, a number the LLM score
        fused with that weight, or per-user candidate scores (e.g. a learned fusion's)."""
        out = np.full(len(self.users), np.inf)
        for u, pos in enumerate(self.target_pos):
            if pos < 0:
                continue
            s = self.candidate_scores(u, weight)
            out[u] = int((s >= s[pos]).sum())  # ties count against the target, the retriever's too
        return out

    def candidate_scores(self, u: int, weight: float | None | Sequence[np.ndarray]) -> np.ndarray:
        """User ``u``'s candidate scores under ``weight`` (see :meth:`ranks`); NaN/inf raise."""
        if weight is None:
            s = np.asarray(self.retriever[u], dtype=np.float64)
        elif isinstance(weight, (int, float)):
            check_finite(self.llm[u], f"LLM scores of user {self.users[u]!r}")
            s = fuse_scores(self.llm[u], self.retriever[u], weight)
        else:
            s = np.asarray(weight[u], dtype=np.float64)
        check_finite(s, f"candidate scores of user {self.users[u]!r}")
        return s

    def lists(self, weight: float | None | Sequence[np.ndarray]) -> list[tuple[str, ...]]:
        """Each user's candidates re-ordered by ``weight``'s scores, best first (stable on ties)."""
        out = []
        for u, cands in enumerate(self.candidates):
            s = self.candidate_scores(u, weight) if len(cands) else np.zeros(0)
            out.append(tuple(cands[j] for j in np.argsort(-s, kind="stable")))
        return out

    def subset(self, rows: Sequence[int]) -> LLMScores:
        """These scores for the users at ``rows`` only."""

        def pick(xs: list) -> list:
            return [xs[j] for j in rows] if xs else []

        return LLMScores(self.dataset, self.split, pick(self.users), pick(self.candidates), pick(self.retriever),
                         pick(self.llm), self.target_pos[np.asarray(rows, dtype=int)], pick(self.histories))  # fmt: skip

    def fusion_rows(self, priors: ItemPriors, names: Sequence[str], max_history: int = 20) -> list[np.ndarray]:
        """(C, F) learned-fusion features per user (needs ``histories``)."""
        if len(self.histories) != len(self.users):
            raise RagrecError("these scores carry no histories: the fusion's priors need them")
        return [priors.features(h, c, r, s, names, max_history) for h, c, r, s in
                zip(self.histories, self.candidates, self.retriever, self.llm)]  # fmt: skip


def sample_users(users: Sequence[str], n: int | None, seed: int = 0) -> list[str]:
    """``n`` users drawn without replacement (all when ``n`` is ``None`` or too large), in input order."""
    if n is None or n >= len(users):
        return list(users)
    keep = set(np.random.default_rng(seed).choice(len(users), size=n, replace=False).tolist())
    return [u for j, u in enumerate(users) if j in keep]


def score_llm(
    rec: Recommender,
    scenario: str | None = None,
    *,
    split: str = S.TEST,
    users: Sequence[str] | None = None,
    chunk: int = 32,
    progress: bool = True,
    retrieved_only: bool = False,
) -> LLMScores:
    """Retrieve and LLM-score the candidates of ``users`` (default: every user with a target).
    ``retrieved_only``: skip the LLM for users whose target was not retrieved (their LLM scores
    are zeros): they are misses under every fusion, so choosing or fitting one loses nothing."""
    sc = rec.scenario(scenario)
    all_users, histories, targets = eval_users(sc.data, split)
    wanted = set(users) if users is not None else None
    rows = [j for j, u in enumerate(all_users) if wanted is None or u in wanted]
    k = min(rec.config.candidates, len(sc.retriever.index))
    out = LLMScores(sc.data.name, split, [], [], [], [], np.zeros(0, dtype=int))
    positions = []
    bar = tqdm(total=len(rows), desc=f"LLM rank ({split})", disable=not progress, leave=False)
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        hist = [list(histories[j]) for j in part]
        results = sc.retriever.retrieve(histories=hist, k=k)
        cands = [r.item_ids for r in results]
        live = [i for i, c in enumerate(cands) if c and (not retrieved_only or targets[part[i]] in c)]
        scored = rec.score_candidates(sc, [hist[i] for i in live], [cands[i] for i in live])
        llm = dict(zip(live, scored))
        for i, (j, res) in enumerate(zip(part, results)):
            out.users.append(all_users[j])
            out.candidates.append(cands[i])
            out.retriever.append(np.array([c.score for c in res.candidates]))
            out.llm.append(llm.get(i, np.zeros(len(cands[i]))))
            out.histories.append(hist[i])
            positions.append(cands[i].index(targets[j]) if targets[j] in cands[i] else -1)
        bar.update(len(part))
    bar.close()
    out.target_pos = np.array(positions, dtype=int)
    return out


def choose_fusion_weight(scores: LLMScores, grid: Sequence[float] = (0, 0.25, 0.5, 1, 2, 4, 8)) -> tuple[float, dict]:
    """The weight of ``grid`` with the best NDCG@10 on ``scores`` (use validation scores)."""
    tried = {float(w): metric_table(scores.ranks(w), (10,))["ndcg@10"] for w in grid}
    best = max(tried, key=lambda w: (tried[w], -w))  # ties: the smaller weight
    return best, tried


def split_priors(sc, split: str) -> ItemPriors:
    """Item priors from the interactions a model evaluated on ``split`` may see (docs/evaluation.md):
    train for ``valid``, train + valid for ``test``."""
    seen = (S.TRAIN,) if split == S.VALID else (S.TRAIN, S.VALID)
    hist = sc.data.histories(splits=seen) if sc.data.has_split else sc.histories
    return ItemPriors.from_histories(sc.catalog, (h.item_ids for h in hist.values()))


def fit_learned_fusion(
    valid: LLMScores, priors: ItemPriors, names: Sequence[str], l2: float = 1e-2, max_history: int = 20
) -> FusionModel:
    """A :class:`~ragrec.inference.fusion.FusionModel` fitted on validation scores, its priors
    reading the last ``max_history`` history items."""
    model = fit_fusion(valid.fusion_rows(priors, names, max_history), valid.target_pos, names, l2=l2,
                       max_history=max_history)  # fmt: skip
    model.fitted_on.update({"split": valid.split, "dataset": valid.dataset})
    return model


def choose_fusion(
    valid: LLMScores,
    priors: ItemPriors,
    names: Sequence[str] = DEFAULT_FEATURES,
    seed: int = 0,
    max_history: int = 20,
) -> tuple[float, FusionModel | None, dict]:
    """What to serve, decided on validation scores out of sample (2-fold cross-fitting over the
    users: fit on one half, score the other): the fusion weight of :func:`choose_fusion_weight`, a
    learned fusion with the LLM, or the learned fusion of the retriever and item priors *without*
    the LLM. The LLM is kept only where it beats that last one out of sample; the winner is refit on
    all users. Returns ``(weight, fusion or None, report)``; a fusion without the LLM means the
    scenario ranks without running the LLM."""
    weight, tried = choose_fusion_weight(valid)
    report: dict = {"fusion_weight": weight, "valid_ndcg@10_by_weight": tried}
    plain = [n for n in names if n not in LLM_FEATURES]
    rows = valid.fusion_rows(priors, names, max_history)
    cols = [list(names).index(n) for n in plain]
    idx = np.random.default_rng(seed).permutation(len(valid.users))
    folds = [np.sort(idx[: len(idx) // 2]), np.sort(idx[len(idx) // 2 :])]
    ranks: dict[str, list[np.ndarray]] = {"weight": [], "learned": [], "no_llm": []}
    try:
        for k in (0, 1):
            fit, held = folds[1 - k], folds[k]
            w, _ = choose_fusion_weight(valid.subset(fit))
            model = fit_fusion([rows[j] for j in fit], valid.target_pos[fit], names, max_history=max_history)
            bare = fit_fusion([rows[j][:, cols] for j in fit], valid.target_pos[fit], plain, max_history=max_history)
            part = valid.subset(held)
            ranks["weight"].append(part.ranks(w))
            ranks["learned"].append(part.ranks([model.score(rows[j]) for j in held]))
            ranks["no_llm"].append(part.ranks([bare.score(rows[j][:, cols]) for j in held]))
    except RagrecError as e:  # too few retrieved targets to fit: the weight alone, said in the report
        report["learned_fusion"] = f"not fitted: {e}"
        return weight, None, report
    oof = {key: metric_table(np.concatenate(r), (10,))["ndcg@10"] for key, r in ranks.items()}
    report["out_of_sample_ndcg@10"] = oof
    if oof["no_llm"] >= max(oof["weight"], oof["learned"]):
        fusion = fit_learned_fusion(valid, priors, plain, max_history=max_history)
        report["learned_fusion"] = fusion.model_dump()
        report["served"] = "retriever + item priors without the LLM: the LLM did not beat it out of sample"
        return weight, fusion, report
    if oof["learned"] <= oof["weight"]:
        report["learned_fusion"] = "not kept: no better than the fusion weight out of sample"
        report["served"] = "fusion weight"
        return weight, None, report
    fusion = fit_learned_fusion(valid, priors, names, max_history=max_history)
    report["learned_fusion"] = fusion.model_dump()
    report["served"] = "learned fusion with the LLM"
    return weight, fusion, report


@dataclass(frozen=True)
class SlotBias:
    """How much an LLM's ranking depends on where the candidates were shown. Candidates are shown
    in the retriever's order, so a model that prefers the first letters inherits the retriever's
    ranking without judging the items (a small zero-shot model answering "A" for every user looks
    like a re-ranker that agrees with the retriever). Slots are positions in the retriever's order;
    with permutation averaging each candidate was also shown elsewhere, which dilutes the bias."""

    users: int  # users with LLM scores
    top_slot_share: list[float]  # (C,) share of users whose best-scored candidate was shown in each slot
    mean_score: list[float]  # (C,) mean LLM score of the candidate shown in each slot

    @property
    def entropy_bits(self) -> float:
        """Entropy of the top-choice distribution over the slots (bits)."""
        p = np.asarray([x for x in self.top_slot_share if x > 0])
        return max(0.0, float(-(p * np.log2(p)).sum())) if len(p) else 0.0  # no "-0.00"

    @property
    def uniform_bits(self) -> float:
        """The entropy with no position bias: log2 of the number of slots."""
        return float(np.log2(len(self.top_slot_share))) if self.top_slot_share else 0.0

    def summary(self) -> str:
        share = self.top_slot_share
        if not share:
            return "no user has LLM scores"
        letters = [chr(ord("A") + j) if j < 26 else str(j + 1) for j in range(len(share))]
        top = sorted(range(len(share)), key=lambda j: -share[j])[:3]
        shown = ", ".join(f"{letters[j]} {share[j]:.0%}" for j in top)
        return (f"over {self.users} users the LLM's top choice by slot: {shown} (no position bias: "
                f"{1 / len(share):.0%} each); entropy {self.entropy_bits:.2f} of {self.uniform_bits:.2f} bits")  # fmt: skip

    def as_dict(self) -> dict:
        return {"users": self.users, "top_slot_share": self.top_slot_share, "mean_score": self.mean_score,
                "entropy_bits": round(self.entropy_bits, 4), "uniform_bits": round(self.uniform_bits, 4)}  # fmt: skip


def _slot_matrix(scores: LLMScores) -> np.ndarray:
    """(U, C) LLM scores of the users that have them (``retrieved_only`` scoring leaves zeros), NaN
    where a user had fewer candidates."""
    width = max((len(s) for s in scores.llm), default=0)
    rows = [np.pad(np.asarray(s, dtype=float), (0, width - len(s)), constant_values=np.nan)
            for s in scores.llm if len(s) and np.any(np.asarray(s) != 0)]  # fmt: skip
    return np.array(rows).reshape(len(rows), width)


def slot_bias(scores: LLMScores) -> SlotBias:
    """The position bias of ``scores``' LLM column (see :class:`SlotBias`)."""
    m = _slot_matrix(scores)
    if not len(m):
        return SlotBias(0, [], [])
    best = np.nanargmax(m, axis=1)
    share = np.bincount(best, minlength=m.shape[1]) / len(m)
    return SlotBias(len(m), [round(float(x), 4) for x in share], [round(float(x), 4) for x in np.nanmean(m, axis=0)])


def slot_calibrated(scores: LLMScores, reference: LLMScores) -> list[np.ndarray]:
    """Per-user LLM scores minus the mean score of their slot over the ``reference`` users
    (contextual calibration, Zhao et al. 2021; use validation scores): a ranking by what the model
    says about the items rather than by where they were shown. Slots the reference never filled are
    left as they are; a reference without LLM scores raises."""
    ref = _slot_matrix(reference)
    if not len(ref):
        raise RagrecError("no reference user has LLM scores: nothing to calibrate the slots with")
    with warnings.catch_warnings():  # a slot no reference user had: NaN, left uncalibrated below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ref, axis=0)
    out = []
    for s in scores.llm:
        s = np.asarray(s, dtype=float)
        shift = np.zeros(len(s))
        n = min(len(s), len(mean))
        shift[:n] = np.nan_to_num(mean[:n])
        out.append(s - shift)
    return out


def llm_results(
    scores: LLMScores, systems: dict[str, float | None | Sequence[np.ndarray]], context: BeyondContext | None = None
) -> list[EvalResult]:
    """One :class:`EvalResult` per named system: ``None`` = retriever order, a number = fusion
    weight, a list of per-user candidate scores = those scores (e.g. a learned fusion's). With
    ``context`` the results carry the re-ranked lists for the beyond-accuracy metrics."""
    return [
        EvalResult(
            name,
            scores.dataset,
            scores.split,
            list(scores.users),
            scores.ranks(w),
            True,
            {
                "k": len(scores.candidates[0]) if scores.candidates else 0,
                "fusion_weight": w if w is None or isinstance(w, (int, float)) else "learned",
            },
            lists=scores.lists(w) if context is not None else None,
            context=context,
        )  # fmt: skip
        for name, w in systems.items()
    ]


@dataclass
class LLMStageReport:
    """What :func:`evaluate_llm_stage` measured: one result per system (the retriever first),
    paired comparisons against it, notes for the report, and the extra JSON fields (fusion weight
    tried on validation, position bias, learned fusions)."""

    title: str
    results: list
    comparisons: list
    notes: list[str]
    extra: dict


def evaluate_llm_stage(
    rec: Recommender,
    scenario: str | None = None,
    *,
    users: int | None = None,
    tune_users: int = 200,
    seed: int = 0,
    learned_fusion: bool = True,
    log=lambda s: None,
) -> LLMStageReport:
    """The retriever against retriever + LLM (as ``rec`` runs it: with the scenario's adapter or
    zero-shot) on the test split of ``scenario``: the LLM's order, a fusion weight chosen on
    ``tune_users`` validation users, the slot-calibrated LLM, and learned fusions with and without
    the LLM; paired bootstrap CIs against the retriever. ``ragrec eval llm`` writes it."""
    from ragrec.eval.protocol import beyond_context
    from ragrec.eval.report import compare

    sc = rec.scenario(scenario)
    llm = "LLM" + (" (fine-tuned)" if sc.adapter is not None else " (zero-shot)")
    systems: dict = {"retriever": None, f"retriever + {llm}": 0.0}
    extra: dict = {}
    valid = None
    if tune_users:
        picked = sample_users(list(sc.data.targets(S.VALID)), tune_users, seed)
        valid = score_llm(rec, sc.name, split=S.VALID, users=picked, retrieved_only=True)  # misses: no LLM needed
        weight, tried = choose_fusion_weight(valid)
        systems[f"retriever + {llm}, fused (w={weight:g} on valid)"] = weight
        extra = {"fusion_weight": weight, "valid_ndcg@10_by_weight": tried}
    test = score_llm(rec, sc.name, split=S.TEST, users=sample_users(list(sc.data.targets(S.TEST)), users, seed))
    bias = slot_bias(test)
    extra["position_bias"] = bias.as_dict()
    log(f"position bias: {bias.summary()}")
    if valid is not None:  # the LLM's own judgement of the items, its preference for early letters removed
        try:
            systems[f"retriever + {llm}, slot-calibrated on valid"] = slot_calibrated(test, valid)
        except RagrecError as e:  # no validation target retrieved: said, not hidden
            extra["slot_calibrated"] = f"not computed: {e}"
    if valid is not None and learned_fusion:
        priors = {split: split_priors(sc, split) for split in (S.VALID, S.TEST)}
        window = rec.config.max_history
        for label, names in (("item priors, no LLM", [n for n in DEFAULT_FEATURES if n != "llm"]),
                             (llm, list(DEFAULT_FEATURES))):  # fmt: skip
            try:
                fusion = fit_learned_fusion(valid, priors[S.VALID], names, max_history=window)
            except RagrecError as e:  # too few validation targets retrieved: reported, not hidden
                extra[f"learned_fusion ({label})"] = f"not fitted: {e}"
                log(f"learned fusion ({label}) not fitted: {e}")
                continue
            systems[f"learned fusion: retriever + {label}"] = [
                fusion.score(x) for x in test.fusion_rows(priors[S.TEST], names, window)
            ]
            extra[f"learned_fusion ({label})"] = fusion.model_dump()
    results = llm_results(test, systems, context=beyond_context(sc.data, S.TEST))
    comparisons = [(f"{r.system} - {results[0].system}", compare(r, results[0])) for r in results[1:]]
    notes = [f"Position bias (candidates are shown in the retriever's order): {bias.summary()}; share of top "
             f"choices per slot in the JSON."]  # fmt: skip
    if "slot_calibrated" not in extra and valid is not None:
        notes.append("Slot-calibrated: the LLM's scores minus the mean score of each slot over the validation users, "
                     "i.e. what the model says about the items rather than where they were shown.")  # fmt: skip
    return LLMStageReport(f"LLM stage on {sc.data.name} (test)", results, comparisons, notes, extra)
