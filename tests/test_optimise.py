"""Result optimisation: MMR against a hand computation, category caps, business rules applied
before any model sees the candidates, refill from deeper candidates, and rules that remove all."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import tiny_scenario
from ragrec.errors import RagrecError
from ragrec.inference import Recommender, RecommenderConfig, load_model
from ragrec.inference.optimise import ListRules, calibrated, capped, category_mix, long_tail, mmr
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


def test_long_tail_by_hand():
    rel = np.array([3.0, 2.0, 1.0])
    pop = np.array([np.e**2 - 1, np.e - 1, 0.0])  # log1p: 2, 1, 0 -> scaled 1, 0.5, 0
    np.testing.assert_allclose(long_tail(rel, pop, 0.5), [0.5 * 1 - 0.5 * 1, 0.5 * 0.5 - 0.5 * 0.5, 0.0])
    np.testing.assert_allclose(long_tail(rel, pop, 0.8), [0.2 - 0.8, 0.1 - 0.4, 0.0])  # the unpopular one wins
    assert long_tail(rel, pop, 0.0) is not None and list(long_tail(rel, pop, 0.0)) == [3.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="between 0 and 1"):
        long_tail(rel, pop, -0.1)


def test_calibration_by_hand():
    assert category_mix([("a",), ("a", "b"), ()]) == {"a": 0.75, "b": 0.25}
    assert category_mix([(), ()]) == {}
    rel = np.array([1.0, 0.9, 0.0])
    cats = [("a",), ("a",), ("b",)]
    target = {"a": 0.5, "b": 0.5}
    assert calibrated(rel, cats, target, 3, 0.0) == [0, 1, 2]
    assert calibrated(rel, cats, {}, 3, 0.9) == [0, 1, 2]  # a history without categories: as ranked
    # second pick, weight 0.5, a = 0.01 smoothing: q~ with item 1 = (0.995, 0.005); with item 2 = (0.5, 0.5)
    # item 1: 0.5 * (1 + 0.9) - 0.5 * KL = 0.95 - 0.5 * (0.5 ln(0.5/0.995) + 0.5 ln(0.5/0.005)) = 0.95 - 0.98 < 0
    # item 2: 0.5 * (1 + 0) - 0 = 0.5 -> item 2
    assert calibrated(rel, cats, target, 2, 0.5) == [0, 2]
    assert calibrated(rel, cats, {"a": 1.0}, 3, 0.5) == [0, 1, 2]  # the mix already matches
    with pytest.raises(ValueError, match="between 0 and 1"):
        calibrated(rel, cats, target, 2, 1.5)


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


def test_rules_by_name_long_tail_and_calibration_through_recommend(rec):
    sc = rec.scenario()
    user = next(iter(sc.histories))
    by_name = rec.recommend(user, k=3, exclude_categories=["comedy"])
    assert by_name.item_ids == rec.recommend(user, k=3, rules=ListRules(exclude_categories=["comedy"])).item_ids
    both = rec.recommend(user, k=3, rules=ListRules(exclude_items=["m1"]), exclude_categories=["comedy"])
    assert "m1" not in both.item_ids and all("comedy" not in sc.catalog[i].categories for i in both.item_ids)
    with pytest.raises(RagrecError, match="unknown argument"):
        rec.recommend(user, k=3, exclude_genres=["comedy"])
    with pytest.raises(RagrecError, match="invalid business rules"):
        rec.recommend(user, k=3, year_min=2000, year_max=1990)
    plain = rec.recommend(user, k=4)
    for shaped in (rec.recommend(user, k=4, long_tail=1.0), rec.recommend(user, k=4, calibration=0.9)):
        assert sorted(shaped.item_ids) == sorted(plain.item_ids)  # the same candidates, re-ordered
    pops = [sc.priors.popularity.get(i, 0) for i in rec.recommend(user, k=4, long_tail=1.0).item_ids]
    assert pops == sorted(pops)  # weight 1: least popular first
    with pytest.raises(RagrecError, match="set one of them"):
        rec.recommend(user, k=3, diversity=0.3, calibration=0.3)
    with pytest.raises(RagrecError, match="long_tail must be between 0 and 1"):
        rec.recommend(user, k=3, long_tail=1.5)


def test_scenario_exclusions_cannot_be_lifted_by_a_request(rec):
    sc = rec.scenario()
    user = next(iter(sc.histories))
    old = sc.config.rules
    sc.config.rules = ListRules(exclude_items=[rec.recommend(user, k=1).item_ids[0]])
    try:
        banned = sc.config.rules.exclude_items[0]
        got = rec.recommend(user, k=4, exclude_items=["m0"])
        assert banned not in got.item_ids and "m0" not in got.item_ids
    finally:
        sc.config.rules = old


def test_scenario_defaults_refuse_two_reorderings():
    from ragrec.inference import ScenarioConfig

    assert ScenarioConfig(name="x", long_tail=0.2, calibration=0.4).calibration == 0.4
    with pytest.raises(ValidationError, match="set one of them"):
        ScenarioConfig(name="x", diversity=0.3, calibration=0.3)
