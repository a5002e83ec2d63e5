"""The learning-to-rank stage: its features, fitting on out-of-fold lists, the choice on
validation, serving through the Recommender without an LLM pass, and saving without pickle."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import walking_data
from ragrec import schema as S
from ragrec.errors import CacheError, RagrecError
from ragrec.finetune.config import RerankerConfig
from ragrec.finetune.ltr import fit_reranker, list_ranks
from ragrec.finetune.residual import serving_lists
from ragrec.inference import Recommender, RecommenderConfig, Scenario, ScenarioConfig, load_model
from ragrec.inference.rerank import LLM_RERANK_FEATURES, RERANK_FEATURES, Reranker, RerankFeatures, Transitions
from ragrec.retrieval import EASEConfig, EASEEncoder, Retriever

REC = RecommenderConfig(candidates=6, max_history=4)
CONFIG = RerankerConfig(folds=2, candidates=6, min_data_in_leaf=5, num_leaves=7, max_rounds=60, early_stopping=20,
                        threads=1)  # fmt: skip


def _scenario() -> Scenario:
    data = walking_data()
    enc = EASEEncoder.fit(data, EASEConfig(l2=5.0, decay=0.9), splits=(S.TRAIN,))
    return Scenario(ScenarioConfig(name="movies", item_noun="movie"), data, Retriever.build(enc, data))


@pytest.fixture(scope="module")
def fitted(tiny_lm_dir):
    sc = _scenario()
    loaded = load_model(str(tiny_lm_dir))
    return sc, loaded, fit_reranker(sc, loaded, CONFIG, progress=False)


def test_transitions_count_what_followed():
    t = Transitions.from_histories([["a", "b", "c"], ["a", "b"], ["b", "a"]])
    np.testing.assert_allclose(t.last(["x", "a"], ["b", "c", "a"]), np.log1p([2, 0, 0]))
    # recent: one step (a->b twice, b->c once) and two steps (a->c once) after the last 3 items
    np.testing.assert_allclose(t.recent(["a", "b"], ["c", "b"]), np.log1p([1 + 1, 2]))
    assert t.last([], ["a"]).tolist() == [0.0]


def test_feature_rows_and_missing_vectors():
    sc = _scenario()
    ids = list(sc.catalog)
    vectors = np.eye(len(ids), 4, dtype=np.float32)[:, :4]
    vectors[:4] = np.eye(4)
    build = RerankFeatures.from_histories(sc.catalog, [["m0", "m1", "m2"]], vectors[:-1], ids[:-1], max_history=2)
    names = list(RERANK_FEATURES)
    rows = build.rows(["m0", "m1"], ["m2", "m1", ids[-1]], np.array([3.0, 2.0, 1.0]), names)
    assert rows.shape == (3, len(names))
    col = dict(zip(names, rows.T))
    assert col["retriever_rank"].tolist() == [0, 1, 2] and col["retriever_gap"].tolist() == [0, -1, -2]
    assert col["transition_last"][0] == pytest.approx(np.log1p(1))  # m1 -> m2 once
    assert col["llm_sim_last"][1] == pytest.approx(1.0)  # m1 against itself
    assert np.isnan(col["llm_sim_last"][2]) and np.isnan(col["llm_sim_max"][2])  # no vector: missing, not 0
    with pytest.raises(RagrecError, match="unknown reranker features"):
        build.rows(["m0"], ["m1"], np.ones(1), ["nope"])
    with pytest.raises(RagrecError, match="no item vectors"):
        RerankFeatures.from_histories(sc.catalog, []).rows(["m0"], ["m1"], np.ones(1), ["llm_sim_max"])


def test_the_reranker_learns_what_the_retriever_cannot(fitted):
    sc, _, run = fitted
    assert set(run.rerankers) == {"reranker_no_llm", "reranker"}
    assert run.valid["reranker_no_llm"] > run.valid["retriever"] + 0.05  # direction of the walk: transitions
    assert run.served in ("fusion", "reranker_no_llm", "reranker")
    assert run.valid[run.served] == max(run.valid[k] for k in ("fusion", "reranker_no_llm", "reranker"))
    assert run.rerankers["reranker"].info.uses_llm and not run.rerankers["reranker_no_llm"].info.uses_llm
    assert run.rerankers["reranker"].info.base_fingerprint
    imp = run.rerankers["reranker_no_llm"].importance
    assert abs(sum(imp.values()) - 1) < 1e-3 and imp["transition_last"] + imp["transition_recent"] > 0
    report = json.loads(json.dumps(run.report()))
    assert report["served"] == run.served and report["out_of_fold"]["lists_with_target"] > 0


def test_the_served_path_is_the_reranker_and_runs_no_llm(fitted):
    sc, loaded, run = fitted
    rr = run.rerankers["reranker"]
    rec = Recommender(loaded, [dataclasses.replace(sc, reranker=rr)], REC)

    def boom(*a, **k):
        raise AssertionError("the LLM ran")

    rec.score_candidates = boom
    got = rec.recommend(history=["m1", "m2"], k=3)
    cands = sc.retriever.retrieve(histories=[["m1", "m2"]], k=6)[0]
    ids = list(cands.item_ids)
    build = RerankFeatures.from_histories(sc.catalog, [h.item_ids for h in sc.histories.values()], rr.vectors,
                                          rr.vector_ids, rr.info.max_history)  # fmt: skip
    s = rr.score(build.rows(["m1", "m2"], ids, np.array([c.score for c in cands.candidates]), rr.features))
    assert [i.item_id for i in got.items] == [ids[j] for j in np.argsort(-s, kind="stable")[:3]]


def test_saved_and_loaded_without_pickle(fitted, tmp_path):
    sc, loaded, run = fitted
    rr = run.rerankers["reranker"]
    rec = Recommender(loaded, [dataclasses.replace(sc, reranker=rr)], REC)
    want = [i.item_id for i in rec.recommend(history=["m3", "m4"], k=4).items]
    rec.save_pretrained(tmp_path / "rec")
    folder = tmp_path / "rec" / "scenarios" / "movies" / "reranker"
    assert sorted(p.name for p in folder.iterdir()) == ["item_ids.json", "item_vectors.npy", "model.txt",
                                                        "reranker.json"]  # fmt: skip
    back = Recommender.from_pretrained(tmp_path / "rec", loaded=loaded)
    assert back.scenarios["movies"].reranker.features == rr.features
    assert [i.item_id for i in back.recommend(history=["m3", "m4"], k=4).items] == want
    (folder / "model.txt").write_text("not a model")
    with pytest.raises(RagrecError, match="not a LightGBM model"):
        Recommender.from_pretrained(tmp_path / "rec", loaded=loaded)
    import shutil

    shutil.rmtree(folder)
    with pytest.raises(CacheError, match="reranker/"):
        Recommender.from_pretrained(tmp_path / "rec", loaded=loaded)


def test_without_a_model_only_the_reranker_without_llm_features(tiny_lm_dir):
    sc = _scenario()
    run = fit_reranker(sc, None, CONFIG, progress=False)
    assert set(run.rerankers) == {"reranker_no_llm"}
    assert not set(LLM_RERANK_FEATURES) & set(run.rerankers["reranker_no_llm"].features)


def test_list_ranks_are_pessimistic():
    sc = _scenario()
    lists = serving_lists(sc, S.VALID, None, 6)
    hit = next(cl for cl in lists if cl.target >= 0)
    ranks = list_ranks([hit], [np.zeros(len(hit.candidates))])
    assert ranks[0] == len(hit.candidates)  # all tied: the target counts last


def test_a_reranker_refuses_a_mismatched_model(fitted):
    _, _, run = fitted
    rr = run.rerankers["reranker_no_llm"]
    with pytest.raises(RagrecError, match="features"):
        Reranker(rr.info.model_copy(update={"features": rr.features[:-1]}), rr.booster)


def test_item_vectors_do_not_depend_on_the_batch(tiny_lm_dir):
    from ragrec.inference.rerank import item_vectors

    sc = _scenario()
    loaded = load_model(str(tiny_lm_dir))
    together, ids, layer = item_vectors(loaded, sc.catalog, batch=64, progress=False)
    alone, ids2, _ = item_vectors(loaded, sc.catalog, batch=1, progress=False)
    assert ids == ids2 == list(sc.catalog) and layer == 1  # the middle of 2 layers
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    with pytest.raises(RagrecError, match="layer"):
        item_vectors(loaded, sc.catalog, layer=5, progress=False)
