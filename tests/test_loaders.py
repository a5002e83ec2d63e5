"""Every format reads the same tiny dataset into the same shape."""

from __future__ import annotations

import pytest

from conftest import INTERACTIONS, N_INTERACTIONS, TITLES
from ragrec import schema as S
from ragrec.data import FORMATS, load_raw, render_item_text
from ragrec.data.loaders import split_title_year
from ragrec.errors import UnknownNameError


def _check_common(data, user_prefix="", item_prefix="", ratings=True):
    stats = data.stats()
    assert stats.users == len(INTERACTIONS)
    assert stats.interactions == N_INTERACTIONS
    assert stats.items == len(TITLES)
    assert stats.has_ratings is ratings
    hist = data.histories()
    # Chronological order, ties (user 2's last two at t=230) in file order: 8 before 2.
    assert hist[f"{user_prefix}2"].item_ids == tuple(f"{item_prefix}{i}" for i in ("6", "1", "7", "8", "2"))
    assert hist[f"{user_prefix}1"].item_ids == tuple(f"{item_prefix}{i}" for i in "12345")


@pytest.mark.parametrize(
    "fmt,fixture",
    [
        ("movielens-100k", "ml100k_dir"),
        ("movielens-dat", "ml_dat_dir"),
        ("movielens-csv", "ml_csv_dir"),
        ("recbole", "recbole_dir"),
    ],
)
def test_movie_formats_agree(fmt, fixture, request):
    data = load_raw(fmt, request.getfixturevalue(fixture), name="tiny")
    _check_common(data)
    toy = data.item("1")
    assert (toy.title, toy.year) == ("Toy Story", 1995)
    assert "Comedy" in toy.categories and "Animation" in toy.categories
    assert data.item("4").title == "Amélie"  # latin-1 decoded where the format says so
    frame = data.interactions_frame()
    assert frame.loc[(frame.user_id == "1") & (frame.item_id == "4"), "rating"].item() == 2.0


def test_movielens_users_are_kept(ml100k_dir, ml_dat_dir):
    for fmt, path in (("movielens-100k", ml100k_dir), ("movielens-dat", ml_dat_dir)):
        data = load_raw(fmt, path)
        assert data.users is not None and len(data.users) == len(INTERACTIONS)


def test_recbole_sequence_form(recbole_seq_dir):
    data = load_raw("recbole", recbole_seq_dir / "Games.test.inter", name="games")
    _check_common(data, ratings=False)
    assert data.name == "games"
    # No clock: positions are the timestamps.
    assert data.histories()["1"].timestamps == (0, 1, 2, 3, 4)
    # HTML entities are kept in the data and unescaped when rendered.
    assert data.item("1").title == "Toy Story &amp; co"
    assert render_item_text(data.item("1")) == "Toy Story & co"


def test_sequence_with_and_without_titles(sequence_file, recbole_seq_dir):
    data = load_raw("sequence", sequence_file)
    _check_common(data, ratings=False)
    assert data.stats().items_with_title == 0
    titled = load_raw("sequence", sequence_file, items=recbole_seq_dir / "Games.item")
    assert titled.stats().items_with_title == len(TITLES)


def test_amazon_2014(amazon_dir):
    data = load_raw("amazon", amazon_dir)
    _check_common(data, user_prefix="U", item_prefix="B")
    item = data.item("B6")
    assert item.title == "Alien" and item.brand == "Acme"
    assert item.categories == ("Movies", "Horror", "Sci-Fi")  # nested 2014 lists flattened
    frame = data.interactions_frame()
    assert frame[S.REVIEW].str.startswith("review of").all()


def test_amazon_2018_category_list(tmp_path):
    import json

    reviews = tmp_path / "Video_Games.json"
    reviews.write_text(json.dumps({"reviewerID": "A", "asin": "X", "overall": 4.0, "unixReviewTime": 5}) + "\n")
    meta = tmp_path / "meta_Video_Games.json"
    meta.write_text(
        json.dumps({"asin": "X", "title": "Zelda", "category": ["Games", "RPG"], "description": ["a", "b"]}) + "\n"
    )
    data = load_raw("amazon", reviews, meta=meta)
    assert data.item("X").categories == ("Games", "RPG")
    assert data.item("X").description == "a b"


def test_tabular_csv_jsonl_datetime(tabular_mapping):
    data = load_raw("tabular", None, mapping=tabular_mapping, name="shop")
    _check_common(data)
    assert data.item("6").categories == ("Horror", "Sci-Fi")
    assert data.histories()["1"].timestamps[0] == 1704067200 + 100  # 2024-01-01T00:01:40Z


def test_tabular_parquet(tmp_path):
    import pandas as pd

    from ragrec.data import DataMapping, TableMapping

    path = tmp_path / "events.parquet"
    pd.DataFrame({"u": ["a", "a", "b"], "i": ["x", "y", "x"], "t": [3, 1, 2]}).to_parquet(path)
    mapping = DataMapping(
        interactions=TableMapping(path=str(path), columns={"user_id": "u", "item_id": "i", "timestamp": "t"})
    )
    data = load_raw("tabular", None, mapping=mapping)
    assert data.histories()["a"].item_ids == ("y", "x")


def test_items_without_metadata_are_added_and_counted(tmp_path, ml_dat_dir):
    movies = ml_dat_dir / "movies.dat"
    movies.write_text("\n".join(movies.read_text(encoding="latin-1").splitlines()[:-1]) + "\n", encoding="latin-1")
    data = load_raw("movielens-dat", ml_dat_dir)
    assert data.info["items_without_metadata"] == 1
    assert data.item("8").title is None


def test_unknown_format_lists_valid():
    with pytest.raises(UnknownNameError) as e:
        load_raw("movielens-2m", "x")
    for name in FORMATS:
        assert name in str(e.value)


@pytest.mark.parametrize(
    "raw,expected",
    [("Toy Story (1995)", ("Toy Story", 1995)), ("Shawshank Redemption, The (1994)", ("Shawshank Redemption, The", 1994)),
     ("Babylon 5", ("Babylon 5", None)), ("Cosmos (1980–1981)", ("Cosmos", 1980)), ("(500) Days of Summer (2009)", ("(500) Days of Summer", 2009))],
)  # fmt: skip
def test_split_title_year(raw, expected):
    assert split_title_year(raw) == expected
