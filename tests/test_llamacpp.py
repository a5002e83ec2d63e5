"""The llama.cpp backend against the transformers backend on the same prompts (slow tier: the real
SmolLM2-135M and llama-cpp-python, which `make llamacpp` builds; skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from conftest import tiny_scenario
from ragrec.errors import RagrecError
from ragrec.inference import Recommender, RecommenderConfig, load_model

pytestmark = pytest.mark.slow


def test_llamacpp_letter_scores_agree_with_transformers():
    pytest.importorskip("llama_cpp")
    loaded = load_model("smollm2-135m-instruct", device="cpu")
    sc = tiny_scenario()
    ref = Recommender(loaded, [sc], RecommenderConfig(candidates=8))
    cpp = Recommender(loaded, [sc], RecommenderConfig(candidates=8, backend="llamacpp"))
    users = sorted(sc.histories)
    cands = [[c.item_id for c in r.candidates] for r in sc.retriever.retrieve(users, k=8)]
    hists = [list(sc.histories[u].item_ids) for u in users]
    a = ref.score_candidates(sc, hists, cands)
    b = cpp.score_candidates(sc, hists, cands)
    rho = [spearmanr(x, y).statistic for x, y in zip(a, b)]
    # The alias's GGUF is Q4_1; transformers runs the same weights dequantized (ML-100K prompts: median 0.994).
    assert np.median(rho) >= 0.95, rho
    assert np.mean([np.argmax(x) == np.argmax(y) for x, y in zip(a, b)]) >= 0.8
    with pytest.raises(RagrecError, match="no GGUF file"):
        Recommender(loaded, [sc], RecommenderConfig(candidates=8, backend="llamacpp", model="some/hub-id")
                    ).score_candidates(sc, hists[:1], cands[:1])  # fmt: skip
