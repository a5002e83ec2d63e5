"""Item text rendering, registries and the deliberate public API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ragrec
import ragrec.data
from ragrec import Item, UserHistory
from ragrec.data.text import clean_text, render_item_text, truncate
from ragrec.errors import UnknownNameError
from ragrec.registry import Registry


def test_render_item_text():
    item = Item("1", "Toy Story", 1995, ("Animation", "Children's", "Comedy"))
    assert render_item_text(item) == "Toy Story (1995) | Animation, Children's, Comedy"
    assert render_item_text(Item("9")) == "item 9"
    assert render_item_text(Item("2", "Zelda &amp; Link", brand="Nintendo")) == "Zelda & Link | by Nintendo"
    assert render_item_text(item, fields=("title",)) == "Toy Story"
    with pytest.raises(ValueError, match="unknown item text fields"):
        render_item_text(item, fields=("plot",))


@given(
    st.text(max_size=400),
    st.lists(st.text(max_size=40), max_size=12),
    st.text(max_size=600),
    st.integers(10, 300),
)
def test_rendered_text_is_bounded_and_clean(title, cats, desc, max_chars):
    item = Item("x", title, None, tuple(cats), None, desc)
    text = render_item_text(item, fields=("title", "categories", "description"), max_chars=max_chars)
    assert 0 < len(text) <= max_chars
    assert "\n" not in text and "\x00" not in text


def test_clean_and_truncate():
    assert clean_text("  a\n\tb\x00c  ") == "a b c"
    assert truncate("one two three four", 10) == "one two…"
    assert truncate("short", 10) == "short"


def test_user_history_checks_lengths_and_slices():
    h = UserHistory("u", ("a", "b", "c"), (1, 2, 3), (None, 4.0, 5.0))
    assert h.last(2).item_ids == ("b", "c") and h.last(2).ratings == (4.0, 5.0)
    assert len(h.last(10)) == 3
    with pytest.raises(ValueError, match="timestamps has 1 entries"):
        UserHistory("u", ("a", "b"), (1,))


def test_registry_rejects_duplicates_and_lists_names():
    reg = Registry[int]("encoder")
    reg.register("sasrec", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("sasrec", 2)
    with pytest.raises(UnknownNameError, match="unknown encoder 'bert'; valid: sasrec"):
        reg.get("bert")


def test_public_api_is_deliberate():
    assert sorted(ragrec.__all__) == sorted(
        [
            "CacheError",
            "DataFormatError",
            "DownloadError",
            "Item",
            "RagrecError",
            "Recommender",
            "UnknownNameError",
            "UserHistory",
            "__version__",
        ]
    )
    for name in ragrec.__all__:
        assert hasattr(ragrec, name)
    for name in ragrec.data.__all__:
        assert hasattr(ragrec.data, name), name
    assert {"pull", "load_prepared", "InteractionData", "split_from_file", "render_item_text"} <= set(
        ragrec.data.__all__
    )


def test_subpackage_apis_resolve():
    import ragrec.eval
    import ragrec.finetune
    import ragrec.inference
    import ragrec.prompts
    import ragrec.retrieval

    for module in (ragrec.retrieval, ragrec.eval, ragrec.inference, ragrec.prompts, ragrec.finetune):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
    assert set(ragrec.retrieval.ENCODERS.names()) == {"ease", "hybrid", "mf", "popularity", "sasrec", "text"}
