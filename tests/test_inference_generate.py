"""Constrained generation: only catalog titles, distinct, mapped back by trie path."""

from __future__ import annotations

import pytest

from ragrec import Item
from ragrec.errors import RagrecError
from ragrec.inference.generate import ConstrainedGenerator, TitleTrie
from ragrec.inference.models import load_model
from ragrec.prompts import builtin_registry

CATALOG = [Item("1", "toy story"), Item("2", "heat"), Item("3", "alien"), Item("4", "fargo"), Item("5", "usual suspects"),
           Item("6", "toy story"), Item("7", None)]  # fmt: skip


@pytest.fixture(scope="module")
def generator(tiny_lm_dir):
    return ConstrainedGenerator(
        load_model(str(tiny_lm_dir), device="cpu"), builtin_registry().get("default", "generate")
    )


def test_trie_maps_titles_to_items(generator):
    tok = generator.loaded.tokenizer
    trie = TitleTrie(tok, CATALOG)
    assert trie.size == 6  # the item without a title is skipped
    assert trie.walk(tok.encode("toy story", add_special_tokens=False)).item_ids == ["1", "6"]
    assert trie.walk(tok.encode("toy", add_special_tokens=False)).item_ids == []
    assert trie.walk(tok.encode("the", add_special_tokens=False)) is None
    with pytest.raises(RagrecError, match="no item with a title"):
        TitleTrie(tok, [Item("x")])


@pytest.mark.parametrize("n", [1, 3, 6])
def test_random_model_can_only_write_catalog_items(generator, n):
    # A random model would write anything; the constraint leaves it only catalog titles.
    out = generator.generate([Item("9", "clueless")], CATALOG, n=n, item_noun="movie")
    ids = {i.item_id for i in CATALOG}
    assert 1 <= len(out.item_ids) <= n and set(out.item_ids) <= ids
    assert len(set(out.item_ids)) == len(out.item_ids)
    sep = generator.sep_text if generator.sep_text != "\n" else None
    for line in filter(None, (x.strip() for x in out.text.split(sep))):
        assert line in {i.title for i in CATALOG}, out.text


def test_rejects_bad_requests(generator):
    with pytest.raises(RagrecError, match="n must be >= 1"):
        generator.generate([], CATALOG, n=0)
    with pytest.raises(RagrecError, match="does not answer with text"):
        ConstrainedGenerator(generator.loaded, builtin_registry().get("default", "rank"))


def test_batched_generation_gives_each_user_their_own_list(generator):
    histories = [[Item("9", "clueless")], [Item("2", "heat"), Item("3", "alien"), Item("4", "fargo")], []]
    excludes = [[], histories[1], []]
    batched = generator.generate_many(histories, CATALOG, n=3, item_noun="movie", excludes=excludes)
    single = [generator.generate(h, CATALOG, n=3, item_noun="movie", exclude=e) for h, e in zip(histories, excludes)]
    assert [b.item_ids for b in batched] == [s.item_ids for s in single]  # left padding changes nothing
    assert not {"2", "3", "4"} & set(batched[1].item_ids)  # that user's history is excluded, only theirs
    assert generator.generate_many([], CATALOG) == []
    with pytest.raises(RagrecError, match="2 exclusion lists for 3"):
        generator.generate_many(histories, CATALOG, excludes=excludes[:2])
