"""Rating prediction: expectation over digit tokens, a proper distribution, one pass per item."""

from __future__ import annotations

import pytest
import torch

from ragrec import Item
from ragrec.errors import RagrecError
from ragrec.inference.models import load_model
from ragrec.inference.rate import RatingPredictor
from ragrec.prompts import builtin_registry


def test_expected_rating_is_the_digit_expectation(tiny_lm_dir):
    loaded = load_model(str(tiny_lm_dir), device="cpu")
    predictor = RatingPredictor(loaded, builtin_registry().get("default", "rate"))
    hist = [Item("1", "heat"), Item("2", "alien")]
    preds = predictor.predict(hist, [5.0, 2.0], [Item("3", "fargo"), Item("4", "toy story")], item_noun="movie")
    assert [p.item_id for p in preds] == ["3", "4"]
    for p in preds:
        assert sum(p.distribution.values()) == pytest.approx(1.0, abs=1e-5)
        assert 1.0 <= p.expected <= 5.0
        assert p.expected == pytest.approx(sum(int(k) * v for k, v in p.distribution.items()), abs=1e-4)
    # By hand for the first item: unpadded forward pass, softmax over the five digit logits.
    tok = loaded.tokenizer
    from ragrec.prompts import history_block

    msgs = predictor.template.render(
        {"item_noun": "movie", "history": history_block(hist, predictor.budget, [5.0, 2.0]), "item": "fargo"}
    )
    ids = tok(
        tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        logits = loaded.model(**ids).logits[0, -1, predictor.ids]
    assert preds[0].expected == pytest.approx(float(torch.softmax(logits, -1) @ torch.arange(1.0, 6.0)), abs=1e-4)
    assert predictor.predict(hist, [5.0, 2.0], []) == []
    with pytest.raises(RagrecError, match="does not answer with digits"):
        RatingPredictor(loaded, builtin_registry().get("default", "rank"))
