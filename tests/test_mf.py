"""ALS and BPR first stages (implicit), ranks from other libraries, and rating prediction baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from conftest import movie_data, run_cli
from ragrec import schema as S
from ragrec.data import InteractionData
from ragrec.data.split import leave_one_out
from ragrec.errors import RagrecError
from ragrec.eval.protocol import evaluate_encoder, external_ranks
from ragrec.eval.rating import RatingResult, SurpriseRater, compare_ratings, held_out_ratings, select_surprise
from ragrec.eval.report import write_per_user
from ragrec.retrieval import MFConfig, MFEncoder, PopularityEncoder, Retriever, load_encoder

ITEMS = [f"i{k}" for k in range(40)]


def _clustered(users: int = 120, per_user: int = 8, seed: int = 0) -> InteractionData:
    """Two tastes: even users pick from items 0-19, odd users from 20-39 (random order); item
    popularity is alike in both halves, so only the collaborative signal tells them apart."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        half = ITEMS[:20] if u % 2 == 0 else ITEMS[20:]
        for t, k in enumerate(rng.choice(20, size=per_user, replace=False)):
            rows.append((f"u{u}", half[k], t, float(1 + (u + t) % 5)))
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING])
    return leave_one_out(InteractionData.from_frames("clusters", inter))


@pytest.fixture(scope="module")
def clusters() -> InteractionData:
    return _clustered()


def _seqs(data: InteractionData) -> list[tuple[str, ...]]:
    return [h.item_ids for h in data.histories(splits=(S.TRAIN,)).values()]


def test_als_fold_in_is_implicits_user_step(clusters):
    from implicit.cpu.als import AlternatingLeastSquares

    cfg = MFConfig(algorithm="als", factors=8, regularization=0.1, alpha=4.0, threads=1)
    enc = MFEncoder.fit(clusters, cfg)
    seqs = _seqs(clusters)[:6]
    ours = enc.encode_histories(seqs)
    reference = AlternatingLeastSquares(factors=8, regularization=0.1, alpha=4.0)
    reference.item_factors = enc.factors
    cells = [(r, enc.item_index[i]) for r, s in enumerate(seqs) for i in set(s)]
    r, c = np.array(cells).T
    x = sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(len(seqs), len(ITEMS)))
    np.testing.assert_allclose(ours, reference.recalculate_user(np.arange(len(seqs)), x), atol=1e-4)


@pytest.mark.parametrize("algorithm", ["als", "bpr"])
def test_mf_learns_the_tastes_popularity_cannot(clusters, algorithm):
    cfg = MFConfig(algorithm=algorithm, factors=8, regularization=0.01, learning_rate=0.05, iterations=60, threads=1)
    enc = MFEncoder.fit(clusters, cfg)
    mf = evaluate_encoder(enc, clusters, split=S.VALID).metrics()["recall@10"]
    pop = evaluate_encoder(PopularityEncoder.fit(clusters), clusters, split=S.VALID).metrics()["recall@10"]
    assert mf > pop + 0.2, (mf, pop)


def test_bpr_keeps_the_item_bias_in_every_score(clusters):
    enc = MFEncoder.fit(clusters, MFConfig(algorithm="bpr", factors=4, iterations=5, threads=1))
    assert enc.item_embeddings().shape == (len(ITEMS), 5)
    q = enc.encode_histories([[], ["i1", "i2"]])
    assert q.shape == (2, 5) and np.all(q[:, -1] == 1.0)
    np.testing.assert_allclose(enc.scores([[]])[0], enc.factors[:, -1], atol=1e-6)  # empty history: the biases


def test_decay_weighs_recent_items_more(clusters):
    base = MFEncoder.fit(clusters, MFConfig(factors=8, threads=1))
    recent = MFEncoder(base.item_ids, base.factors, base.config.model_copy(update={"decay": 0.3}))
    history = ["i0", "i1", "i2", "i25"]  # the newest item is from the other taste
    last_only = base.scores([["i25"]])[0]
    corr = [np.corrcoef(e.scores([history])[0], last_only)[0, 1] for e in (base, recent)]
    assert corr[1] > corr[0]


def test_new_users_and_round_trip(clusters, tmp_path):
    enc = MFEncoder.fit(clusters, MFConfig(factors=8, threads=1))
    enc.save(tmp_path / "mf")
    again = load_encoder(tmp_path / "mf")
    assert isinstance(again, MFEncoder) and again.config == enc.config
    np.testing.assert_array_equal(again.scores(_seqs(clusters)[:3]), enc.scores(_seqs(clusters)[:3]))
    retriever = Retriever.build(again, clusters)
    res = retriever.retrieve(histories=[["i20", "i21", "i22"]], k=5)[0]  # nobody's history: folded in
    assert res.fallback is None
    got = [c.item_id for c in res.candidates]
    assert len(got) == 5 and not {"i20", "i21", "i22"} & set(got)
    assert sum(int(i[1:]) >= 20 for i in got) >= 4  # the taste of that history


