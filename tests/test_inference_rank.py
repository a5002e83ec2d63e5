"""Verbalizer ranking on a tiny random model: shapes, one forward pass, labels, permutations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ragrec import Item
from ragrec.errors import RagrecError
from ragrec.inference.models import load_model
from ragrec.inference.rank import LetterRanker
from ragrec.prompts import builtin_registry


@pytest.fixture(scope="module")
def ranker(tiny_lm_dir):
    return LetterRanker(
        load_model(str(tiny_lm_dir), device="cpu"), builtin_registry().get("default", "rank"), batch_size=2
    )


def _items(words):
    return [Item(str(i), w) for i, w in enumerate(words)]


HIST = [_items(["toy story", "heat"]), _items(["alien"]), []]
CANDS = [
    _items(["fargo", "clueless", "goldeneye"]),
    _items(["heat", "toy story"]),
    _items(["alien", "drama", "comedy", "crime"]),
]


def test_rank_matches_a_manual_forward_pass(ranker):
    ranked = ranker.rank(HIST, CANDS, item_noun="movie")
    assert [len(r) for r in ranked] == [3, 2, 4]
    assert all([x.rank for x in r] == list(range(1, len(r) + 1)) for r in ranked)
    assert all(r[i].score >= r[i + 1].score for r in ranked for i in range(len(r) - 1))
    # The same numbers by hand: full logits of the unpadded prompt, last position.
    text, labels = ranker.prompts(HIST[:1], CANDS[:1], "movie")
    tok, model = ranker.loaded.tokenizer, ranker.loaded.model
    ids = tok(text[0], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(**ids).logits[0, -1].float(), -1)
    expected = {c.item_id: float(logp[tok.convert_tokens_to_ids(lab)]) for c, lab in zip(CANDS[0], labels[0])}
    for item in ranked[0]:
        assert item.score == pytest.approx(expected[item.item_id], abs=1e-4)  # left padding changes nothing


def test_batching_does_not_change_scores(ranker, tiny_lm_dir):
    single = LetterRanker(ranker.loaded, ranker.template, batch_size=1).rank(HIST, CANDS)
    batched = ranker.rank(HIST, CANDS)
    for a, b in zip(single, batched):
        assert {x.item_id: round(x.score, 4) for x in a} == {x.item_id: round(x.score, 4) for x in b}


def test_permutation_averaging_is_order_invariant(ranker):
    n = len(CANDS[2])
    a = ranker.rank(HIST[2:], CANDS[2:], permutations=n)[0]
    rotated = [CANDS[2][1:] + CANDS[2][:1]]
    b = ranker.rank(HIST[2:], rotated, permutations=n)[0]
    # Over all n cyclic shifts each candidate sees every position once: the order does not matter.
    assert {x.item_id: round(x.score, 4) for x in a} == {x.item_id: round(x.score, 4) for x in b}
    one = ranker.rank(HIST[2:], CANDS[2:])[0]
    assert not np.allclose(sorted(x.score for x in one), sorted(x.score for x in a))


def test_label_and_input_errors(ranker):
    with pytest.raises(RagrecError, match="label 'AD' is not a single token"):
        ranker.label_ids(["AD"])  # unknown to the tiny vocabulary: one <unk> token, refused
    assert len(set(ranker.label_ids(["A", "B", "AA", "AB"]))) == 4
    with pytest.raises(RagrecError, match="2 histories for 1 candidate lists"):
        ranker.rank(HIST[:2], CANDS[:1])
    with pytest.raises(RagrecError, match="at least one candidate"):
        ranker.rank([[]], [[]])
    with pytest.raises(RagrecError, match="does not answer with a label"):
        LetterRanker(ranker.loaded, builtin_registry().get("default", "explain"))


def test_more_than_26_candidates_use_two_letter_labels_that_are_tokens(ranker):
    """The tiny vocabulary has A-Z, AA, AB, AC: 29 labels; a 30th cannot be made."""
    assert ranker.labels_for(29)[-3:] == ["AA", "AB", "AC"]
    cands = [_items(["heat"] * 29)]
    ranked = ranker.rank([[]], cands, item_noun="movie")[0]
    assert len(ranked) == 29 and {r.label for r in ranked} >= {"AA", "AC"}
    with pytest.raises(RagrecError, match="only 29 single-token candidate labels"):
        ranker.labels_for(30)
