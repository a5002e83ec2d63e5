"""The vLLM backend on a GPU (marked ``gpu`` and ``slow``; skipped without CUDA or vLLM): its letter
scores rank candidates as the transformers backend does, text is written and stopped by the
template's rule, LoRA adapters ride on requests, and constrained titles are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import backend_agreement, tiny_scenario
from ragrec.errors import RagrecError
from ragrec.inference import Recommender, RecommenderConfig, load_model

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def loaded():
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return load_model("smollm2-135m-instruct", device="cuda")


def test_vllm_letter_scores_rank_like_transformers(loaded):
    rho, _ = backend_agreement(loaded, "vllm")
    assert np.median(rho) >= 0.95, rho  # normalised over the letters on vLLM: the same order


def test_vllm_writes_and_stops(loaded):
    from ragrec.inference.backends import Decoding
    from ragrec.prompts import chat_text

    sc = tiny_scenario()
    rec = Recommender(loaded, [sc], RecommenderConfig(candidates=8, backend="vllm"))
    backend = rec.backend_for(sc)
    prompt = chat_text(loaded.tokenizer, [{"role": "user", "content": "Name three movies."}])
    ids = backend.generate([prompt], Decoding(40, stop=lambda text: "." in text))[0]
    text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert text and text.count(".") <= 1
    assert rec.explain(sc.histories["u1"].item_ids[0], "u1").text
    with pytest.raises(RagrecError, match="constrained generation is not available on the vllm backend"):
        rec.generate("u1", n=2)
