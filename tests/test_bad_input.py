"""Bad input: a one-line error naming file/line/column, exit status 2, no traceback, no debris."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from conftest import N_INTERACTIONS, run_cli
from ragrec import paths
from ragrec.data import load_raw
from ragrec.errors import DataFormatError, RagrecError


def _assert_clean_failure(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    # Nothing was cached, not even a staging folder.
    root = paths.datasets_dir()
    assert not root.exists() or not any(root.iterdir())


def test_missing_column(ml_csv_dir: Path):
    ratings = ml_csv_dir / "ratings.csv"
    ratings.write_text(ratings.read_text().replace("userId", "user"))
    code, _, err = run_cli("data", "prepare", "movielens-csv", str(ml_csv_dir))
    _assert_clean_failure(code, err, "ratings.csv line 1", "missing column 'userId'", "user, movieId")


def test_wrong_type_names_line_and_column(ml_csv_dir: Path):
    ratings = ml_csv_dir / "ratings.csv"
    lines = ratings.read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",yesterday"
    ratings.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli("data", "prepare", "movielens-csv", str(ml_csv_dir))
    _assert_clean_failure(code, err, "ratings.csv line 4 column 'timestamp'", "expected an integer", "'yesterday'")


def test_wrong_field_count(ml_dat_dir: Path):
    movies = ml_dat_dir / "movies.dat"
    movies.write_text(movies.read_text(encoding="latin-1") + "99::Broken\n", encoding="latin-1")
    with pytest.raises(DataFormatError, match=r"movies.dat line 9: expected 3 fields \(id::title::genres\), got 2"):
        load_raw("movielens-dat", ml_dat_dir)


def test_empty_file(ml100k_dir: Path):
    (ml100k_dir / "u.data").write_text("")
    code, _, err = run_cli("data", "prepare", "movielens-100k", str(ml100k_dir))
    _assert_clean_failure(code, err, "u.data", "file is empty")


def test_header_only_file(ml_csv_dir: Path):
    (ml_csv_dir / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataFormatError, match="header but no rows"):
        load_raw("movielens-csv", ml_csv_dir)


def test_non_utf8_names_line(ml_csv_dir: Path):
    movies = ml_csv_dir / "movies.csv"
    movies.write_bytes(movies.read_bytes().replace("Amélie".encode(), "Amélie".encode("latin-1")))
    code, _, err = run_cli("data", "prepare", "movielens-csv", str(ml_csv_dir))
    _assert_clean_failure(code, err, "movies.csv line 5", "not valid utf-8")


def test_truncated_gzip(ml_dat_dir: Path):
    path = ml_dat_dir / "ratings.dat.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli("data", "prepare", "movielens-dat", str(ml_dat_dir))
    _assert_clean_failure(code, err, "ratings.dat.gz", "truncated or corrupt gzip")


def test_corrupt_gzip_header(tmp_path: Path):
    path = tmp_path / "reviews_X.json.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataFormatError, match="truncated or corrupt gzip"):
        load_raw("amazon", path)


def test_conflicting_duplicate_item(ml_dat_dir: Path):
    movies = ml_dat_dir / "movies.dat"
    movies.write_text(movies.read_text(encoding="latin-1") + "5::Heat 2 (1999)::Action\n", encoding="latin-1")
    code, _, err = run_cli("data", "prepare", "movielens-dat", str(ml_dat_dir))
    _assert_clean_failure(code, err, "movies.dat line 9", "item '5' appears again with a different title", "line 5")


def test_identical_duplicate_item_is_dropped(ml_dat_dir: Path):
    movies = ml_dat_dir / "movies.dat"
    first = movies.read_text(encoding="latin-1").splitlines()[0]
    movies.write_text(movies.read_text(encoding="latin-1") + first + "\n", encoding="latin-1")
    assert len(load_raw("movielens-dat", ml_dat_dir).items) == 8


def test_bad_json_line(amazon_dir: Path):
    path = amazon_dir / "reviews_Tiny_5.json.gz"
    with gzip.open(path, "at") as f:
        f.write('{"reviewerID": "x", "asin": \n')
    with pytest.raises(DataFormatError, match=rf"line {N_INTERACTIONS + 1}: expected one JSON object per line"):
        load_raw("amazon", path)


def test_json_missing_key(tmp_path: Path):
    path = tmp_path / "reviews_X.json"
    path.write_text('{"reviewerID": "A", "asin": "B"}\n')
    with pytest.raises(DataFormatError, match=r"line 1: missing key 'unixReviewTime'"):
        load_raw("amazon", path)


def test_unknown_dataset_name():
    code, _, err = run_cli("data", "stats", "ml-200k")
    _assert_clean_failure(code, err, "no prepared dataset 'ml-200k'", "ml-100k")
    code, _, err = run_cli("data", "pull", "ml-200k")
    _assert_clean_failure(code, err, "unknown dataset 'ml-200k'", "valid: ml-100k, ml-1m, ml-latest-small")


def test_unknown_format_from_cli(tmp_path: Path):
    code, _, err = run_cli("data", "prepare", "csv", str(tmp_path))
    _assert_clean_failure(code, err, "unknown data format 'csv'", "movielens-100k")


def test_bad_options_from_cli(ml100k_dir: Path):
    code, _, err = run_cli("data", "prepare", "movielens-100k", str(ml100k_dir), "--dedup", "middle")
    _assert_clean_failure(code, err, "--dedup", "'first', 'last' or 'none'")
    code, _, err = run_cli("data", "prepare", "movielens-100k", str(ml100k_dir), "--split", "ratio:0.5,0.1")
    _assert_clean_failure(code, err, "--split", "expected 3 ratios")


def test_mapping_with_unknown_key(tabular_mapping: Path):
    tabular_mapping.write_text(tabular_mapping.read_text().replace("timestamp_format", "timestamp_fmt"))
    with pytest.raises(
        DataFormatError,
        match=r"mapping.yaml: interactions.timestamp_fmt: Extra inputs are not permitted \(valid fields: path, .*timestamp_format",
    ):
        load_raw("tabular", None, mapping=tabular_mapping)


def test_mapping_with_unknown_field(tabular_mapping: Path):
    tabular_mapping.write_text(tabular_mapping.read_text().replace("rating: stars", "stars: stars"))
    with pytest.raises(RagrecError, match=r"unknown field\(s\) \['stars'\]"):
        load_raw("tabular", None, mapping=tabular_mapping)


def test_bad_datetime(tabular_mapping: Path):
    events = tabular_mapping.parent / "events.csv"
    lines = events.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",not-a-date"
    events.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"events.csv line 3 column 'when': expected a date/time"):
        load_raw("tabular", None, mapping=tabular_mapping)


def test_failed_prepare_keeps_previous_version(ml_dat_dir: Path):
    code, _, err = run_cli("data", "prepare", "movielens-dat", str(ml_dat_dir), "--name", "tiny")
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in (paths.datasets_dir() / "tiny").iterdir()}
    (ml_dat_dir / "movies.dat").write_text("1::Only two fields\n")
    code, _, err = run_cli("data", "prepare", "movielens-dat", str(ml_dat_dir), "--name", "tiny")
    assert code == 2 and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in (paths.datasets_dir() / "tiny").iterdir()}
    assert after == before
    assert [p.name for p in paths.datasets_dir().iterdir()] == ["tiny"]  # no staging debris
