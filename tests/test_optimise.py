"""Result optimisation: MMR against a hand computation, category caps, business rules applied
before any model sees the candidates, refill from deeper candidates, and rules that remove all."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import tiny_scenario
from ragrec.errors import RagrecError
from ragrec.inference import Recommender, RecommenderConfig, load_model
from ragrec.inference.optimise import ListRules, capped, mmr
from ragrec.types import Item

REC = RecommenderConfig(candidates=4, max_history=4)


def test_mmr_by_hand():
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # b duplicates a; c is different
    rel = np.array([1.0, 0.9, 0.5])
    assert mmr(rel, vectors, 3, 0.0) == [0, 1, 2]
    # after a: b = 0.5 * 0.8 - 0.5 * 1 = -0.1, c = 0.5 * 0 - 0.5 * 0 = 0 -> c; then b
    assert mmr(rel, vectors, 3, 0.5) == [0, 2, 1]
    assert mmr(rel, vectors, 2, 1.0) == [0, 2]  # pure diversity after the first
    assert mmr(np.array([2.0, 2.0]), np.eye(2), 2, 0.3) == [0, 1]  # ties: the earlier one
    with pytest.raises(ValueError, match="between 0 and 1"):
        mmr(rel, vectors, 2, 1.5)


def test_category_cap():
    cats = [("a",), ("a", "b"), ("b",), (), ("a",)]
    assert capped([0, 1, 2, 3, 4], cats, 1, 5) == [0, 2, 3]
    assert capped([0, 1, 2, 3, 4], cats, 2, 5) == [0, 1, 2, 3]  # 4 would be the third "a"


def test_rules_allow():
    item = Item("m1", "Heat", 1995, ("Crime", "Action"))
    assert ListRules().allows(item) and not ListRules().filters
    assert not ListRules(exclude_categories=["crime"]).allows(item)  # case-insensitive
    assert ListRules(include_categories=["action"]).allows(item)
    assert not ListRules(include_items=["m2"]).allows(item)
    assert not ListRules(year_min=1996).allows(item) and ListRules(year_max=1995).allows(item)
    assert not ListRules(year_min=1990).allows(Item("m9", "No year"))
    assert not ListRules(max_per_category=1).filters
    with pytest.raises(ValidationError, match="after year_max"):
        ListRules(year_min=2000, year_max=1990)
    with pytest.raises(ValidationError):
        ListRules(exclude=["m1"])  # unknown key


@pytest.fixture(scope="module")
def rec(tiny_lm_dir):
    return Recommender(load_model(str(tiny_lm_dir)), [tiny_scenario()], REC)


def test_a_forbidden_item_never_reaches_the_model_and_the_list_is_refilled(rec):
    user = next(iter(rec.scenario().histories))
    plain = rec.recommend(user, k=4)
    banned = plain.items[0].item_id
    seen: list[list[str]] = []
    real = rec.score_candidates

    def spy(sc, histories, candidates):
        seen.extend(list(c) for c in candidates)
        return real(sc, histories, candidates)

    rec.score_candidates = spy
    try:
        got = rec.recommend(user, k=4, rules=ListRules(exclude_items=[banned]))
    finally:
        rec.score_candidates = real
    assert seen and all(banned not in c for c in seen)
    assert len(got.items) == 4 and banned not in got.item_ids  # refilled from deeper candidates
    assert any("business rules removed 1" in n for n in got.notes)


def test_rules_that_remove_everything_give_a_clear_empty_result(rec):
    user = next(iter(rec.scenario().histories))
    got = rec.recommend(user, k=3, rules=ListRules(include_categories=["western"]))
    assert got.items == () and any("removed every one" in n for n in got.notes)


def test_category_rules_and_diversity_through_recommend(rec):
    sc = rec.scenario()
    user = next(iter(sc.histories))
    got = rec.recommend(user, k=3, rules=ListRules(exclude_categories=["comedy"]))
    assert got.items and all("comedy" not in sc.catalog[i].categories for i in got.item_ids)
    capped_list = rec.recommend(user, k=4, rules=ListRules(max_per_category=1))
    cats = [c for i in capped_list.item_ids for c in sc.catalog[i].categories]
    assert len(cats) == len(set(cats))
    diverse = rec.recommend(user, k=4, diversity=0.9)
    assert sorted(diverse.item_ids) == sorted(rec.recommend(user, k=4).item_ids)  # same 4 candidates, re-ordered
    with pytest.raises(RagrecError, match="between 0 and 1"):
        rec.recommend(user, k=3, diversity=2)