def test_mf_refuses_bad_input(clusters):
    with pytest.raises(RagrecError, match="outside the catalog"):
        MFEncoder.from_sequences(["a", "b"], [["a", "zzz"]])
    with pytest.raises(RagrecError, match="no interactions"):
        MFEncoder.from_sequences(["a", "b"], [[]])
    with pytest.raises(ValueError, match="shape"):
        MFEncoder(["a", "b"], np.zeros((2, 3)), MFConfig(factors=4))
    with pytest.raises(ValueError):
        MFConfig(algorithm="svd")


def test_select_mf_chooses_on_validation(clusters):
    from ragrec.pipeline import select_mf

    grid = [{"factors": 2, "regularization": 100.0, "iterations": 2}, {"factors": 8, "regularization": 0.1}]
    enc, report = select_mf(clusters, "als", grid, decays=(1.0,))
    assert [g["factors"] for g in report["grid"]] == [2, 8]
    best = max(report["grid"], key=lambda g: g["valid_ndcg@10"])
    assert report["valid_ndcg@10"] == best["valid_ndcg@10"] and enc.config.factors == best["factors"]


def test_external_ranks_sit_beside_ragrecs_own(clusters, tmp_path):
    enc = MFEncoder.fit(clusters, MFConfig(factors=8, threads=1))
    own = evaluate_encoder(enc, clusters, split=S.TEST, system="als")
    path = tmp_path / "ranks.csv"
    pd.DataFrame({"user_id": own.users, "rank": own.ranks}).to_csv(path, index=False)
    got = external_ranks(path, clusters, S.TEST, "from csv")
    accuracy = {k: v for k, v in own.metrics().items() if k in got.metrics()}  # the CSV has no lists: no coverage
    assert got.users == own.users and got.metrics() == accuracy
    # ragrec's own per-user file, one system column renamed `rank`, reads back too
    write_per_user(tmp_path / "wide.csv", [own])
    wide = pd.read_csv(tmp_path / "wide.csv", dtype=str).rename(columns={"als": "rank"})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    assert external_ranks(tmp_path / "wide.csv", clusters).metrics() == accuracy


