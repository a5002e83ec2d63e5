"""The residual, retriever-anchored LLM ranker: out-of-fold lists, the cut model, the shuffled
order, training that starts at the fusion, and serving the same sum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import movie_data
from ragrec import schema as S
from ragrec.errors import RagrecError
from ragrec.finetune.residual import (
    ResidualConfig,
    SplitModel,
    out_of_fold_lists,
    residual_examples,
    serving_lists,
    train_residual,
)
from ragrec.inference import Recommender, RecommenderConfig, Scenario, ScenarioConfig, load_model
from ragrec.inference.adapters import read_adapter_info
from ragrec.inference.fusion import FusionModel, ItemPriors
from ragrec.inference.recommender import shown_order
from ragrec.retrieval import EASEConfig, EASEEncoder, Retriever

REC = RecommenderConfig(candidates=6, max_history=4)
NAMES = ["retriever", "popularity", "category_match", "year_offset", "year_gap"]


def _ease_scenario(data=None) -> Scenario:
    data = data or movie_data()
    enc = EASEEncoder.fit(data, EASEConfig(l2=5.0, decay=0.9), splits=(S.TRAIN,))
    return Scenario(ScenarioConfig(name="movies", item_noun="movie"), data, Retriever.build(enc, data))


def test_ease_from_sequences_is_fit():
    data = movie_data()
    a = EASEEncoder.fit(data, EASEConfig(l2=3.0), splits=(S.TRAIN,))
    seqs = [h.item_ids for h in data.histories(splits=(S.TRAIN,)).values()]
    b = EASEEncoder.from_sequences(data.item_ids(), seqs, EASEConfig(l2=3.0))
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-6)
    with pytest.raises(RagrecError, match="outside the catalog"):
        EASEEncoder.from_sequences(data.item_ids(), [["nope"]])


def test_out_of_fold_lists_never_come_from_a_model_that_saw_the_user():
    sc = _ease_scenario()
    config = ResidualConfig(folds=2, candidates=4)
    lists, priors, report = out_of_fold_lists(sc, config, progress=False)
    assert lists and report["lists_with_target"] == len(lists) <= report["positions"]
    sequences = sc.data.histories(splits=(S.TRAIN,))
    fold_of = _folds(sc, config)
    for cl in lists:
        seq = sequences[cl.user_id].item_ids
        t = len(cl.history)
        assert cl.history == seq[:t] and cl.candidates[cl.target] == seq[t]
        assert not (set(cl.candidates) - {seq[t]}) & set(seq)  # the user's other items are never negatives
        # the same list from EASE fitted without this fold's users
        assert fold_of[cl.user_id] == cl.fold
        others = [sequences[u].item_ids for u in sequences if fold_of[u] != cl.fold]
        model = EASEEncoder.from_sequences(sc.retriever.encoder.item_ids, others, EASEConfig(l2=5.0, decay=0.9))
        s = model.scores([cl.history])[0]
        np.testing.assert_allclose(cl.retriever, s[[sc.retriever.encoder.item_ids.index(i) for i in cl.candidates]],
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    assert set(priors) == {"0", "1"}


def _folds(sc, config) -> dict[str, int]:
    users = sorted(sc.data.histories(splits=(S.TRAIN,)))
    return dict(zip(users, np.random.default_rng(config.seed).permutation(len(users)) % config.folds))


def test_out_of_fold_lists_need_ease():
    from conftest import tiny_scenario

    with pytest.raises(RagrecError, match="EASE"):
        out_of_fold_lists(tiny_scenario(), ResidualConfig(), progress=False)


def test_shown_order_is_a_fixed_permutation():
    ids = [f"i{j}" for j in range(20)]
    a, b = shown_order(ids), shown_order(list(ids))
    assert sorted(a.tolist()) == list(range(20)) and a.tolist() == b.tolist()
    assert a.tolist() != list(range(20))
    assert shown_order(ids[::-1]).tolist() != a.tolist()


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_split_model_equals_the_whole_model(cut):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()  # fmt: skip
    ids = [3, 7, 9, 1, 4, 4, 8]
    letters = [10, 11, 12]
    split = SplitModel(model, cut)
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids])).logits[0, -1, letters]
        mine = split.upper(split.lower(ids), letters)
    torch.testing.assert_close(mine, full, atol=1e-5, rtol=1e-5)
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4  # restored
    with pytest.raises(RagrecError, match="cut"):
        SplitModel(model, 4)


def test_split_model_with_layer_types():
    """Gemma-3 picks each layer's attention by config.layer_types[i]: the cut keeps them aligned."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=8, sliding_window=3,
                              layer_types=["sliding_attention", "full_attention"] * 2)  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    ids = [3, 7, 9, 1, 4, 4, 8, 2]
    split = SplitModel(model, 1)
    with torch.no_grad():
        full = model(input_ids=torch.tensor([ids])).logits[0, -1, [5, 6]]
        mine = split.upper(split.lower(ids), [5, 6])
    torch.testing.assert_close(mine, full, atol=1e-4, rtol=1e-4)
    assert model.config.layer_types == ["sliding_attention", "full_attention"] * 2


