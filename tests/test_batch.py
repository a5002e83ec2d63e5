"""``ragrec batch-recommend``: many users to Parquet, locally and on Ray (2 local workers), with the
same output; bad input refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import run_cli
from ragrec.batch import COLUMNS, batch_recommend, read_users
from ragrec.errors import RagrecError
from ragrec.inference import Recommender, RecommenderConfig, load_model
from test_serve import ease_scenario


@pytest.fixture(scope="module")
def saved(tiny_lm_dir, tmp_path_factory):
    rec = Recommender(load_model(str(tiny_lm_dir), device="cpu"), [ease_scenario()],
                      RecommenderConfig(model=str(tiny_lm_dir), candidates=6, device="cpu", batch_size=3))  # fmt: skip
    return rec.save_pretrained(tmp_path_factory.mktemp("batch") / "rec")


def test_local_output_matches_single_requests_and_ray_matches_local(saved, tmp_path):
    users = read_users("all", saved)
    assert users == [f"u{i}" for i in range(10)]  # natural id order
    users = [*users, "stranger"]
    local = batch_recommend(saved, users, tmp_path / "local.parquet", k=3, chunk=4, progress=False)
    assert (local.users, local.chunks, local.engine) == (11, 3, "local")
    frame = pd.read_parquet(tmp_path / "local.parquet")
    assert tuple(frame.columns) == COLUMNS and len(frame) == local.rows == 33
    rec = Recommender.from_pretrained(saved)
    for user in ("u1", "stranger"):
        mine = frame[frame.user_id == user]
        single = rec.recommend(user, k=3)
        assert mine.item_id.tolist() == single.item_ids and mine["rank"].tolist() == [1, 2, 3]
        assert mine.fallback.isna().all() if single.fallback is None else (mine.fallback == single.fallback).all()
    pytest.importorskip("ray")
    ray_report = batch_recommend(saved, users, tmp_path / "ray.parquet", k=3, chunk=4, engine="ray", workers=2,
                                 progress=False)  # fmt: skip
    assert ray_report.engine == "ray" and ray_report.workers == 2
    remote = pd.read_parquet(tmp_path / "ray.parquet")
    pd.testing.assert_frame_equal(remote.drop(columns=["score", "retriever_score"]),
                                  frame.drop(columns=["score", "retriever_score"]))  # fmt: skip
    assert (remote.score - frame.score).abs().max() < 1e-5  # the same chunks, the same model: the same scores


def test_all_users_load_the_recommender_once(saved, tmp_path, monkeypatch):
    import ragrec.inference.persistence as persistence
    import ragrec.inference.recommender as recommender

    calls, load = [], persistence.load_parts

    def counted(*args, **kwargs):
        calls.append(args)
        return load(*args, **kwargs)

    monkeypatch.setattr(persistence, "load_parts", counted)
    monkeypatch.setattr(recommender, "load_parts", counted)
    report = batch_recommend(saved, "all", tmp_path / "all.parquet", k=2, progress=False)
    assert report.users == 10 and report.rows == 20 and len(calls) == 1


def test_cli_and_bad_input(saved, tmp_path):
    (tmp_path / "users.csv").write_text("user_id,extra\nu1,x\nu2,y\nu1,z\n", "utf-8")
    code, out, err = run_cli("batch-recommend", str(saved), "--users", str(tmp_path / "users.csv"),
                             "--out", str(tmp_path / "r.parquet"), "-k", "2")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["users"] == 2 and len(pd.read_parquet(tmp_path / "r.parquet")) == 4
    code, _, err = run_cli("batch-recommend", str(saved), "--users", "nobody.txt", "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and "neither 'all' nor a file" in err
    code, _, err = run_cli("batch-recommend", str(saved), "--users", "all", "--out", str(tmp_path / "x.parquet"),
                           "--engine", "spark")  # fmt: skip
    assert code == 2 and "unknown engine 'spark'; valid: local, ray" in err
    code, _, err = run_cli("batch-recommend", str(saved), "--users", "all", "--out", str(tmp_path / "x.parquet"),
                           "--scenario", "books")  # fmt: skip
    assert code == 2 and "unknown scenario 'books'" in err
    assert not (tmp_path / "x.parquet").exists()
    (tmp_path / "empty.txt").write_text("\n\n", "utf-8")
    with pytest.raises(RagrecError, match="no user ids"):
        read_users(str(tmp_path / "empty.txt"), saved)


def test_gguf_exports_refuse_bad_input(tmp_path):
    from ragrec.inference.gguf import export_adapter

    code, _, err = run_cli("gguf", "smollm2-135m-instruct", "--quant", "Q3")
    assert code == 2 and "unknown quantization 'Q3'; valid: F16, Q8_0, Q4_K_M" in err
    with pytest.raises(RagrecError, match="no adapter_model.safetensors"):
        export_adapter(tmp_path, "smollm2-135m-instruct")
