"""Learned fusion: item-prior features against hand computations, the conditional logit recovers
known weights, bad input, and a Recommender serving a saved fusion."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import hash_embedder, tiny_scenario
from ragrec.errors import RagrecError
from ragrec.eval.llm import LLMScores, llm_results, slot_bias, slot_calibrated
from ragrec.inference import (
    DEFAULT_FEATURES,
    FusionModel,
    ItemPriors,
    Recommender,
    RecommenderConfig,
    fit_fusion,
    load_model,
)
from ragrec.types import Item

CATALOG = {
    "a": Item("a", "A", 1990, ("drama",)),
    "b": Item("b", "B", 2000, ("comedy",)),
    "c": Item("c", "C", 2010, ("drama", "comedy")),
    "d": Item("d", "D", None, ()),
}


def test_features_match_hand_computation():
    priors = ItemPriors.from_histories(CATALOG, [["a", "b"], ["a"], ["a", "c"]])
    x = priors.features(["b", "a", "a"], ["a", "b", "c", "d"], np.array([1.0, 2.0, 3.0, 4.0]),
                        np.array([0.0, 0.0, 0.0, 1.0]), max_history=2)  # fmt: skip
    cols = dict(zip(DEFAULT_FEATURES, x.T))
    sd = np.std([1, 2, 3, 4])
    assert cols["retriever"] == pytest.approx((np.array([1, 2, 3, 4]) - 2.5) / sd)
    assert cols["llm"] == pytest.approx(np.array([-1, -1, -1, 3]) / np.sqrt(3))
    assert cols["popularity"] == pytest.approx(np.log1p([3, 1, 1, 0]))
    # The last 2 history items are a, a: profile = drama only.
    assert cols["category_match"] == pytest.approx([1.0, 0.0, 1 / np.sqrt(2), 0.0])
    # Median history year 1990; no year -> 0.
    assert cols["year_offset"] == pytest.approx([0.0, 1.0, 2.0, 0.0])
    assert cols["year_gap"] == pytest.approx([0.0, 1.0, 2.0, 0.0])
    only = priors.features(["a"], ["b", "c"], np.array([0.0, 1.0]), names=["popularity", "retriever"])
    assert only.shape == (2, 2) and only[:, 0] == pytest.approx(np.log1p([1, 1]))
    with pytest.raises(RagrecError, match="LLM's score"):
        priors.features(["a"], ["b", "c"], np.array([0.0, 1.0]))


def test_fit_recovers_the_weights_that_chose_the_targets():
    rng = np.random.default_rng(0)
    names = ["retriever", "popularity", "category_match"]
    true = np.array([1.5, -0.8, 0.0])
    rows, pos = [], []
    for _ in range(3000):
        x = rng.normal(size=(20, 3))
        p = np.exp(x @ true)
        rows.append(x)
        pos.append(int(rng.choice(20, p=p / p.sum())))
    pos[:100] = [-1] * 100  # targets the retriever missed carry nothing
    fusion = fit_fusion(rows, pos, names, l2=1e-4)
    got = np.array([fusion.weights[n] for n in names])
    assert got == pytest.approx(true, abs=0.12)
    assert fusion.fitted_on["users"] == 2900
    scores = fusion.score(rows[0])
    assert scores == pytest.approx(rows[0] @ got)


def test_bad_fusion_input():
    with pytest.raises(RagrecError, match="too few"):
        fit_fusion([np.zeros((5, 2))] * 3, [0, 1, -1], ["retriever", "llm"])
    with pytest.raises(ValidationError, match="allowed"):
        FusionModel(weights={"retriever": 1.0, "vibes": 2.0})
    with pytest.raises(ValidationError):
        FusionModel(weights={})


def test_llm_results_accept_per_user_scores():
    scores = LLMScores("d", "test", ["u", "v"], [["a", "b", "c"], ["a", "b"]],
                       [np.array([3.0, 2.0, 1.0]), np.array([1.0, 0.0])], [np.zeros(3), np.zeros(2)],
                       np.array([2, -1]))  # fmt: skip
    retr, mine = llm_results(scores, {"retriever": None, "mine": [np.array([0.0, 1.0, 5.0]), np.array([1.0, 0.0])]})
    assert list(retr.ranks[:1]) == [3] and list(mine.ranks[:1]) == [1]
    assert np.isinf(mine.ranks[1]) and mine.extra["fusion_weight"] == "learned"
    with pytest.raises(RagrecError, match="histories"):
        scores.fusion_rows(ItemPriors(CATALOG, {}), ["retriever"])


def test_slot_bias_and_calibration_separate_position_from_content():
    """A model that prefers the first slot by 5 nats: it always "chooses" slot 0; its content signal
    (+1 for the target, shown in slot 2) appears once each slot's mean over other users is removed."""
    rng = np.random.default_rng(0)

    def scores(n: int, with_target: bool) -> LLMScores:
        llm = []
        for _ in range(n):
            s = rng.normal(0, 0.1, 4) + np.array([5.0, 0, 0, 0])
            s[2] += 1.0 if with_target else 0.0
            llm.append(s)
        llm.append(np.zeros(4))  # a user retrieved_only scoring skipped: ignored
        return LLMScores("d", "x", [str(j) for j in range(n + 1)], [list("abcd")] * (n + 1),
                         [np.zeros(4)] * (n + 1), llm, np.array([2] * n + [-1]))  # fmt: skip

    reference, test = scores(50, False), scores(20, True)
    bias = slot_bias(test)
    assert bias.users == 20 and bias.top_slot_share[0] == 1.0 and "100%" in bias.summary()
    assert bias.mean_score[0] > 4 > bias.mean_score[1]
    assert list(test.ranks(0.0)[:20]) == [2] * 20  # uncalibrated: the target is second, behind slot 0
    calibrated = slot_calibrated(test, reference)
    assert list(test.ranks(calibrated)[:20]) == [1] * 20
    short = LLMScores("d", "x", ["u"], [list("abcdef")], [np.zeros(6)], [np.arange(6.0)], np.array([0]))
    assert np.allclose(slot_calibrated(short, reference)[0][4:], [4, 5])  # slots the reference lacks: unchanged
    with pytest.raises(RagrecError, match="no reference user"):
        slot_calibrated(test, reference.subset([50]))  # only the unscored user


