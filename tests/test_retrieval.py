"""Retrieval: metrics, FAISS index (against an exact oracle), encoders, the retriever's fallbacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import hash_embedder
from ragrec import schema as S
from ragrec.data import InteractionData, leave_one_out
from ragrec.errors import CacheError, RagrecError
from ragrec.eval import evaluate_encoder, evaluate_retriever, paired_bootstrap
from ragrec.ranking import metric_table, target_ranks
from ragrec.retrieval import (
    EASEConfig,
    EASEEncoder,
    HybridEncoder,
    ItemIndex,
    PopularityEncoder,
    Retriever,
    SASRecConfig,
    SASRecEncoder,
    TextEncoder,
    TextEncoderConfig,
    load_encoder,
)
from ragrec.retrieval.sasrec import pad_left, training_windows

N_ITEMS = 24
GENRES = ["space", "western", "heist", "romance"]


def _title(i: int) -> str:
    return f"{GENRES[i % 4]} story number {i}"


@pytest.fixture(scope="module")
def walk_data() -> InteractionData:
    """Users walk the catalog in order (item i is followed by i + 1): a pattern to learn.
    Item 'new' has a title but no interactions (cold start)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(80):
        start, length = int(rng.integers(0, N_ITEMS)), int(rng.integers(6, 12))
        for t in range(length):
            rows.append((f"u{u}", str((start + t) % N_ITEMS), t))
    inter = pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP])
    items = pd.DataFrame({S.ITEM_ID: [str(i) for i in range(N_ITEMS)] + ["new"],
                          S.TITLE: [_title(i) for i in range(N_ITEMS)] + ["heist story number caper"]})  # fmt: skip
    return leave_one_out(InteractionData.from_frames("walk", inter, items))


@pytest.fixture(scope="module")
def sasrec(walk_data):
    cfg = SASRecConfig(
        hidden=16, layers=1, heads=1, max_len=12, epochs=40, patience=40, batch_size=32, lr=5e-3, dropout=0.1
    )
    return SASRecEncoder.fit(walk_data, cfg, progress=False)


# ---------------------------------------------------------------------------------- metrics
def test_ranks_are_pessimistic_and_masked():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1], [1.0, 2.0, 3.0, 4.0]])
    ranks = target_ranks(scores, torch.tensor([0, 3]))
    assert ranks.tolist() == [3.0, 1.0]  # the tie with item 2 ranks before the target
    masked = target_ranks(
        scores, torch.tensor([0, 3]), torch.tensor([[False, True, False, False], [False] * 3 + [True]])
    )
    assert masked.tolist() == [2.0, float("inf")]  # a masked target is a miss


def test_metric_values():
    ranks = np.array([1, 2, 11, np.inf])
    m = metric_table(ranks, ks=(10,))
    assert m["recall@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 4)


def test_paired_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.random(500)
    res = paired_bootstrap(a + 0.1, a, metric="x")
    assert res.difference == pytest.approx(0.1) and res.low == pytest.approx(0.1) and res.significant
    noise = paired_bootstrap(rng.random(500), rng.random(500))
    assert noise.low < noise.difference < noise.high
    with pytest.raises(ValueError):
        paired_bootstrap(a, a[:-1])


# ---------------------------------------------------------------------------------- index
def _synthetic(n=3000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d))
    x = centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, d))
    return x.astype(np.float32), rng.normal(size=(50, d)).astype(np.float32)


