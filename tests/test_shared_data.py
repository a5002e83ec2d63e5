"""The real datasets in ../shared/data load with the counts their SOURCE.md gives.

Skipped where ../shared is absent. The RecBole split check needs ML-100K prepared in the real
cache (``make demo`` / ``ragrec data pull ml-100k``, which CI runs first).
"""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import REAL_HOME, SHARED
from ragrec import schema as S
from ragrec.data import InteractionData, load_raw, split_from_file

pytestmark = pytest.mark.shared
DATA = SHARED / "data"


def _need(path):
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def _counts(data):
    s = data.stats()
    return s.users, s.items, s.items_with_interactions, s.interactions


def test_movielens_1m_recovered():
    data = load_raw("movielens-dat", _need(DATA / "movielens-1m"), name="ml-1m")
    # SOURCE.md: 663,062 rows; 6,038 of 6,040 users and 3,613 movies appear; movies.dat has 3,883.
    assert _counts(data) == (6038, 3883, 3613, 663_062)
    ratings = data.interactions_frame()[S.RATING].value_counts()
    assert ratings[4.0] == 348_971 and ratings[5.0] == 226_310
    assert data.users is not None and len(data.users) == 6040


def test_amazon_video_games_llmrank():
    data = load_raw("recbole", _need(DATA / "amazon-videogames-llmrank" / "Games.test.inter"), name="games")
    assert _counts(data) == (50_546, 16_859, 16_859, 440_264)
    stats = data.stats()
    assert (stats.interactions_per_user_min, stats.interactions_per_user_max) == (5, 50)
    assert stats.items_with_title == 16_859


def test_amazon_beauty_sequences():
    data = load_raw("sequence", _need(DATA / "amazon-p5-beauty-sports-toys" / "beauty" / "sequential_data.txt"))
    assert _counts(data) == (22_363, 12_101, 12_101, 198_502)


def test_amazon_musical_instruments_reviews():
    data = load_raw("amazon", _need(DATA / "amazon-musical-instruments-reviews"))
    assert _counts(data) == (1429, 900, 900, 10_261)
    assert data.stats().has_reviews


def test_movielens_latest_small():
    data = load_raw("movielens-csv", _need(DATA / "movielens-latest-small"))
    assert _counts(data) == (671, 9125, 9066, 100_004)


def test_recbole_split_reproduced_exactly():
    split_csv = _need(SHARED / "peers" / "recbole" / "ml100k_loo_split.csv")
    prepared = REAL_HOME / "datasets" / "ml-100k"
    if not (prepared / "manifest.json").is_file():
        pytest.skip("ML-100K not prepared in the real cache (run `make demo`)")
    data = InteractionData.load(prepared)
    assert _counts(data)[::3] == (943, 100_000) and _counts(data)[1] == 1682
    split = split_from_file(data, split_csv)
    ref = pd.read_csv(split_csv, dtype=str)
    valid, test = split.targets(S.VALID), split.targets(S.TEST)
    pairs = {(u, valid[u], test[u]) for u in test}
    assert pairs == set(ref.itertuples(index=False, name=None))
    assert len(pairs) == 943
    assert split.stats().split == {"train": 98_114, "valid": 943, "test": 943}
