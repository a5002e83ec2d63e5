"""Ranking metrics against an independent implementation, several targets per user, pessimistic
ties in every evaluation path, NaN refusal, beyond-accuracy metrics and the position-bias summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import movie_data
from ragrec import schema as S
from ragrec.data import InteractionData
from ragrec.data.split import temporal_ratio
from ragrec.errors import RagrecError
from ragrec.eval.beyond import BeyondContext, beyond_accuracy
from ragrec.eval.llm import LLMScores, slot_bias
from ragrec.eval.protocol import eval_users, evaluate_encoder, evaluate_retriever
from ragrec.ranking import metric_table, per_user, target_ranks
from ragrec.retrieval import PopularityEncoder
from ragrec.types import Candidate, RetrievalResult


def test_ranking_metrics_match_torchmetrics_on_random_data():
    from torchmetrics.functional.retrieval import (
        retrieval_average_precision,
        retrieval_hit_rate,
        retrieval_normalized_dcg,
        retrieval_precision,
        retrieval_recall,
        retrieval_reciprocal_rank,
    )

    rng = np.random.default_rng(7)
    users, items = 60, 40
    scores = torch.from_numpy(rng.uniform(0.01, 1.0, size=(users, items)))  # positive: torchmetrics' AP needs it
    relevant = torch.zeros(users, items, dtype=torch.bool)
    targets = torch.full((users, 4), -1)
    for u in range(users):
        chosen = rng.choice(items, size=int(rng.integers(1, 5)), replace=False)
        relevant[u, chosen] = True
        targets[u, : len(chosen)] = torch.from_numpy(chosen)
    ranks = target_ranks(scores, targets).numpy()  # (U, 4), nan padding
    for k in (1, 5, 10):
        ours = {m: per_user(ranks, f"{m}@{k}") for m in ("recall", "precision", "ndcg", "mrr", "map")}
        for u in range(users):
            p, t = scores[u], relevant[u]
            assert ours["recall"][u] == pytest.approx(float(retrieval_recall(p, t, top_k=k)))
            assert ours["precision"][u] == pytest.approx(float(retrieval_precision(p, t, top_k=k)))
            assert ours["ndcg"][u] == pytest.approx(float(retrieval_normalized_dcg(p, t, top_k=k)), abs=1e-6)
            assert ours["mrr"][u] == pytest.approx(float(retrieval_reciprocal_rank(p, t, top_k=k)))
            # torchmetrics' AP@k divides by the hits found in the top k; ours by min(targets, k).
            hits = float(retrieval_hit_rate(p, t, top_k=k)) and int((ranks[u] <= k).sum())
            expected = float(retrieval_average_precision(p, t, top_k=k)) * hits / min(int(t.sum()), k) if hits else 0.0
            assert ours["map"][u] == pytest.approx(expected, abs=1e-6)


def test_single_target_metric_values_and_f1():
    ranks = np.array([1, 2, 11, np.inf])
    m = metric_table(ranks, ks=(10,))
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["precision@10"] == pytest.approx(0.05)
    assert m["f1@10"] == pytest.approx(np.mean([2 * 0.1 * 1 / 1.1] * 2 + [0, 0]))
    assert m["map@10"] == pytest.approx(m["mrr@10"])


def test_ties_are_pessimistic_in_every_path():
    # Full ranking: equal scores put the target last among them.
    flat = torch.zeros(2, 5)
    assert target_ranks(flat, torch.tensor([0, 4])).tolist() == [5.0, 5.0]
    # The retriever's rows: by the candidates' scores, not by the order the index returned them.
    data = movie_data()

    class TiedSource:
        def retrieve(self, user_ids=None, *, histories=None, k=20, exclude_seen=True):
            out = []
            for h in histories:
                ids = [i for i in data.item_ids() if i not in set(h)][:k]
                out.append(RetrievalResult(None, tuple(Candidate(i, 1.0, r + 1, "tied") for r, i in enumerate(ids))))
            return out

    users, _, targets = eval_users(data, S.TEST)
    res = evaluate_retriever(TiedSource(), data, k=20)
    n_unseen = [len([i for i in data.item_ids() if i not in set(h)]) for h in eval_users(data, S.TEST)[1]]
    assert all(r == min(n, 20) for r, n in zip(res.ranks, n_unseen)), res.ranks  # all tied: last, or a miss
    # The LLM stage's retriever row and its fused rows.
    s = LLMScores("d", "test", ["u"], [["a", "b", "c"]], [np.array([1.0, 1.0, 0.5])], [np.zeros(3)], np.array([0]))
    assert s.ranks(None).tolist() == [2.0] and s.ranks(0.0).tolist() == [3.0]


def test_nan_scores_are_refused_not_counted():
    with pytest.raises(ValueError, match="NaN or infinite"):
        target_ranks(torch.tensor([[0.1, float("nan"), 0.3]]), torch.tensor([0]))
    s = LLMScores("d", "test", ["u"], [["a", "b"]], [np.array([1.0, 0.5])], [np.array([np.nan, 0.0])], np.array([0]))
    with pytest.raises(ValueError, match="LLM scores of user 'u'"):
        s.ranks(1.0)
    data = movie_data()

    class NaNSource:
        def retrieve(self, user_ids=None, *, histories=None, k=20, exclude_seen=True):
            return [RetrievalResult(None, (Candidate("m0", float("nan"), 1, "x"),)) for _ in histories]

    with pytest.raises(ValueError, match="retriever scores"):
        evaluate_retriever(NaNSource(), data, k=5)


def _ratio_data() -> InteractionData:
    rows = [(f"u{u}", f"m{(u + t) % 12}", 10 * t + u, 4.0) for u in range(6) for t in range(8)]
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING])
    items = pd.DataFrame({S.ITEM_ID: [f"m{i}" for i in range(12)], S.TITLE: [f"movie {i}" for i in range(12)]})
    return temporal_ratio(InteractionData.from_frames("ratio", inter, items), (0.6, 0.2, 0.2))


def test_several_targets_per_user_end_to_end_or_a_clear_refusal():
    data = _ratio_data()
    sets = data.target_sets(S.TEST)
    assert max(len(v) for v in sets.values()) > 1
    with pytest.raises(RagrecError, match="holds several items for"):
        data.targets(S.TEST)
    with pytest.raises(RagrecError, match="one target per user"):
        eval_users(data, S.TEST)  # the LLM-stage evaluation goes through here
    pop = PopularityEncoder.fit(data)
    res = evaluate_encoder(pop, data)
    assert res.ranks.ndim == 2 and res.users == list(sets)
    # Oracle: rank every unseen item by popularity (pessimistic) and count the user's targets by hand.
    scores = pop.scores([()])[0]
    seen = data.histories(splits=(S.TRAIN, S.VALID))
    for row, u in enumerate(res.users):
        unseen = [i for i in data.item_ids() if i not in set(seen[u].item_ids)]
        expect = sorted(
            sum(scores[pop.item_index[j]] >= scores[pop.item_index[t]] for j in unseen) for t in sets[u]
        )  # fmt: skip
        got = sorted(x for x in res.ranks[row] if x == x)
        assert got == expect
        hits = sum(r <= 5 for r in expect)
        assert per_user(res.ranks, "recall@5")[row] == pytest.approx(hits / len(sets[u]))
    row = res.row()
    assert row["targets_per_user"] > 1 and "precision@10" in row and "coverage@10" in row
    # Model selection on such a split uses every validation target too.
    from ragrec.pipeline import select_ease
    from ragrec.retrieval import SASRecConfig, SASRecEncoder

    _, report = select_ease(data, (10.0,), (1.0,))
    assert report["valid_users"] == len(data.target_sets(S.VALID))
    SASRecEncoder.fit(
        data, SASRecConfig(hidden=8, layers=1, heads=1, max_len=5, epochs=1, batch_size=8), progress=False
    )


def test_beyond_accuracy_by_hand():
    ctx = BeyondContext.from_histories(["a", "b", "c", "d", "e"], [["a", "b"], ["a"], ["a", "c"], ["b"]],
                                       {"a": ["x"], "b": ["x", "y"], "c": ["y"], "d": [], "e": ["z"]})  # fmt: skip
    m = beyond_accuracy([["a", "b"], ["a", "c"]], 2, ctx)
    assert m["coverage@2"] == pytest.approx(3 / 5)
    assert m["arp@2"] == pytest.approx(np.mean([(3 / 4 + 2 / 4) / 2, (3 / 4 + 1 / 4) / 2]))
    novelty = {i: -np.log2((n + 1) / 5) for i, n in {"a": 3, "b": 2, "c": 1}.items()}
    assert m["novelty@2"] == pytest.approx(
        np.mean([(novelty["a"] + novelty["b"]) / 2, (novelty["a"] + novelty["c"]) / 2])
    )
    assert m["diversity@2"] == pytest.approx(np.mean([1 - 1 / 2, 1 - 0]))  # {x}~{x,y}: J=1/2; {x}~{y}: J=0
    assert m["tail@2"] == pytest.approx(np.mean([0.5, 0.5]))  # the head is the single most popular item, a


def test_position_bias_reports_every_slot_and_entropy():
    llm = [np.array([0.0, -1.0, -2.0]) - 0.1, np.array([-1.0, 0.0, -2.0]) - 0.1, np.array([-1.0, -2.0, 0.0]) - 0.1]
    s = LLMScores("d", "test", ["a", "b", "c"], [["x", "y", "z"]] * 3, [np.zeros(3)] * 3, llm, np.zeros(3, dtype=int))
    bias = slot_bias(s)
    assert bias.top_slot_share == pytest.approx([1 / 3] * 3, abs=1e-4)  # rounded to 4 places
    assert bias.entropy_bits == pytest.approx(np.log2(3), abs=1e-3) and bias.uniform_bits == pytest.approx(np.log2(3))
    skewed = slot_bias(LLMScores("d", "test", ["a", "b"], [["x", "y", "z"]] * 2, [np.zeros(3)] * 2, [llm[0]] * 2,
                                 np.zeros(2, dtype=int)))  # fmt: skip
    assert skewed.top_slot_share == [1.0, 0.0, 0.0] and skewed.entropy_bits == 0.0
    assert "A 100%" in skewed.summary() and "entropy 0.00 of 1.58 bits" in skewed.summary()


def test_per_user_file_and_recall_curve_with_several_targets(tmp_path):
    from ragrec.eval.protocol import EvalResult
    from ragrec.eval.report import recall_curve, write_per_user

    ranks = np.array([[1.0, 30.0], [2.0, np.nan], [np.inf, np.nan]])
    res = EvalResult("sys", "d", "test", ["a", "b", "c"], ranks)
    assert recall_curve(ranks, 3).tolist() == pytest.approx([0.5 / 3, (0.5 + 1) / 3, (0.5 + 1) / 3])
    path = write_per_user(tmp_path / "x.csv", [res], targets=[("i1", "i2"), ("i3",), ("i4",)])
    assert path.read_text().splitlines() == ["user_id,target,sys", "a,i1;i2,1;30", "b,i3,2", "c,i4,inf"]
