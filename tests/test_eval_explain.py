"""Explanation evaluation: BLEU-4 / ROUGE-L against the held-out review, grounding rate."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import movie_data
from ragrec import schema as S
from ragrec.data import InteractionData
from ragrec.data.split import leave_one_out
from ragrec.errors import RagrecError
from ragrec.eval.explain import evaluate_explanations, review_targets, rouge_l, text_metrics
from ragrec.inference import Recommender, RecommenderConfig, Scenario, ScenarioConfig, load_model


def _reviewed():
    """movie_data with a distinct review on every interaction; user u0's test review is missing
    and u1's too short to score."""
    base = movie_data()
    inter = base.interactions_frame()[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING, S.SPLIT]].copy()
    inter[S.REVIEW] = [
        f"Review {j} of {u}: it is a fine movie with a good story." for j, u in enumerate(inter[S.USER_ID])
    ]
    inter.loc[(inter[S.USER_ID] == "u0") & (inter[S.SPLIT] == S.TEST), S.REVIEW] = None
    inter.loc[(inter[S.USER_ID] == "u1") & (inter[S.SPLIT] == S.TEST), S.REVIEW] = "Meh."
    items = base.items_frame()
    return leave_one_out(InteractionData.from_frames("movies", inter.drop(columns=[S.SPLIT]), items)), inter


def test_text_metrics_range_and_errors():
    same = text_metrics(["the strings sound great , and last long ."], ["The strings sound great, and last long."])
    assert same["bleu4"] == pytest.approx(100) and same["rouge_l"] == pytest.approx(100)
    none = text_metrics(["awful tuner"], ["these strings sound great and last long"])
    assert none["bleu4"] == 0 and none["rouge_l"] == 0
    part = rouge_l(["strings sound great"], ["these strings sound great and last long"])
    assert 0 < part[0] < 100  # LCS 3 of 3 and of 7 words: F1 = 60
    assert part[0] == pytest.approx(60)
    with pytest.raises(ValueError, match="as many"):
        text_metrics(["a"], [])


def test_review_targets_are_the_held_out_reviews():
    data, inter = _reviewed()
    users, histories, items, refs, skipped = review_targets(data, S.TEST)
    assert skipped == {"no review text": 1, "review under 40 characters": 1}
    assert "u0" not in users and "u1" not in users and len(users) == 8
    test = inter[inter[S.SPLIT] == S.TEST].set_index(S.USER_ID)
    for u, h, i, r in zip(users, histories, items, refs):
        assert i == test.loc[u, S.ITEM_ID] and r == test.loc[u, S.REVIEW]  # the test review, not a training one
        assert i not in h
    with pytest.raises(RagrecError, match="no review text"):
        review_targets(movie_data(), S.TEST)


def test_explanations_are_scored_for_each_user(tiny_lm_dir):
    from ragrec.retrieval import PopularityEncoder, Retriever

    data, _ = _reviewed()
    sc = Scenario(ScenarioConfig(name="movies", item_noun="movie"), data,
                  Retriever.build(PopularityEncoder.fit(data, splits=(S.TRAIN,)), data))  # fmt: skip
    rec = Recommender(load_model(str(tiny_lm_dir)), [sc], RecommenderConfig(candidates=6, max_history=4))
    ev = evaluate_explanations(rec, system="tiny", users=["u2", "u3", "u4"], progress=False)
    assert ev.users == ["u2", "u3", "u4"] and len(ev.texts) == 3 and ev.grounded.dtype == np.bool_
    m = ev.metrics()
    assert m["users"] == 3 and 0 <= m["bleu4"] <= 100 and 0 <= m["rouge_l"] <= 100 and 0 <= m["grounded_rate"] <= 1
    oracle = ev.__class__(**{**ev.__dict__, "system": "oracle", "texts": list(ev.references)})
    diff = oracle.compare(ev)
    assert diff.difference > 0 and oracle.metrics()["rouge_l"] == pytest.approx(100)
    with pytest.raises(RagrecError, match="different users"):
        oracle.compare(evaluate_explanations(rec, users=["u2"], progress=False))
    with pytest.raises(RagrecError, match="no test users"):
        evaluate_explanations(rec, users=["u0"], progress=False)