def _fusion(sc) -> FusionModel:
    return FusionModel(weights={n: w for n, w in zip(NAMES, [1.0, 0.1, 0.2, 0.0, -0.1])}, max_history=4)


@pytest.mark.parametrize("scale_init", [0.0, 1.0])
def test_training_starts_at_the_fusion_and_serves_the_same_sum(tiny_lm_dir, tmp_path, scale_init):
    sc = _ease_scenario()
    rec = Recommender(load_model(str(tiny_lm_dir)), [sc], REC)
    config = ResidualConfig(folds=2, candidates=6, top_layers=1, epochs=2, grad_accum=2, eval_every=2,
                            valid_users=10, patience=10, lora_r=2, learning_rate=5e-2, scale_init=scale_init)  # fmt: skip
    lists, fold_priors, _ = out_of_fold_lists(sc, config, progress=False)
    fusion = _fusion(sc)
    train = residual_examples(rec, sc, lists, fusion, fold_priors)
    vlists = serving_lists(sc, S.VALID, None, 6)
    prior_v = ItemPriors.from_histories(sc.catalog, (h.item_ids for h in sc.data.histories(splits=(S.TRAIN,)).values()))
    valid = residual_examples(rec, sc, [cl for cl in vlists if cl.target >= 0], fusion, prior_v)
    for ex in train[:3]:  # the shown order is the fixed shuffle, the target moved with it
        assert ex.shown[ex.target] in sc.catalog and len(ex.letter_ids) == len(ex.shown)
    # step 0: scale 0, so validation equals the fusion's own NDCG@10
    res = train_residual(rec, None, train, valid, len(vlists), fusion, config, tmp_path / "adapter")
    from ragrec.finetune.residual import _ndcg

    assert res.curve[0][1] == pytest.approx(_ndcg([e.base for e in valid], valid, len(vlists)))
    assert len(res.curve) > 1 and res.best_step in [s for s, _ in res.curve]
    assert {k: v for k, v in res.fusion.weights.items() if k != "llm_logp"} == fusion.weights
    best = max(v for _, v in res.curve)
    assert dict(res.curve)[res.best_step] == best
    if res.best_step == 0:  # no gain on validation: the fusion alone is served
        assert res.scale == 0.0 and res.fusion == fusion
    else:
        assert res.fusion.weights["llm_logp"] == pytest.approx(res.scale, abs=1e-6)
    info = read_adapter_info(res.adapter)
    assert info.train["recipe"] == "residual" and info.metrics["served_fusion"] == res.fusion.model_dump()
    assert not (tmp_path / "adapter.work").exists()
    # served: f + scale x the letter log-probabilities of the shuffled list, through recommend()
    residual = FusionModel(weights={**fusion.weights, "llm_logp": 0.7}, max_history=4)
    update = {"fusion": residual, "candidate_order": "shuffled"}
    served = dataclasses.replace(sc, config=sc.config.model_copy(update=update), adapter=res.adapter)
    rec.scenarios[sc.name] = served
    rec.adapter_names[sc.name] = "default"
    cl = vlists[0]
    llm = rec.score_candidates(served, [list(cl.history)], [list(cl.candidates)])[0]
    order = shown_order(cl.candidates)  # the scores are the model's on the shuffled prompt, mapped back
    shown = [[sc.catalog[cl.candidates[j]] for j in order]]
    ranker = rec._rankers[sc.name]
    with rec.use(served):
        raw = ranker.label_scores(*ranker.prompts([rec.history_items(sc, cl.history)], shown, "movie"))[0]
    np.testing.assert_allclose(llm[order], raw, rtol=1e-5, atol=1e-6)
    # recommend() reads the priors of every known interaction (a served scenario's), not the train split's
    rows = served.priors.features(cl.history, cl.candidates, cl.retriever, llm, residual.names, residual.max_history)
    want = [cl.candidates[j] for j in np.argsort(-residual.score(rows), kind="stable")[:5]]
    got = rec.recommend(history=list(cl.history), k=5)
    assert [i.item_id for i in got.items] == want


def test_a_fusion_without_the_llm_never_runs_it(tiny_lm_dir):
    sc = _ease_scenario()
    sc = dataclasses.replace(sc, config=sc.config.model_copy(update={"fusion": _fusion(sc)}))
    rec = Recommender(load_model(str(tiny_lm_dir)), [sc], REC)

    def boom(*a, **k):
        raise AssertionError("the LLM ran")

    rec.score_candidates = boom
    got = rec.recommend(history=["m1", "m2"], k=3)
    assert len(got.items) == 3


def test_residual_examples_refuse_an_llm_anchor(tiny_lm_dir):
    sc = _ease_scenario()
    rec = Recommender(load_model(str(tiny_lm_dir)), [sc], REC)
    with pytest.raises(RagrecError, match="must not use"):
        residual_examples(rec, sc, [], FusionModel(weights={"llm": 1.0, "retriever": 1.0}), {})
