"""The LLM-stage commands end to end on a tiny random model: recommend, explain, chat, eval llm."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli, tiny_scenario
from ragrec.inference import RecommenderConfig, save_recommender


@pytest.fixture(scope="module")
def rec_dir(tiny_lm_dir, tmp_path_factory):
    sc = tiny_scenario()
    sc.text = None  # the subprocess would load the real text model; chat then retrieves by history only
    cfg = RecommenderConfig(model=str(tiny_lm_dir), device="cpu", candidates=5)
    return save_recommender(tmp_path_factory.mktemp("cli") / "rec", [sc], cfg)


def test_recommend_json_and_errors(rec_dir):
    code, out, err = run_cli("recommend", str(rec_dir), "--user", "u1", "-k", "3", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["scenario"] == "movies" and len(res["items"]) == 3 and res["fallback"] is None
    assert all(i["item_id"].startswith("m") and i["title"] for i in res["items"])
    code, out, err = run_cli("recommend", str(rec_dir), "--user", "ghost", "-k", "2")
    assert code == 0 and "unknown user 'ghost'" in err and len(out.strip().splitlines()) == 2
    code, _, err = run_cli("recommend", str(rec_dir), "--user", "u1", "--scenario", "games")
    assert code == 2 and "unknown scenario 'games'; valid: movies" in err
    code, _, err = run_cli("recommend", str(rec_dir), "--history", "m1,nope", "-k", "2")
    assert code == 2 and "unknown item ids ['nope']" in err


def test_recommend_with_rules_and_diversity(rec_dir):
    code, out, err = run_cli("recommend", str(rec_dir), "--user", "u1", "-k", "3", "--json")
    first = json.loads(out)["items"][0]["item_id"]
    code, out, err = run_cli("recommend", str(rec_dir), "--user", "u1", "-k", "3", "--json", "--exclude-item", first,
                             "--exclude-category", "crime", "--diversity", "0.5")  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert first not in [i["item_id"] for i in res["items"]] and len(res["items"]) == 3
    assert any("business rules removed" in n for n in res["notes"])
    code, _, err = run_cli("recommend", str(rec_dir), "--user", "u1", "--diversity", "3")
    assert code == 2 and "between 0 and 1" in err
    code, out, err = run_cli("recommend", str(rec_dir), "--user", "u1", "-k", "3", "--json", "--long-tail", "0.5",
                             "--calibration", "0.5", "--year-min", "1990")  # fmt: skip
    assert code == 0, err
    assert len(json.loads(out)["items"]) == 3
    code, _, err = run_cli("recommend", str(rec_dir), "--user", "u1", "--diversity", "0.3", "--calibration", "0.3")
    assert code == 2 and "set one of them" in err


def test_explain_streams_and_chat_reads_stdin(rec_dir):
    from ragrec.inference import Recommender

    code, out, err = run_cli("explain", str(rec_dir), "--user", "u1", "--item", "m3")
    assert code == 0, err
    exp = Recommender.from_pretrained(rec_dir).explain("m3", "u1")  # the same greedy text in process
    assert out.splitlines()[0] == exp.text  # the streamed answer is the checked one
    if exp.fallback and exp.model_text.strip():  # a rejected text is never printed, only the reason
        assert exp.model_text not in out and "note:" in err
    questions = "why heat?\n\nonly 90s movies\n" + "x" * 10_000 + "\nexit\nnever asked\n"
    code, out, err = run_cli("chat", str(rec_dir), "--user", "u2", stdin=questions)
    assert code == 0, err
    assert out.count("ragrec> ") == 3 and "never asked" not in out
    assert "filter: 1990s" in err and "message cut from 10000 to 1000 characters" in err


def test_eval_llm_writes_a_report(rec_dir, tmp_path):
    code, _, err = run_cli("eval", "llm", str(rec_dir), "--out", str(tmp_path / "llm"), "--tune-users", "5")
    assert code == 0, err
    report = json.loads((tmp_path / "llm.json").read_text())
    systems = [r["system"] for r in report["rows"]]
    assert systems[:2] == ["retriever", "retriever + LLM (zero-shot)"]
    assert systems[2].startswith("retriever + LLM (zero-shot), fused")
    assert all(r["users"] == 10 for r in report["rows"])
    # 5 validation users cannot fit the learned fusions: said in the report, not hidden.
    assert "not fitted: " in json.dumps(report) and "not fitted" in err
    assert (tmp_path / "llm.md").is_file() and (tmp_path / "llm_recall.png").is_file()
    # The per-user ranks behind every row: the bootstrap can be recomputed from the file alone.
    from ragrec.eval.metrics import paired_bootstrap, per_user
    from ragrec.eval.report import read_per_user

    users, ranks = read_per_user(tmp_path / "llm_per_user.csv")
    assert len(users) == 10 and list(ranks) == systems
    first = report["comparisons"][0]
    again = paired_bootstrap(per_user(ranks[systems[1]], "ndcg@10"), per_user(ranks[systems[0]], "ndcg@10"))
    assert again.difference == pytest.approx(first["difference"]) and again.low == pytest.approx(first["low"])
    assert all(r["ndcg@10"] == pytest.approx(per_user(ranks[r["system"]], "ndcg@10").mean(), abs=1e-6)
               for r in report["rows"])  # fmt: skip


def test_demo_runs_end_to_end_on_a_tiny_model(tiny_lm_dir, tmp_path):
    from conftest import hash_embedder, walking_data
    from ragrec.demo import run_demo
    from ragrec.inference import Recommender, load_model

    folder = walking_data().save(tmp_path / "movies")
    lines: list[str] = []
    report = run_demo(dataset=str(folder), users=2, eval_users=6, k=3, out=tmp_path / "rec", echo=lines.append,
                      loaded=load_model(str(tiny_lm_dir), device="cpu"), embedder=hash_embedder)  # fmt: skip
    assert len(report.recommendations) == 2 and all(len(r.items) == 3 for r in report.recommendations)
    assert all(e.text for e in report.explanations)
    assert all(i.evidence for r in report.recommendations for i in r.items)  # EASE: exact evidence
    assert [a.intent for a in report.chat] == ["about", "like"]
    assert report.chat[0].references == (report.recommendations[0].items[1].item_id,)
    systems = [r["system"] for r in report.rows]
    assert (
        systems[0] == "retriever (EASE)" and systems[1].startswith("served: ") and "validation users" in report.served
    )
    assert report.rows[0]["users"] == report.rows[1]["users"] == 80  # what is served: every test user
    assert systems[2:] == ["retriever (EASE), same users", "zero-shot LLM alone"] and report.rows[3]["users"] == 6
    assert "reranker" in report.served or "fusion" in report.served
    assert any(line.startswith("serving: ") for line in lines)
    assert any(line.startswith("| walks |") for line in "\n".join(lines).splitlines())
    again = Recommender.from_pretrained(report.saved, loaded=load_model(str(tiny_lm_dir), device="cpu"),
                                        embedder=hash_embedder)  # fmt: skip
    assert again.recommend(report.recommendations[0].user_id, k=3).item_ids == report.recommendations[0].item_ids


def test_auto_retriever_picks_by_catalog_size():
    from ragrec.errors import RagrecError
    from ragrec.pipeline import resolve_retriever
    from ragrec.retrieval import EASEConfig

    limit = EASEConfig().max_items  # the largest catalog EASE accepts
    assert resolve_retriever("auto", limit) == "ease"
    assert resolve_retriever("auto", limit + 1) == "sasrec"
    assert resolve_retriever("popularity", 10**6) == "popularity"
    with pytest.raises(RagrecError, match="valid: auto, ease, sasrec, als, bpr, popularity"):
        resolve_retriever("bm25", 5)


def test_recommender_build_and_add_a_scenario(tmp_path, tiny_lm_dir):
    from conftest import movie_data

    first = movie_data("movies").save(tmp_path / "movies")
    second = movie_data("games").save(tmp_path / "games")
    rec = tmp_path / "rec"
    code, out, err = run_cli("recommender", "build", str(first), "--out", str(rec), "--scenario", "movies",
                             "--item-noun", "movie", "--no-text", "--model", str(tiny_lm_dir))  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("recommender", "build", str(second), "--out", str(tmp_path / "rec2"), "--scenario",
                             "games", "--no-text", "--add-to", str(rec), "--encoder", "sasrec")  # fmt: skip
    assert code == 0, err
    assert "['movies', 'games']" in out
    kinds = [json.loads((tmp_path / "rec2" / "scenarios" / s / "retriever" / "encoder" / "encoder.json").read_text())
             ["kind"] for s in ("movies", "games")]  # fmt: skip
    assert kinds == ["ease", "sasrec"]  # auto: EASE for a small catalog
    code, _, err = run_cli("recommender", "build", str(second), "--out", str(tmp_path / "rec3"), "--scenario",
                           "games", "--no-text", "--add-to", str(tmp_path / "rec2"))  # fmt: skip
    assert code == 2 and "already has scenario 'games'" in err
    meta = json.loads((tmp_path / "rec2" / "recommender.json").read_text())
    assert meta["scenarios"] == ["movies", "games"] and meta["config"]["model"] == str(tiny_lm_dir)
    code, out, err = run_cli("recommend", str(tmp_path / "rec2"), "--user", "u1", "--scenario", "games", "-k", "2",
                             "--device", "cpu", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["scenario"] == "games"