# Settings with a margin: over 5 data seeds HNSW32/efSearch=512 reached recall 0.989-1.0 and
# IVF32/nprobe=8 0.990-1.0 (HNSW16/efSearch=128 only 0.845-0.943: too close to a bound to test).
@pytest.mark.parametrize("factory,params", [("HNSW32", {"efSearch": 512}), ("IVF32,Flat", {"nprobe": 8})])
def test_approximate_index_matches_exact_search(factory, params):
    x, q = _synthetic()
    ids = [f"i{j}" for j in range(len(x))]
    exact, approx = ItemIndex(x.shape[1], "Flat"), ItemIndex(x.shape[1], factory)
    exact.add(ids, x)
    approx.add(ids, x)
    approx.set_params(**params)
    _, truth = exact.search(q, 20)
    brute = np.argsort(-(q @ x.T), axis=1)[:, :20]
    assert truth == [[ids[j] for j in row] for row in brute]  # Flat is exact
    _, found = approx.search(q, 20)
    recall = np.mean([len(set(a) & set(t)) / 20 for a, t in zip(found, truth)])
    assert recall >= 0.95, recall


def test_index_edges(tmp_path):
    x, q = _synthetic(n=10)
    index = ItemIndex(x.shape[1], "Flat", encoder={"kind": "test", "fingerprint": "a"})
    index.add([str(j) for j in range(10)], x)
    scores, ids = index.search(q[:2], 15)  # k > items: no -1 ids, NaN scores past the end
    assert all(len(r) == 10 for r in ids) and np.isnan(scores[:, 10:]).all()
    with pytest.raises(RagrecError, match="no search parameter 'nprob'"):
        index.set_params(nprob=4)
    with pytest.raises(RagrecError, match="already in the index"):
        index.add(["3"], x[:1])
    with pytest.raises(RagrecError, match=r"shape \(n, 32\)"):
        index.add(["z"], x[:1, :8])
    assert index.remove(["3", "4"]) == 2 and "3" not in index
    assert "3" not in index.search(q[:1], 10)[1][0]
    index.save(tmp_path / "idx")
    back = ItemIndex.load(tmp_path / "idx", encoder={"kind": "test", "fingerprint": "a"})
    assert back.search(q[:3], 5)[1] == index.search(q[:3], 5)[1]
    with pytest.raises(CacheError, match="built by encoder"):
        ItemIndex.load(tmp_path / "idx", encoder={"kind": "sasrec", "fingerprint": "b"})
    blob = tmp_path / "idx" / "index.faiss"
    blob.write_bytes(blob.read_bytes()[:100])
    with pytest.raises(CacheError, match="truncated or modified"):
        ItemIndex.load(tmp_path / "idx")
    hnsw = ItemIndex(x.shape[1], "HNSW8")
    hnsw.add(["a"], x[:1])
    with pytest.raises(RagrecError, match="cannot remove items; rebuild"):
        hnsw.remove(["a"])
    with pytest.raises(RagrecError, match="bad FAISS factory string"):
        ItemIndex(8, "NotAnIndex")


# ---------------------------------------------------------------------------------- encoders
def test_training_windows_cover_every_target_once():
    seqs = [list(range(1, 24)), [5, 6], [7]]
    x, y = training_windows(seqs, 5)
    targets = sorted(int(t) for t in y[y > 0])
    assert targets == sorted(list(range(2, 24)) + [6])
    assert pad_left([[1, 2, 3]], 5).tolist() == [[0, 0, 1, 2, 3]]


def test_sasrec_learns_the_sequence(walk_data, sasrec):
    enc, report = sasrec
    assert report.best_epoch >= 1 and len(report.valid_ndcg10) == report.epochs_run
    sas = evaluate_encoder(enc, walk_data).metrics()
    pop = evaluate_encoder(PopularityEncoder.fit(walk_data), walk_data).metrics()
    assert sas["ndcg@10"] > 0.6 > pop["ndcg@10"], (sas, pop)


def test_encoders_round_trip(walk_data, sasrec, tmp_path):
    enc, _ = sasrec
    text = TextEncoder.fit(walk_data, embedder=hash_embedder)
    pop = PopularityEncoder.fit(walk_data)
    hybrid = HybridEncoder([enc, text, pop], [1.0, 0.5, 0.1], {0: [walk_data.item_ids().index("new")]})
    hist = [["1", "2", "3"], ["new"], []]
    for e in (enc, text, pop, hybrid):
        e.save(tmp_path / e.kind)
        back = load_encoder(tmp_path / e.kind)
        assert type(back) is type(e)
        np.testing.assert_allclose(back.scores(hist), e.scores(hist), rtol=1e-5, atol=1e-5)
    (tmp_path / "sasrec" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CacheError, match="checksum mismatch"):
        load_encoder(tmp_path / "sasrec")


