"""Fine-tuning: examples from training interactions only, answer-only loss, LoRA training with
validation, resume, atomic adapters with metadata, served by the Recommender."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import MOVIES, movie_data
from ragrec import schema as S
from ragrec.data import InteractionData
from ragrec.data.split import leave_one_out
from ragrec.data.text import clean_review
from ragrec.errors import CacheError, RagrecError
from ragrec.finetune import FinetuneConfig, build_examples, finetune, to_dataset
from ragrec.inference import Recommender, RecommenderConfig, Scenario, ScenarioConfig, load_model
from ragrec.inference.adapters import check_adapter, read_adapter_info

REC = RecommenderConfig(candidates=6, max_history=4)


def _scenario(data, name="movies"):
    from ragrec.retrieval import PopularityEncoder, Retriever

    return Scenario(ScenarioConfig(name=name, item_noun="movie"), data,
                    Retriever.build(PopularityEncoder.fit(data, splits=(S.TRAIN,)), data))  # fmt: skip


def _data_with_secrets(review: bool = False):
    """movie_data plus, per user, two held-out items (valid, test) titled 'secret ...' that
    nobody has in training; optionally review text on training interactions."""
    base = movie_data()
    inter = base.interactions_frame()[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING]].copy()
    extra, items = [], [(f"m{i}", t, y, [c]) for i, (t, y, c) in enumerate(MOVIES)]
    for u in sorted(inter[S.USER_ID].unique()):
        for j, tag in enumerate(("valid", "test")):
            extra.append((u, f"s-{u}-{tag}", 100 + j, 5.0))
            items.append((f"s-{u}-{tag}", f"secret {tag} {u}", 2000, ["drama"]))
    inter = pd.concat([inter, pd.DataFrame(extra, columns=inter.columns)], ignore_index=True)
    if review:
        inter[S.REVIEW] = [f"I liked this one a lot because it is a fine movie number {i}." for i in range(len(inter))]
    frame = pd.DataFrame(items, columns=[S.ITEM_ID, S.TITLE, S.YEAR, S.CATEGORIES])
    return leave_one_out(InteractionData.from_frames("movies", inter, frame))


@pytest.fixture
def loaded(tiny_lm_dir):
    return load_model(str(tiny_lm_dir))  # fresh per test: finetune wraps the model in place


def test_examples_use_training_interactions_only(loaded):
    data = _data_with_secrets(review=True)
    rec = Recommender(loaded, [_scenario(data)], REC)
    config = FinetuneConfig(mixture={"rank": 2, "rate": 1, "explain": 1}, examples=40, positions=3, candidates=6)
    ex = build_examples(rec, None, config)
    assert set(ex.counts) == {"rank", "rate", "explain"} and ex.counts["rank"] > ex.counts["rate"]
    train = data.histories(splits=(S.TRAIN,))
    for e in ex.examples:
        assert "secret" not in e.prompt and "secret" not in e.completion
        assert e.item_id in train[e.user_id].item_ids
    ranks = [e for e in ex.examples if e.task == "rank"]
    for e in ranks:  # the answer letter names the target's line
        line = next(x for x in e.prompt.splitlines() if x.startswith(f"{e.completion}."))
        assert data.item(e.item_id).title in line
    assert len({e.completion for e in ranks}) >= 3  # shuffled: the target is not always in one slot
    rates = [e for e in ex.examples if e.task == "rate"]
    assert all(e.completion in {"1", "2", "3", "4", "5"} for e in rates)
    for e in (e for e in ex.examples if e.task == "explain"):  # the evidence sentence, then the user's review
        evidence, review = e.completion.split(". I liked", 1)
        assert evidence.startswith("You enjoyed") and review.startswith(" this one")
        named = rec.scenario().matcher.cited(evidence)  # in order; the first is a history item it cites
        assert named and named[0] in train[e.user_id].item_ids[: train[e.user_id].item_ids.index(e.item_id)]


def test_chat_examples_are_grounded_conversations(loaded):
    from conftest import tiny_scenario
    from ragrec.finetune.examples import CHAT_QUESTIONS
    from ragrec.inference.grounding import TitleMatcher

    sc = tiny_scenario()
    rec = Recommender(loaded, [sc], REC)
    ex = build_examples(rec, None, FinetuneConfig(mixture={"chat": 1}, examples=30, positions=4, candidates=6))
    chats = ex.examples
    assert ex.counts == {"chat": len(chats)} and len(chats) >= 20
    questions = {q.split("{")[0] for forms in CHAT_QUESTIONS.values() for q in forms}
    later = 0
    for e in chats:
        answer = e.completion
        assert answer.endswith(".")  # a complete answer, the model learns to stop there
        asked = e.prompt.rsplit("My message: ", 1)[1].split("<|im_end|>")[0]
        assert any(asked.startswith(q) for q in questions)  # from the training bank, never the benchmark script
        later += e.prompt.count("<|im_start|>assistant") > 1  # an earlier turn is in the prompt
        cited = TitleMatcher(sc.catalog.values()).cited(answer)
        assert cited and e.item_id in cited
        assert all(sc.catalog[i].title in e.prompt for i in cited)  # it names only what the prompt shows
    assert later >= 3
    assert len({" ".join(e.completion.split(" ")[:2]) for e in chats}) >= 2  # requests and "why" answers


def test_rank_examples_are_drawn_like_serving_candidates(loaded):
    data = movie_data()
    sc = _scenario(data)
    rec = Recommender(loaded, [sc], REC)
    train = data.histories(splits=(S.TRAIN,))

    def retrieved_rank(e):  # where the retriever puts the target among items the user has not trained on
        seq = list(train[e.user_id].item_ids)
        t = seq.index(e.item_id)
        top = sc.retriever.retrieve(histories=[seq[:t]], k=len(sc.retriever.index) - t)[0].item_ids
        return [i for i in top if i == e.item_id or i not in seq], [i for i in top if i not in seq]

    common = {"examples": 30, "positions": 3, "candidates": 3, "hard_negatives": 1.0}
    ex = build_examples(rec, None, FinetuneConfig(**common))
    assert ex.examples and all(len(e.choices) == 3 and e.completion in e.choices for e in ex.examples)
    for e in ex.examples:
        ranked, negatives = retrieved_rank(e)
        assert e.item_id in ranked[:3]  # the target is one the retriever would have served
        lines = [x for x in e.prompt.splitlines() if x[:2] in {f"{c}." for c in e.choices}]
        assert all(any(data.item(i).title in x for i in ranked[:3]) for x in lines)  # negatives: the same top list
    loose = build_examples(rec, None, FinetuneConfig(**common, target_retrieved=False))
    assert any(e.item_id not in retrieved_rank(e)[0][:3] for e in loose.examples)


def test_few_examples_do_not_search_every_position(loaded, monkeypatch):
    data = movie_data()
    sc = _scenario(data)
    rec = Recommender(loaded, [sc], REC)
    asked = []
    search = sc.retriever.retrieve
    monkeypatch.setattr(sc.retriever, "retrieve", lambda histories, k: asked.append(len(histories)) or search(
        histories=histories, k=k))  # fmt: skip
    import ragrec.finetune.examples as E

    monkeypatch.setattr(E, "_CHUNK", 4)
    ex = build_examples(rec, None, FinetuneConfig(examples=2, positions=3, candidates=3, target_retrieved=False))
    positions = sum(min(3, len(h) - 1) for h in data.histories(splits=(S.TRAIN,)).values())
    assert ex.counts["rank"] == 2 and sum(asked) == 4 < positions


def test_answer_loss_is_over_the_candidates_for_rank_rows():
    from ragrec.finetune.trainer import answer_loss, collate_left

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 50)
    target = torch.tensor([[-100, -100, 7], [-100, 11, 12]])
    choices = torch.tensor([[5, 7, 9], [-1, -1, -1]])  # row 0 ranks letters 5/7/9; row 1 is a text answer
    rank = torch.nn.functional.cross_entropy(logits[0, -1, [5, 7, 9]][None], torch.tensor([1]))
    text = torch.nn.functional.cross_entropy(logits[1, 1:], torch.tensor([11, 12]), reduction="sum")
    torch.testing.assert_close(answer_loss(logits, target, choices), (rank + text) / 3)
    assert answer_loss(logits[:1], target[:1], choices[:1]) < answer_loss(logits[:1], target[:1])  # vocab: larger
    batch = collate_left(0)([{"input_ids": [1, 2], "labels": [-100, 2], "choices": [2, 3]},
                             {"input_ids": [4], "labels": [4], "choices": []}])  # fmt: skip
    assert batch["choices"].tolist() == [[2, 3], [-1, -1]] and batch["input_ids"].tolist() == [[1, 2], [0, 4]]


def test_tasks_without_data_are_dropped_and_said(loaded):
    rec = Recommender(loaded, [_scenario(movie_data())], REC)
    config = FinetuneConfig(mixture={"rank": 1, "explain": 1}, examples=10, candidates=6, explain_targets="reviews")
    ex = build_examples(rec, None, config)
    assert set(ex.counts) == {"rank"} and any("explain" in n and "review" in n for n in ex.notes)
    inter = movie_data().interactions_frame()[[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.SPLIT]]
    untitled = InteractionData.from_frames("ids", inter)  # no titles, no reviews: nothing to explain from
    rec = Recommender(loaded, [_scenario(untitled)], REC)
    ex = build_examples(rec, None, config.model_copy(update={"explain_targets": "auto"}))
    assert set(ex.counts) == {"rank"} and any("review text or item titles" in n for n in ex.notes)


def test_dataset_masks_the_prompt(loaded):
    rec = Recommender(loaded, [_scenario(movie_data())], REC)
    ex = build_examples(rec, None, FinetuneConfig(examples=5, candidates=6))
    ds, dropped = to_dataset(ex.examples, loaded.tokenizer, max_tokens=2048)
    assert dropped == 0 and len(ds) == len(ex.examples)
    for row, e in zip(ds, ex.examples):
        answer = [t for t in row["labels"] if t != -100]
        assert answer == loaded.tokenizer(e.completion, add_special_tokens=False)["input_ids"]
        assert row["labels"][-len(answer) :] == row["input_ids"][-len(answer) :]  # the answer ends the sequence
    _, dropped = to_dataset(ex.examples, loaded.tokenizer, max_tokens=10)
    assert dropped == len(ex.examples)


def test_clean_review_cuts_at_a_sentence():
    text = "Great strings. They<br/>last long!   Would buy again and again and again."
    assert clean_review(text, 40) == "Great strings. They last long!"
    assert clean_review(None, 40) == ""


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown task"):
        FinetuneConfig(mixture={"rank": 1, "summarise": 1})
    with pytest.raises(ValueError, match="extra"):
        FinetuneConfig(lora_rank=4)


def _config(**kw):
    return FinetuneConfig(**{"examples": 24, "candidates": 6, "positions": 3, "max_steps": 6, "eval_steps": 2,
                             "grad_accum": 2, "eval_users": 6, "learning_rate": 5e-2, "lora_r": 4,
                             "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, "lora_layers": 1, **kw})  # fmt: skip


def _train(loaded, tmp_path, name="run", **kw):
    return finetune(loaded, _scenario(movie_data()), _config(**kw), tmp_path / name, rec_config=REC, progress=False)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_finetune_saves_an_adapter_the_recommender_serves(loaded, tiny_lm_dir, tmp_path):
    base = Recommender(load_model(str(tiny_lm_dir)), [_scenario(movie_data())], REC)
    res = _train(loaded, tmp_path)
    assert res.steps >= 2 and res.train_seconds > 0
    info = read_adapter_info(res.adapter)
    assert info.scenario == "movies" and info.tasks == res.examples and info.templates["rank"].endswith("v1")
    n = res.examples["rank"]  # positions whose target the retriever serves in its top 6: fewer than the 24 asked
    assert 10 <= n <= 24 and (n == 24 or any(f"{n} examples (all there are) of 24" in x for x in res.notes))
    assert info.metrics["valid_users"] == 6 and len(info.metrics["valid_curve"]) >= 1
    assert info.train["stop_reason"].startswith(("completed", "early stopping"))
    assert info.train["stop_reason"].endswith(f"{info.metrics['best_checkpoint']}, kept")
    w = _weights(res.adapter)
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in w.items())  # B starts at zero: it trained
    assert w and all(".layers.1." in k for k in w)  # lora_layers=1: only the last of the 2 layers
    sc = base.scenario()
    served = Recommender(load_model(str(tiny_lm_dir)), [Scenario(sc.config, sc.data, sc.retriever, adapter=res.adapter)],
                         REC)  # fmt: skip
    user = next(iter(served.scenario().histories))
    a = served.recommend(user, k=3)
    b = base.recommend(user, k=3)
    assert served.active_adapter == "movies" and base.active_adapter is None
    assert [i.score for i in a.items] != [i.score for i in b.items]


@pytest.mark.parametrize(
    ("task", "metric", "higher"),
    [("explain", "rouge_l", True), ("rate", "rating_mae", False), ("chat", "chat_kept", True)],
)
def test_validation_follows_the_tasks_trained(tiny_lm_dir, tmp_path, task, metric, higher):
    from ragrec.finetune.trainer import validation_metric

    config = _config(mixture={task: 1}, max_steps=2, eval_steps=1)
    assert validation_metric(config) == (metric, higher) and validation_metric(_config()) == ("ndcg@10", True)
    res = finetune(load_model(str(tiny_lm_dir)), _scenario(_data_with_secrets(review=True)), config, tmp_path / task,
                   rec_config=REC, progress=False)  # fmt: skip
    m = res.info.metrics
    assert set(res.examples) == {task} and len(m["valid_curve"]) == 2 and m["valid_users"] == 6
    best = min if not higher else max
    assert m[f"valid_{metric}_best"] == best(v for _, v in m["valid_curve"])
    if metric == "rating_mae":
        assert all(0 <= v <= 4 for _, v in m["valid_curve"])  # ratings 1-5
    elif metric == "chat_kept":
        assert all(0 <= v <= 1 for _, v in m["valid_curve"])
        # explain first in the registry, but without review text its ROUGE-L cannot be validated: chat decides
        assert validation_metric(_config(mixture={"explain": 1, "chat": 1}), movie_data()) == ("chat_kept", True)
    else:
        assert all(0 <= v <= 100 for _, v in m["valid_curve"])


def test_resume_gives_the_same_adapter(loaded, tiny_lm_dir, tmp_path):
    from transformers import TrainerCallback

    full = _train(loaded, tmp_path, "full", save_total_limit=5)

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    config = _config(save_total_limit=5)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        finetune(load_model(str(tiny_lm_dir)), _scenario(movie_data()), config, out, rec_config=REC, progress=False,
                 callbacks=[Crash()])  # fmt: skip
    assert not out.exists() and any((tmp_path / "resumed.work").glob("checkpoint-2"))
    res = finetune(load_model(str(tiny_lm_dir)), _scenario(movie_data()), config, out, rec_config=REC,
                   progress=False, resume=True)  # fmt: skip
    assert res.steps == full.steps
    a, b = _weights(full.adapter), _weights(res.adapter)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_adapters_are_saved_atomically_and_checked(loaded, tiny_lm_dir, tmp_path, monkeypatch):
    res = _train(loaded, tmp_path, max_steps=2)
    before = _weights(res.adapter)
    import ragrec.inference.adapters as A

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(A, "sha256_file", crash)  # fails after peft wrote the weights, before the metadata
    with pytest.raises(OSError):
        A.save_adapter(res.model, "default", res.adapter, read_adapter_info(res.adapter))
    monkeypatch.undo()
    for k, v in _weights(res.adapter).items():  # the old adapter is intact and still loads
        torch.testing.assert_close(v, before[k])
    assert check_adapter(res.adapter).scenario == "movies"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.new")]
    # A damaged weights file is refused, not served.
    blob = (res.adapter / "adapter_model.safetensors").read_bytes()
    (res.adapter / "adapter_model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CacheError, match="checksum"):
        Recommender(load_model(str(tiny_lm_dir)),
                    [Scenario(ScenarioConfig(name="movies"), movie_data(), _scenario(movie_data()).retriever,
                              adapter=res.adapter)], REC)  # fmt: skip


def test_adapter_from_another_base_model_is_refused(loaded, tiny_lm_dir, tmp_path):
    res = _train(loaded, tmp_path, max_steps=2)
    other = load_model(str(tiny_lm_dir))
    with torch.no_grad():
        other.model.get_input_embeddings().weight.add_(0.5)
    with pytest.raises(RagrecError, match="other weights"):
        check_adapter(res.adapter, other.model, base_model="edited")
    meta = json.loads((res.adapter / "ragrec_adapter.json").read_text())
    assert len(meta["base_fingerprint"]) == 32 and np.isfinite(meta["base_fingerprint"]).all()


def _csvs(tmp_path, data, prefix):
    inter = data.interactions_frame()
    pd.DataFrame({"userId": inter[S.USER_ID], "movieId": inter[S.ITEM_ID], "stars": inter[S.RATING],
                  "timestamp": inter[S.TIMESTAMP]}).to_csv(tmp_path / f"{prefix}_ratings.csv", index=False)  # fmt: skip
    items = [data.item(i) for i in data.item_ids()]
    pd.DataFrame({"movieId": [i.item_id for i in items], "name": [i.title for i in items],
                  "genres": ["|".join(i.categories) for i in items]}).to_csv(tmp_path / f"{prefix}_items.csv", index=False)  # fmt: skip
    return tmp_path / f"{prefix}_ratings.csv", tmp_path / f"{prefix}_items.csv"


TINY_FT = ["recipe=classic", "max_steps=2", "eval_steps=1", "eval_users=4", "examples=8", "candidates=6",
           "grad_accum=2", "lora_r=2", "lora_layers=1"]  # fmt: skip
TINY_RESIDUAL = ["residual.examples=12", "residual.epochs=1", "residual.top_layers=1", "residual.grad_accum=2",
                 "residual.eval_every=2", "residual.valid_users=10", "residual.lora_r=2", "residual.folds=2"]  # fmt: skip


def test_scenario_new_and_finetune_from_two_csvs(tiny_lm_dir, tmp_path):
    from conftest import run_cli

    inter, items = _csvs(tmp_path, movie_data(), "m")
    code, out, err = run_cli("scenario", "new", "films", "--interactions", str(inter), "--items", str(items),
                             "--item-noun", "movie", "--root", str(tmp_path / "sc"))  # fmt: skip
    assert code == 0, err
    spec = yaml.safe_load((tmp_path / "sc" / "films" / "scenario.yaml").read_text())
    assert spec["data"]["interactions"]["columns"] == {"user_id": "userId", "item_id": "movieId",
                                                       "timestamp": "timestamp", "rating": "stars"}  # fmt: skip
    assert spec["data"]["items"]["columns"] == {"item_id": "movieId", "title": "name", "categories": "genres"}
    assert sorted(p.name for p in (tmp_path / "sc" / "films" / "templates").iterdir()) == [
        "chat.yaml", "explain.yaml", "generate.yaml", "rank.yaml", "rate.yaml"]  # fmt: skip
    args = [a for s in TINY_FT for a in ("--set", s)]
    code, out, err = run_cli("finetune", "--scenario", "films", "--root", str(tmp_path / "sc"), "--model",
                             str(tiny_lm_dir), *args)  # fmt: skip
    assert code == 0, err
    assert "registered scenario 'films'" in out
    assert not (tmp_path / "sc" / "films" / "adapter.work").exists()  # checkpoints removed after a finished run
    assert "serving 'films' with the fusion weight" in out  # 10 users: too few for a learned fusion
    rec_dir = tmp_path / "sc" / "films" / "recommender"
    rec = Recommender.from_pretrained(rec_dir)
    assert rec.scenario("films").config.fusion_weight in (0, 0.25, 0.5, 1, 2, 4, 8)
    assert read_adapter_info(rec_dir / "scenarios" / "films" / "adapter").scenario == "films"
    user = next(iter(rec.scenario("films").histories))
    assert len(rec.recommend(user, k=3).items) == 3 and rec.active_adapter == "films"
    # A missing column is named, with the header, instead of a traceback.
    pd.DataFrame({"who": ["a"], "what": ["b"]}).to_csv(tmp_path / "bad.csv", index=False)
    code, _, err = run_cli("scenario", "new", "bad", "--interactions", str(tmp_path / "bad.csv"), "--root",
                           str(tmp_path / "sc"))  # fmt: skip
    assert code == 2 and "user_id" in err and "who, what" in err


def test_finetune_picks_the_reranker_recipe_by_default(tiny_lm_dir, tmp_path):
    from conftest import run_cli, walking_data

    inter, items = _csvs(tmp_path, walking_data(), "w")
    code, _, err = run_cli("scenario", "new", "walks", "--interactions", str(inter), "--items", str(items),
                           "--item-noun", "movie", "--root", str(tmp_path / "sc"))  # fmt: skip
    assert code == 0, err
    args = ["--set", "reranker.folds=2", "--set", "reranker.min_data_in_leaf=5", "--set", "reranker.max_rounds=40"]
    code, out, err = run_cli("finetune", "--scenario", "walks", "--root", str(tmp_path / "sc"), "--model",
                             str(tiny_lm_dir), *args)  # fmt: skip
    assert code == 0, err
    assert "recipe: reranker (auto: a rank-only mixture over an EASE first stage)" in out
    assert "out-of-fold lists:" in out and "validation NDCG@10: retriever" in out
    served = out.split("; serving ")[1].split()[0]
    folder = tmp_path / "sc" / "walks" / "recommender" / "scenarios" / "walks"
    assert not (folder / "adapter").exists()  # no LoRA trained
    rec = Recommender.from_pretrained(tmp_path / "sc" / "walks" / "recommender")
    sc = rec.scenario("walks")
    if served == "fusion":
        assert sc.reranker is None and sc.config.fusion is not None
    else:
        assert sc.reranker is not None and sc.reranker.info.uses_llm == (served == "reranker")
    user = next(iter(sc.histories))
    assert len(rec.recommend(user, k=3).items) == 3


def test_finetune_residual_recipe_when_asked(tiny_lm_dir, tmp_path):
    from conftest import run_cli

    inter, items = _csvs(tmp_path, movie_data(), "m")
    code, _, err = run_cli("scenario", "new", "films", "--interactions", str(inter), "--items", str(items),
                           "--item-noun", "movie", "--root", str(tmp_path / "sc"))  # fmt: skip
    assert code == 0, err
    args = [a for s in ["recipe=residual", *TINY_RESIDUAL] for a in ("--set", s)]
    code, out, err = run_cli("finetune", "--scenario", "films", "--root", str(tmp_path / "sc"), "--model",
                             str(tiny_lm_dir), *args)  # fmt: skip
    assert code == 0, err
    assert "recipe: residual (asked for)" in out
    assert "out-of-fold lists:" in out and "validation NDCG@10: step 0:" in out
    rec = Recommender.from_pretrained(tmp_path / "sc" / "films" / "recommender")
    sc = rec.scenario("films")
    assert sc.config.candidate_order == "shuffled" and sc.config.fusion is not None
    info = read_adapter_info(tmp_path / "sc" / "films" / "recommender" / "scenarios" / "films" / "adapter")
    assert info.train["recipe"] == "residual" and info.metrics["served_fusion"] == sc.config.fusion.model_dump()
    user = next(iter(sc.histories))
    assert len(rec.recommend(user, k=3).items) == 3
    # asking for the residual recipe where it cannot apply is refused, not silently switched
    code, _, err = run_cli("finetune", "--scenario", "films", "--root", str(tmp_path / "sc"), "--model",
                           str(tiny_lm_dir), "--set", "recipe=residual", "--set", "mixture={rank: 1, rate: 1}")  # fmt: skip
    assert code != 0 and "rank only" in err


def test_dotted_settings_merge_into_nested_ones():
    from ragrec.config import merge_settings, parse_overrides

    ov = parse_overrides(["residual.examples=5", "epochs=2"])
    assert ov == {"residual": {"examples": 5}, "epochs": 2}
    merged = merge_settings({"residual": {"examples": 1, "folds": 3}, "epochs": 1}, ov)
    assert merged == {"residual": {"examples": 5, "folds": 3}, "epochs": 2}
    with pytest.raises(RagrecError, match="key=value"):
        parse_overrides(["residual.=3"])


def test_two_finetuned_scenarios_in_one_process(tiny_lm_dir, tmp_path):
    from ragrec.config import parse_overrides
    from ragrec.finetune.scenario import new_scenario, run_scenario

    folders = {}
    for name in ("films", "games"):
        inter, items = _csvs(tmp_path, movie_data(), name)
        folders[name] = new_scenario(name, tmp_path / name, interactions=inter, items=items).path.parent
    # The games scenario gets its own wording: switching scenario must switch prompts too.
    rank = folders["games"] / "templates" / "rank.yaml"
    rank.write_text(rank.read_text().replace("You are a recommender system.", "You are a game shop clerk."))
    ov = parse_overrides(TINY_FT)
    run_scenario(folders["films"], overrides=ov, model=str(tiny_lm_dir), out=tmp_path / "rec", progress=False,
                 echo=lambda s: None)  # fmt: skip
    run_scenario(folders["games"], overrides={**ov, "lora_r": 3}, model=str(tiny_lm_dir), add_to=tmp_path / "rec",
                 progress=False, echo=lambda s: None)  # fmt: skip
    rec = Recommender.from_pretrained(tmp_path / "rec")
    assert list(rec.scenarios) == ["films", "games"]
    assert sorted(rec.loaded.model.peft_config) == ["films", "games"]
    assert rec.loaded.model.peft_config["games"].r == 3 and rec.loaded.model.peft_config["films"].r == 2
    user = next(iter(rec.scenario("films").histories))
    scores = {}
    for name in ("films", "games", "films"):
        r = rec.recommend(user, scenario=name, k=3)
        assert rec.active_adapter == name and rec.loaded.model.active_adapter == name
        scores.setdefault(name, []).append([i.score for i in r.items])
    assert scores["films"][0] == scores["films"][1]  # switching back restores the first adapter exactly
    assert "game shop clerk" in rec.template(rec.scenario("games"), "rank").system
    assert "game shop clerk" not in rec.template(rec.scenario("films"), "rank").system


@pytest.mark.slow
def test_accelerate_launch_trains_on_two_cpu_processes(tiny_lm_dir, tmp_path):
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher, "accelerate's launcher is installed with the package"
    script = Path(__file__).parent / "scripts" / "ddp_finetune.py"
    # --multi_gpu selects accelerate's torchrun launcher; without CUDA the processes join over gloo on the CPU.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
                           str(script), str(tiny_lm_dir), str(tmp_path / "adapter")],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT steps=2 world=2") == 2
    assert read_adapter_info(tmp_path / "adapter").train["processes"] == 2
