"""EASE against its definition, config loading, and the retrieval CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from ragrec import schema as S
from ragrec.config import load_config
from ragrec.errors import RagrecError
from ragrec.eval import evaluate_encoder
from ragrec.retrieval import EASEConfig, EASEEncoder, PopularityEncoder, SASRecConfig
from test_retrieval import walk_data  # noqa: F401 - fixture


def test_ease_solves_its_objective(walk_data):  # noqa: F811
    enc = EASEEncoder.fit(walk_data, EASEConfig(l2=10.0))
    b = enc.weights.astype(np.float64)
    assert np.allclose(np.diag(b), 0)
    # Stationarity of |X - XB|^2 + l2|B|^2 under diag(B)=0: off-diagonal gradient vanishes.
    hist = walk_data.histories(splits=(S.TRAIN,))
    x = np.zeros((len(hist), len(enc.item_ids)))
    for r, h in enumerate(hist.values()):
        x[r, enc.indices(h.item_ids)] = 1
    grad = -x.T @ (x - x @ b) + 10.0 * b
    off = ~np.eye(len(b), dtype=bool)
    assert np.abs(grad[off]).max() < 1e-3


def test_recency_weighting_helps_on_sequences(walk_data):  # noqa: F811
    plain = evaluate_encoder(EASEEncoder.fit(walk_data, EASEConfig(l2=10.0, decay=1.0)), walk_data).metrics()
    recent = evaluate_encoder(EASEEncoder.fit(walk_data, EASEConfig(l2=10.0, decay=0.5)), walk_data).metrics()
    pop = evaluate_encoder(PopularityEncoder.fit(walk_data), walk_data).metrics()
    assert recent["ndcg@10"] > plain["ndcg@10"] and recent["ndcg@10"] > pop["ndcg@10"]


def test_ease_fills_untrained_items_from_content_neighbours():
    # items a, b, c, d trained; e never: its text is a's, so it takes a's column and row
    seqs = [["a", "b"], ["a", "b", "c"], ["c", "d"], ["b", "d"], ["a", "c"]]
    enc = EASEEncoder.from_sequences(["a", "b", "c", "d", "e"], seqs, EASEConfig(l2=1.0))
    assert enc.untrained() == [4]
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1], [1, 0.01, 0]], dtype=np.float32)
    filled = enc.fill_untrained(vectors, k=1, shrink=0.5)
    w, b = filled.weights, enc.weights
    assert np.allclose(w[:4, 4], 0.5 * b[:4, 0]) and np.allclose(w[4, 1:4], 0.5 * b[0, 1:4])
    assert w[4, 4] == 0 and np.allclose(w[:4, :4], b[:4, :4]) and not b[4].any()  # the original is unchanged
    assert filled.untrained() == []
    # a history with b now recommends e, as it recommends a
    assert filled.scores([["b"]])[0, 4] > 0 and filled.scores([["b"]])[0, 4] == pytest.approx(0.5 * b[1, 0])
    two = enc.fill_untrained(vectors, k=2)  # two neighbours: a weighted mean of a's and b's columns
    mix = np.array([1.0, 0.01]) / 1.01
    assert np.allclose(two.weights[:4, 4], b[:4, :2] @ mix, atol=1e-6)
    with pytest.raises(ValueError, match="4 rows for a catalog of 5"):
        enc.fill_untrained(vectors[:4])


def test_ease_refuses_huge_catalogs(walk_data):  # noqa: F811
    with pytest.raises(RagrecError, match="dense 25 x 25 matrix"):
        EASEEncoder.fit(walk_data, EASEConfig(max_items=10))


def test_load_config_names_bad_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sasrec:\n  hidden: 32\n  epochs: 3\n")
    cfg = load_config(SASRecConfig, path, ["dropout=0.1"], section="sasrec")
    assert (cfg.hidden, cfg.epochs, cfg.dropout) == (32, 3, 0.1)
    with pytest.raises(RagrecError, match="SASRecConfig: hiden: Extra inputs are not permitted"):
        load_config(SASRecConfig, None, ["hiden=3"])
    with pytest.raises(RagrecError, match="dropout: Input should be less than 1"):
        load_config(SASRecConfig, None, ["dropout=1.5"])
    with pytest.raises(RagrecError, match="key=value"):
        load_config(SASRecConfig, None, ["dropout"])


def test_cli_train_index_query_eval(ml100k_dir, tmp_path):
    data_dir = tmp_path / "prepared"
    assert run_cli("data", "prepare", "movielens-100k", str(ml100k_dir), "--output", str(data_dir))[0] == 0
    code, out, err = run_cli("retriever", "train", str(data_dir), "--encoder", "sasrec", "--out", str(tmp_path / "sas"),
                             "--set", "epochs=2", "--set", "hidden=16", "--set", "heads=1", "--set", "max_len=8",
                             "--checkpoint-dir", str(tmp_path / "ckpt"))  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "ckpt" / "weights.safetensors").is_file()  # the best epoch so far was saved
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["epochs_run"] == 2 and summary["encoder"] == "sasrec"
    assert (
        run_cli("retriever", "train", str(data_dir), "--encoder", "popularity", "--out", str(tmp_path / "pop"))[0] == 0
    )
    code, out, err = run_cli("retriever", "train", str(data_dir), "--encoder", "ease", "--out", str(tmp_path / "ease"),
                             "--set", "l2=50")  # fmt: skip
    assert code == 0, err  # every registered trainer is a CLI choice (EASE used to be refused)
    code, _, err = run_cli("retriever", "train", str(data_dir), "--encoder", "knn", "--out", str(tmp_path / "k"))
    assert code == 2 and "unknown encoder 'knn'; valid: als, bpr, ease, hybrid, popularity, sasrec, text" in err
    code, out, err = run_cli("index", "build", str(tmp_path / "sas"), str(data_dir), "--out", str(tmp_path / "r"))
    assert code == 0, err
    code, out, err = run_cli("retriever", "query", str(tmp_path / "r"), "--user", "1", "--user", "404", "--k", "3")
    assert code == 0, err
    known, unknown = (json.loads(line) for line in out.strip().splitlines())
    assert known["fallback"] is None and len(known["candidates"]) == 3
    assert unknown["fallback"] == "unknown user '404': popularity"
    code, _, err = run_cli("eval", "retriever", str(data_dir), "--system", f"pop={tmp_path / 'pop'}",
                           "--system", f"sas={tmp_path / 'sas'}", "--out", str(tmp_path / "report"))  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    assert [r["system"] for r in report["rows"]] == ["pop", "sas"] and report["comparisons"][0]["name"] == "sas - pop"
    assert (tmp_path / "report_recall.png").stat().st_size > 1000
    code, _, err = run_cli(
        "retriever", "train", str(data_dir), "--encoder", "sasrec", "--out", str(tmp_path / "x"), "--set", "hiden=3"
    )
    assert code == 2 and "hiden" in err and "Traceback" not in err


def test_cli_encoder_help_lists_the_registered_trainers():
    from ragrec.cli.retrieval import ENCODER_KINDS
    from ragrec.pipeline import SCENARIO_RETRIEVERS, TRAINERS

    assert sorted(ENCODER_KINDS.split(" | ")) == TRAINERS.names()
    assert set(SCENARIO_RETRIEVERS) == {"auto"} | {n for n in TRAINERS.names() if TRAINERS.get(n).scenario}


def test_retrain_refits_each_kind_through_its_registered_trainer():
    """`ragrec retrain` refits by the trainer registry: same kind and settings, fitted on train + valid."""
    from conftest import movie_data
    from ragrec.pipeline import TRAINERS, refit_encoder
    from ragrec.retrieval import HybridEncoder

    data = movie_data()
    for name in ("ease", "als", "popularity"):
        encoder, _ = TRAINERS.get(name).fit(data, None)
        refit = refit_encoder(encoder, data)
        assert type(refit) is type(encoder) and getattr(refit, "config", None) == getattr(encoder, "config", None)
    known = sum(len(h) for h in data.histories(splits=(S.TRAIN, S.VALID)).values())
    assert refit_encoder(PopularityEncoder.fit(data, splits=(S.TRAIN,)), data).counts.sum() == known
    ease = TRAINERS.get("ease").fit(data, None)[0]
    with pytest.raises(RagrecError, match="cannot refit a 'hybrid'"):
        refit_encoder(HybridEncoder([ease, ease], [1.0, 1.0]), data)