def test_text_encoder_free_text_and_cold_item(walk_data):
    text = TextEncoder.fit(walk_data, TextEncoderConfig(fields=("title",)), embedder=hash_embedder)
    q = text.encode_text(["a heist caper"])
    best = np.argsort(-(q @ text.item_embeddings().T)[0])[:1]
    assert text.item_ids[best[0]] == "new"  # never interacted with, found by its text
    text.add_items({"later": "western story about a heist caper"})
    assert "later" in text.item_index and text.item_embeddings().shape[0] == len(walk_data.items) + 1


def test_hybrid_retrieves_cold_item(walk_data, sasrec):
    enc, _ = sasrec
    text = TextEncoder.fit(walk_data, TextEncoderConfig(fields=("title",)), embedder=hash_embedder)
    cold = [walk_data.item_ids().index("new")]
    hybrid = HybridEncoder([enc, text], [1.0, 100.0], {0: cold})
    retriever = Retriever.build(hybrid, walk_data)
    # A history of heist items: the cold "heist story number caper" is the closest text.
    history = [str(i) for i in range(N_ITEMS) if GENRES[i % 4] == "heist"]
    res = retriever.retrieve(histories=[history], k=5)[0]
    assert "new" in res.item_ids and res.fallback is None
    # Without the text part the cold item scores exactly 0 (zeroed), never above the learnt items.
    alone = HybridEncoder([enc], [1.0], {0: cold}).scores([history])[0]
    assert alone[cold[0]] == 0.0


def test_hybrid_tune_picks_best_on_validation(walk_data, sasrec):
    from ragrec.eval.protocol import eval_users

    enc, _ = sasrec
    pop = PopularityEncoder.fit(walk_data)
    _, hist, targets = eval_users(walk_data, S.VALID)
    best, tried = HybridEncoder.tune([enc, pop], hist, targets, [[1.0], [0.0, 1.0, 100.0]])
    scores = dict(tried)
    assert best.weights[1] == max(scores, key=scores.get)[1]
    assert scores[(1.0, 0.0)] > scores[(1.0, 100.0)]  # popularity alone-ish is worse here


# ---------------------------------------------------------------------------------- retriever
def test_retriever_fallbacks_and_errors(walk_data, sasrec, tmp_path):
    enc, _ = sasrec
    retriever = Retriever.build(enc, walk_data)
    known, unknown = retriever.retrieve(["u1", "nobody"], k=5)
    assert known.fallback is None and [c.rank for c in known.candidates] == [1, 2, 3, 4, 5]
    assert not set(known.item_ids) & set(retriever.histories["u1"])  # seen items excluded
    assert unknown.fallback == "unknown user 'nobody': popularity"
    assert unknown.candidates[0].source == "popularity"
    empty = retriever.retrieve(histories=[[], ["not-an-item"]], k=3)
    assert all(r.fallback and "empty history" in r.fallback for r in empty)
    with pytest.raises(RagrecError, match="k must be between 1 and 25"):
        retriever.retrieve(["u1"], k=26)
    with pytest.raises(RagrecError, match="serves scenario 'default', not 'games'"):
        retriever.retrieve(["u1"], k=3, scenario="games")
    with pytest.raises(RagrecError, match="either users or histories"):
        retriever.retrieve(k=3)
    retriever.save(tmp_path / "r")
    assert not (tmp_path / "r" / "index").exists()  # exact index over the encoder's items: rebuilt at load
    back = Retriever.load(tmp_path / "r")
    assert back.retrieve(["u1"], k=5)[0].item_ids == known.item_ids
    assert back.index.encoder == retriever.index.encoder
    # Any other index is stored; one built by another encoder state is refused.
    hnsw = Retriever.build(enc, walk_data, factory="HNSW8")
    hnsw.save(tmp_path / "h")
    assert (tmp_path / "h" / "index").is_dir()
    assert Retriever.load(tmp_path / "h").retrieve(["u1"], k=5)[0].item_ids == hnsw.retrieve(["u1"], k=5)[0].item_ids
    other = Retriever.build(PopularityEncoder.fit(walk_data), walk_data, factory="HNSW8")
    other.index.save(tmp_path / "h" / "index")
    with pytest.raises(CacheError, match="built by encoder"):
        Retriever.load(tmp_path / "h")
    # An index changed after building (an item removed) is no longer the encoder's: it is stored.
    retriever.index.remove([retriever.index.item_ids[0]])
    retriever.save(tmp_path / "r2")
    assert (tmp_path / "r2" / "index").is_dir() and len(Retriever.load(tmp_path / "r2").index) == len(enc.item_ids) - 1