def test_external_ranks_refuse_what_does_not_match(clusters, tmp_path):
    users = sorted(clusters.target_sets(S.TEST))
    targets = clusters.targets(S.TEST)

    def write(frame) -> str:
        path = tmp_path / "r.csv"
        frame.to_csv(path, index=False)
        return str(path)

    with pytest.raises(RagrecError, match="needs columns"):
        external_ranks(write(pd.DataFrame({"user": users, "rank": 1})), clusters)
    with pytest.raises(RagrecError, match="1 missing"):
        external_ranks(write(pd.DataFrame({"user_id": users[1:], "rank": 1})), clusters)
    with pytest.raises(RagrecError, match="appears twice"):
        external_ranks(write(pd.DataFrame({"user_id": users + users[:1], "rank": 1})), clusters)
    with pytest.raises(RagrecError, match="not a number"):
        external_ranks(write(pd.DataFrame({"user_id": users, "rank": ["x"] * len(users)})), clusters)
    with pytest.raises(RagrecError, match="start at 1"):
        external_ranks(write(pd.DataFrame({"user_id": users, "rank": 0})), clusters)
    wrong = [targets[u] if k else "i39" if targets[u] != "i39" else "i0" for k, u in enumerate(users)]
    with pytest.raises(RagrecError, match="another split"):
        external_ranks(write(pd.DataFrame({"user_id": users, "rank": 3, "target": wrong})), clusters)
    misses = external_ranks(write(pd.DataFrame({"user_id": users, "rank": ["", "inf"] * (len(users) // 2)})), clusters)
    assert misses.metrics()["recall@20"] == 0.0 and np.isinf(misses.ranks).all()


def test_cli_eval_retriever_takes_a_ranks_file(tmp_path):
    data = movie_data()
    data.save(tmp_path / "data")
    code, out, err = run_cli("retriever", "train", str(tmp_path / "data"), "--out", str(tmp_path / "pop"),
                             "--encoder", "popularity")  # fmt: skip
    assert code == 0, err
    users = sorted(data.target_sets(S.TEST))
    pd.DataFrame({"user_id": users, "rank": 1}).to_csv(tmp_path / "perfect.csv", index=False)
    code, out, err = run_cli("eval", "retriever", str(tmp_path / "data"), "--system", f"pop={tmp_path / 'pop'}",
                             "--system", f"peer={tmp_path / 'perfect.csv'}", "--out", str(tmp_path / "rep"))  # fmt: skip
    assert code == 0, err
    assert "peer: recall@10 1.0000" in err
    assert "peer - pop" in (tmp_path / "rep.md").read_text()


def test_cli_trains_als_with_settings_or_a_search(tmp_path):
    data = movie_data()
    data.save(tmp_path / "data")
    code, out, err = run_cli("retriever", "train", str(tmp_path / "data"), "--out", str(tmp_path / "als"),
                             "--encoder", "als", "--set", "factors=4", "--set", "threads=1")  # fmt: skip
    assert code == 0, err
    assert load_encoder(tmp_path / "als").config.factors == 4
    code, out, err = run_cli("retriever", "train", str(tmp_path / "data"), "--out", str(tmp_path / "bpr"),
                             "--encoder", "bpr", "--set", "algorithm=als")  # fmt: skip
    assert code == 0, err
    assert load_encoder(tmp_path / "bpr").config.algorithm == "als"  # --set wins over the encoder name


# ---------------------------------------------------------------- ratings


def test_rating_metrics_and_paired_comparison():
    a = RatingResult("a", ["u1", "u2", "u3", "u4"], [4, 3, 2, 5], [4, 3, 3, 5])
    b = RatingResult("b", ["u1", "u2", "u3", "u4"], [2, 3, 3, 1], [4, 3, 3, 5])
    assert a.metrics() == {"mae": 0.25, "rmse": 0.5, "users": 4}
    c = compare_ratings(a, b)
    assert c["mae"]["difference"] == pytest.approx(0.25 - 1.5)
    assert c["rmse"]["difference"] == pytest.approx(0.5 - np.sqrt(5))
    assert c["rmse"]["low"] <= c["rmse"]["difference"] <= c["rmse"]["high"]
    with pytest.raises(ValueError, match="different users"):
        compare_ratings(a, RatingResult("c", ["x", "u2", "u3", "u4"], [1, 1, 1, 1], [1, 1, 1, 1]))
    with pytest.raises(RagrecError, match="not finite"):
        RatingResult("nan", ["u1"], [float("nan")], [3])


def _rated(users: int = 150, seed: int = 0) -> InteractionData:
    """Ratings = user bias + item bias + noise: a model of biases should beat the global mean."""
    rng = np.random.default_rng(seed)
    ub, ib = rng.normal(0, 0.8, users), rng.normal(0, 0.8, len(ITEMS))
    rows = []
    for u in range(users):
        for t, k in enumerate(rng.choice(len(ITEMS), size=12, replace=False)):
            r = float(np.clip(np.rint(3 + ub[u] + ib[k] + rng.normal(0, 0.3)), 1, 5))
            rows.append((f"u{u}", ITEMS[k], t, r))
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING])
    return leave_one_out(InteractionData.from_frames("rated", inter))


def test_surprise_raters_beat_the_global_mean():
    data = _rated()
    held = held_out_ratings(data, S.TEST)
    assert len(held.users) == 150 and len(held.histories[0]) == 11  # train + valid before the test target
    assert len(held.history_ratings[0]) == 11
    frame = data.interactions_frame()
    mean = frame[frame[S.SPLIT] != S.TEST][S.RATING].mean()
    flat = RatingResult("mean", held.users, np.full(len(held.users), mean), held.ratings)
    params, tried = select_surprise(data, "baseline", [{}, {"bsl_options": {"method": "als", "reg_u": 1000}}])
    assert params == min(tried, key=lambda t: t["valid_rmse"])["params"] and len(tried) == 2
    for algo, p in (("baseline", params), ("svd", {"n_factors": 4, "n_epochs": 30})):
        res = SurpriseRater(algo, p).fit(data, (S.TRAIN, S.VALID)).evaluate(held)
        assert res.metrics()["rmse"] < flat.metrics()["rmse"] - 0.2, algo
        assert res.info["fallback_predictions"] == 0


def test_rating_evaluation_refuses_implicit_feedback(clusters):
    frame = clusters.interactions_frame().drop(columns=[S.RATING])
    implicit_only = leave_one_out(InteractionData.from_frames("implicit", frame.drop(columns=[S.SPLIT])))
    with pytest.raises(RagrecError, match="no ratings"):
        held_out_ratings(implicit_only, S.TEST)
    with pytest.raises(RagrecError, match="unknown surprise algorithm"):
        SurpriseRater("nmf_magic")
    with pytest.raises(RagrecError, match="valid"):
        held_out_ratings(clusters, S.TRAIN)
