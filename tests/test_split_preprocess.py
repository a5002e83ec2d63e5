"""Splits and preprocessing: exact behaviour on fixtures, invariants on random data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ragrec import schema as S
from ragrec.data import (
    InteractionData,
    PreprocessConfig,
    SplitConfig,
    leave_one_out,
    load_raw,
    preprocess,
    split_from_file,
    temporal_ratio,
)
from ragrec.errors import DataFormatError, RagrecError


def _frame(rows):
    return pd.DataFrame(rows, columns=[S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING])


interaction_rows = st.lists(
    st.tuples(
        st.integers(1, 8).map(str),  # user
        st.integers(1, 15).map(str),  # item
        st.integers(0, 20),  # timestamp (many ties)
        st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]),
    ),
    min_size=1,
    max_size=80,
)
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(interaction_rows)
def test_leave_one_out_invariants(rows):
    data = leave_one_out(InteractionData.from_frames("t", _frame(rows)))
    frame = data.interactions_frame()
    assert len(frame) == len(rows)
    for user, group in frame.groupby(S.USER_ID, sort=False):
        labels = group[S.SPLIT].tolist()
        n = len(labels)
        # Chronological within the user; the held-out items are the last ones in that order.
        assert group[S.TIMESTAMP].is_monotonic_increasing
        expected = [S.TRAIN] * n
        if n >= 2:
            expected[-1] = S.TEST
        if n >= 3:
            expected[-2] = S.VALID
        assert labels == expected, (user, labels)
    # Equal timestamps keep the input order: the test item is the last input row among ties.
    for user in frame[S.USER_ID].unique():
        mine = [(i, t) for u, i, t, _ in rows if u == user]
        if len(mine) >= 2:
            last_t = max(t for _, t in mine)
            expected_item = [i for i, t in mine if t == last_t][-1]
            assert data.targets(S.TEST)[user] == expected_item


@fast
@given(interaction_rows, st.sampled_from([(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (1.0, 0.0, 0.0)]))
def test_temporal_ratio_invariants(rows, ratios):
    data = temporal_ratio(InteractionData.from_frames("t", _frame(rows)), ratios)
    frame = data.interactions_frame()
    counts = frame[S.SPLIT].value_counts()
    n = len(rows)
    assert counts.get(S.TRAIN, 0) == round(ratios[0] * n)
    assert counts.get(S.TRAIN, 0) + counts.get(S.VALID, 0) == round((ratios[0] + ratios[1]) * n)
    # No train interaction is later than any valid one, no valid later than any test one.
    ts = {k: frame.loc[frame[S.SPLIT] == k, S.TIMESTAMP] for k in S.SPLIT_NAMES}
    if len(ts[S.TRAIN]) and len(ts[S.VALID]):
        assert ts[S.TRAIN].max() <= ts[S.VALID].min()
    if len(ts[S.VALID]) and len(ts[S.TEST]):
        assert ts[S.VALID].max() <= ts[S.TEST].min()


@fast
@given(interaction_rows, st.integers(2, 4), st.integers(2, 4))
def test_k_core_reaches_a_fixed_point(rows, uk, ik):
    data = InteractionData.from_frames("t", _frame(rows))
    try:
        out = preprocess(data, PreprocessConfig(user_core=uk, item_core=ik, dedup="none"))
    except RagrecError:
        return  # nothing survives: reported, not silent
    frame = out.interactions_frame()
    assert frame.groupby(S.USER_ID).size().min() >= uk
    assert frame.groupby(S.ITEM_ID).size().min() >= ik


def test_loo_on_fixture_short_users(ml100k_dir):
    data = leave_one_out(load_raw("movielens-100k", ml100k_dir))
    assert data.targets(S.TEST) == {"1": "5", "2": "2", "3": "7", "4": "1", "5": "3"}
    assert data.targets(S.VALID) == {"1": "4", "2": "8", "3": "6", "4": "4"}  # user 5 has only 2
    hist = data.histories(splits=(S.TRAIN,))
    assert hist["5"].item_ids == ("2",)
    seen = data.histories(splits=(S.TRAIN, S.VALID))
    assert seen["2"].item_ids == ("6", "1", "7", "8")


def test_preprocess_threshold_and_dedup():
    rows = [("u", "a", 1, 5.0), ("u", "b", 2, 2.0), ("u", "a", 3, 4.0), ("v", "a", 1, None)]
    data = InteractionData.from_frames("t", _frame(rows))
    out = preprocess(data, PreprocessConfig(min_rating=4))
    frame = out.interactions_frame()
    assert list(zip(frame.user_id, frame.item_id, frame.timestamp)) == [("u", "a", 1), ("v", "a", 1)]
    assert out.info["preprocessing"]["removed_below_min_rating"] == 1
    assert out.info["preprocessing"]["removed_duplicates"] == 1
    last = preprocess(data, PreprocessConfig(dedup="last")).interactions_frame()
    assert last.loc[last.user_id == "u", "timestamp"].tolist() == [2, 3]


def test_preprocess_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValidationError, match="min_ratin"):
        PreprocessConfig(min_ratin=4)
    with pytest.raises(ValidationError, match="user_core"):
        PreprocessConfig(user_core=-1)
    assert PreprocessConfig.k_core(5).item_core == 5


def test_split_config_parse():
    assert SplitConfig.parse("loo").method == "leave-one-out"
    assert SplitConfig.parse("ratio:0.7,0.2,0.1").ratios == (0.7, 0.2, 0.1)
    assert SplitConfig.parse("file:x.csv").path == "x.csv"
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig.parse("ratio:0.7,0.7,0.1")
    with pytest.raises(ValueError, match="unknown split"):
        SplitConfig.parse("random")


def test_split_from_file_exact_and_errors(ml100k_dir, tmp_path: Path):
    data = load_raw("movielens-100k", ml100k_dir)
    split = tmp_path / "split.csv"
    split.write_text("user_id,valid_item_id,test_item_id\n1,2,3\n2,8,2\n")
    out = split_from_file(data, split)
    assert out.targets(S.TEST) == {"1": "3", "2": "2"}
    assert out.targets(S.VALID) == {"1": "2", "2": "8"}
    assert out.info["split"]["users_not_listed"] == 3
    assert len(out.histories(splits=(S.TRAIN,))["3"]) == 4  # unlisted users keep everything in train

    bad = {
        "user_id,valid_item_id,test_item_id\n9,1,2\n": r"split.csv line 2: user '9' is not in dataset",
        "user_id,valid_item_id,test_item_id\n1,2,3\n1,4,5\n": r"line 3: user '1' is listed twice",
        "user_id,valid_item_id,test_item_id\n1,2,8\n": r"line 2: user '1' has no interaction with item '8' \(test\)",
        "user_id,valid_item_id,test_item_id\n1,3,3\n": r"line 2: valid and test item are both '3'",
        "user,valid,test\n1,2,3\n": r"line 1: missing column 'user_id'",
    }
    for text, pattern in bad.items():
        split.write_text(text)
        with pytest.raises(DataFormatError, match=pattern):
            split_from_file(data, split)


def test_histories_need_a_split_and_valid_names(ml100k_dir):
    data = load_raw("movielens-100k", ml100k_dir)
    with pytest.raises(RagrecError, match="has no split"):
        data.histories(splits=("train",))
    with pytest.raises(ValueError, match="unknown split names"):
        leave_one_out(data).histories(splits=("training",))


def test_user_order_is_natural():
    rows = [(u, "a", 0, None) for u in ("10", "9", "100", "1")]
    data = InteractionData.from_frames("t", _frame(rows))
    assert data.user_ids() == ["1", "9", "10", "100"]
    mixed = InteractionData.from_frames("t", _frame([("b", "x", 0, None), ("a", "x", 0, None)]))
    assert mixed.user_ids() == ["a", "b"]
    assert np.all(np.diff(data.interactions_frame()[S.USER_ID].astype(int)) > 0)