def test_two_stage_eval_counts_misses(walk_data, sasrec):
    enc, _ = sasrec
    full = evaluate_encoder(enc, walk_data)
    staged = evaluate_retriever(Retriever.build(enc, walk_data), walk_data, k=3)
    # The same ranking, cut at 3: inside 3 the ranks agree, beyond it they are misses.
    inside = full.ranks <= 3
    np.testing.assert_array_equal(staged.ranks[inside], full.ranks[inside])
    assert np.isinf(staged.ranks[~inside]).all()
    assert staged.metrics()["recall@10"] == pytest.approx(full.metrics()["recall@10"] if False else inside.mean())


def test_fast_scores_equal_vector_form(walk_data, sasrec):
    """Hybrid and EASE compute scores part by part / sparsely; FAISS uses the concatenated
    vectors. Both forms must give the same numbers."""
    from ragrec.retrieval import EASEConfig, EASEEncoder

    enc, _ = sasrec
    ease = EASEEncoder.fit(walk_data, EASEConfig(l2=10.0, decay=0.7))
    text = TextEncoder.fit(walk_data, embedder=hash_embedder)
    hybrid = HybridEncoder([enc, ease, text], [1.0, 2.0, 0.5], {0: [walk_data.item_ids().index("new")]})
    hist = [["1", "2", "3", "2"], ["new"], [], ["5"]]
    for e in (ease, hybrid):
        dense = e.encode_histories(hist) @ e.item_embeddings().T
        np.testing.assert_allclose(e.scores(hist), dense, rtol=1e-4, atol=1e-4)


def test_scenario_ease_settings_are_chosen_on_validation(walk_data):
    """build_scenario's EASE takes the (l2, decay) with the best validation NDCG@10 of the grid,
    fitted on train only, and records the choice in the scenario config."""
    from ragrec.pipeline import build_scenario, select_ease

    grid, decays = (1.0, 10.0, 100.0), (0.5, 1.0)
    enc, report = select_ease(walk_data, grid, decays)
    best = max(
        ((evaluate_encoder(EASEEncoder.fit(walk_data, EASEConfig(l2=l2, decay=d)), walk_data, split=S.VALID)
          .metrics((10,))["ndcg@10"], -i) for i, (l2, d) in enumerate((l2, d) for l2 in grid for d in decays))
    )  # fmt: skip
    assert report["valid_ndcg@10"] == pytest.approx(best[0], abs=1e-6)
    assert (enc.config.l2, enc.config.decay) == [(l2, d) for l2 in grid for d in decays][-best[1]]
    assert len(report["grid"]) == 6
    sc = build_scenario(walk_data, "walk", encoder="ease", text=False, progress=False)
    assert sc.config.retriever_choice["l2"] == sc.retriever.encoder.config.l2
