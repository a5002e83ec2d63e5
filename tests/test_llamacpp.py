"""The llama.cpp backend against the transformers backend on the same prompts (slow tier: the real
SmolLM2-135M and llama-cpp-python, which `make llamacpp` builds; skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import backend_agreement, tiny_scenario
from ragrec.errors import RagrecError
from ragrec.inference import Recommender, RecommenderConfig, load_model

pytestmark = pytest.mark.slow


def test_llamacpp_letter_scores_agree_with_transformers():
    pytest.importorskip("llama_cpp")
    loaded = load_model("smollm2-135m-instruct", device="cpu")
    rho, same_top = backend_agreement(loaded, "llamacpp")
    # The alias's GGUF is Q4_1; transformers runs the same weights dequantized (ML-100K prompts: median 0.994).
    assert np.median(rho) >= 0.95, rho
    assert np.mean(same_top) >= 0.8
    sc = tiny_scenario()
    hists, cands = [list(sc.histories["u1"].item_ids)], [["m1", "m2"]]
    with pytest.raises(RagrecError, match="no GGUF file"):
        Recommender(loaded, [sc], RecommenderConfig(candidates=8, backend="llamacpp", model="some/hub-id")
                    ).score_candidates(sc, hists, cands)  # fmt: skip


def test_llamacpp_writes_text_and_catalog_titles():
    """Generation on llama.cpp: greedy text close to transformers' (the same weights, Q4_1), the
    stream is the text, the repetition controls hold, and constrained titles are catalog items."""
    pytest.importorskip("llama_cpp")
    from ragrec.inference.backends import Decoding, banned_ngram_tokens, make_backend
    from ragrec.prompts import chat_text

    loaded = load_model("smollm2-135m-instruct", device="cpu")
    ref = make_backend("transformers", loaded)
    cpp = make_backend("llamacpp", loaded, model="smollm2-135m-instruct")
    tok = loaded.tokenizer
    questions = ["Name a famous science fiction movie.", "Why do people like comedies?", "Say hello.",
                 "What is a good movie for a rainy day?"]  # fmt: skip
    prompts = [chat_text(tok, [{"role": "user", "content": q}]) for q in questions]
    a = ref.generate(prompts, Decoding(12))
    b = cpp.generate(prompts, Decoding(12))
    assert np.mean([x[:4] == y[:4] for x, y in zip(a, b)]) >= 0.5, (a, b)
    assert "".join(cpp.stream(prompts[0], Decoding(12))) == tok.decode(b[0], skip_special_tokens=True)
    controlled = cpp.generate(prompts, Decoding(40, repetition_penalty=1.3, no_repeat_ngram_size=3))
    for ids in controlled:
        assert all(ids[j] not in banned_ngram_tokens(ids[:j], 3) for j in range(len(ids)))
    sc = tiny_scenario()
    rec = Recommender(loaded, [sc], RecommenderConfig(candidates=8, backend="llamacpp"))
    out = rec.generate("u1", n=3)
    assert out.items and all(i.item_id in sc.catalog for i in out.items)
    ex = rec.explain(out.items[0].item_id, "u1")
    assert ex.model_text and ex.text


def test_llamacpp_reuses_the_shared_prefix_without_changing_scores():
    """A prompt is evaluated after the prefix it shares with the context's tokens (the chat template's
    system part; all but the last token of a repeated prompt), with the scores of a fresh context."""
    pytest.importorskip("llama_cpp")
    from ragrec.inference.backends import make_backend
    from ragrec.prompts import chat_text

    loaded = load_model("smollm2-135m-instruct", device="cpu")
    cpp = make_backend("llamacpp", loaded, model="smollm2-135m-instruct")
    tok = loaded.tokenizer
    prompts = [chat_text(tok, [{"role": "user", "content": q}]) for q in
               ("Pick A or B: a comedy or a drama?", "Pick A or B: a western or a musical?")]  # fmt: skip
    ids = [tok.convert_tokens_to_ids(t) for t in ("A", "B")]
    evaluated: list[int] = []
    run = cpp.llm.eval
    cpp.llm.eval = lambda tokens: (evaluated.append(len(tokens)), run(tokens))[1]
    reused = cpp.token_logprobs([*prompts, prompts[1]], [ids] * 3)
    fresh = []
    for p in prompts:
        cpp.llm.reset()
        fresh += cpp.token_logprobs([p], [ids])
    full = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert evaluated[0] == full[0] and evaluated[1] < full[1] and evaluated[2] == 1, (evaluated, full)
    np.testing.assert_allclose(reused[0], fresh[0], atol=1e-3)
    np.testing.assert_allclose(reused[1], fresh[1], atol=1e-2)  # another split of the prompt into batches
    np.testing.assert_allclose(reused[2], fresh[1], atol=1e-2)


def test_llamacpp_serves_a_lora_adapter_like_transformers(tmp_path):
    """A scenario's peft LoRA adapter, converted to a GGUF adapter by llama.cpp's own converter, moves
    llama.cpp's scores as it moves transformers' (and a Q8_0 export of the base serves it too)."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("sentencepiece")
    import torch
    from peft import LoraConfig, get_peft_model

    from ragrec.inference.gguf import export_adapter

    base = load_model("smollm2-135m-instruct", device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, init_lora_weights=False, layers_to_transform=list(range(20, 30)),
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]))  # fmt: skip
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)  # random B is small: an adapter that moves scores clearly
    peft.save_pretrained(tmp_path / "adapter")
    assert export_adapter(tmp_path / "adapter", "smollm2-135m-instruct").stat().st_size > 0
    loaded = load_model("smollm2-135m-instruct", device="cpu")
    rho, _ = backend_agreement(loaded, "llamacpp", adapter=tmp_path / "adapter")
    moved, _ = backend_agreement(loaded, "transformers", reference=tmp_path / "adapter")  # base vs adapter
    assert np.median(rho) >= 0.95 and np.median(moved) < np.median(rho) - 0.05, (rho, moved)
    q8, _ = backend_agreement(loaded, "llamacpp", adapter=tmp_path / "adapter", options={"quant": "Q8_0"})
    assert np.median(q8) >= 0.95, q8