def test_recommender_serves_a_saved_fusion(tiny_lm_dir, tmp_path):
    loaded = load_model(str(tiny_lm_dir), device="cpu")
    sc = tiny_scenario()
    sc.config.fusion = FusionModel(weights={"popularity": -1.0, "llm": 1e-6})  # least popular first
    rec = Recommender(loaded, [sc], RecommenderConfig(candidates=6))
    out = rec.recommend("u2", k=6)
    pops = [sc.priors.popularity.get(i, 0) for i in out.item_ids]
    assert pops == sorted(pops) and len(set(pops)) > 1
    back = Recommender.from_pretrained(rec.save_pretrained(tmp_path / "rec"), loaded=loaded, embedder=hash_embedder)
    assert back.scenario().config.fusion == sc.config.fusion
    assert back.recommend("u2", k=6).item_ids == out.item_ids
    # A fusion replaced in a live process is served with its own history window (priors are shared).
    for window in (1, 20):
        sc.config.fusion = FusionModel(weights={"category_match": 1.0, "year_gap": -0.5, "llm": 1e-6},
                                       max_history=window)  # fmt: skip
        got = rec.recommend("u2", k=6)
        history = rec.scenario().histories["u2"].item_ids
        ids = list(got.item_ids)
        want = sc.priors.features(history, ids, np.zeros(len(ids)), np.zeros(len(ids)), sc.config.fusion.names, window)
        assert [x.score for x in got.items] == pytest.approx(list(sc.config.fusion.score(want)), abs=1e-5)


def test_choose_fusion_keeps_a_learned_fusion_only_when_it_wins_out_of_sample():
    from ragrec.eval.llm import choose_fusion

    rng = np.random.default_rng(3)
    catalog = {f"i{j}": Item(f"i{j}", f"T{j}") for j in range(300)}
    priors = ItemPriors(catalog, {f"i{j}": int(c) for j, c in enumerate(rng.integers(0, 500, size=300))})
    users, cands, retr, llm, pos = [], [], [], [], []
    for u in range(400):  # the target follows popularity; the retriever and the LLM are noise
        c = list(rng.choice(list(catalog), size=20, replace=False))
        p = np.exp(1.5 * np.log1p([priors.popularity[i] for i in c]))
        users.append(f"u{u}"), cands.append(c), retr.append(rng.normal(size=20)), llm.append(rng.normal(size=20))
        pos.append(int(rng.choice(20, p=p / p.sum())) if u % 4 else -1)
    scores = LLMScores("d", "valid", users, cands, retr, llm, np.array(pos), [[] for _ in users])
    weight, fusion, report = choose_fusion(scores, priors)
    assert fusion is not None and fusion.weights["popularity"] > 1.0
    assert report["out_of_sample_ndcg@10"]["learned"] > report["out_of_sample_ndcg@10"]["weight"]
    # the LLM is noise here: the fusion without it is served, and the LLM is not run for ranking
    assert not fusion.uses_llm and report["served"].startswith("retriever + item priors without the LLM")
    assert report["out_of_sample_ndcg@10"]["no_llm"] >= report["out_of_sample_ndcg@10"]["learned"]
    # an LLM that knows the target is kept
    knowing = [np.where(np.arange(20) == p, 3.0, 0.0) + rng.normal(size=20) for p in pos]
    told = LLMScores("d", "valid", users, cands, retr, knowing, np.array(pos), [[] for _ in users])
    _, fusion, report = choose_fusion(told, priors)
    assert fusion is not None and fusion.uses_llm and report["served"] == "learned fusion with the LLM"
    few = scores.subset(range(12))
    weight, fusion, report = choose_fusion(few, priors)
    assert (
        fusion is None
        and report["learned_fusion"].startswith("not fitted")
        and weight in report["valid_ndcg@10_by_weight"]
    )
