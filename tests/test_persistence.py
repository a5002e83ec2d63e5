"""Saving and loading prepared datasets: round trip, checksums, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ragrec.data import InteractionData, leave_one_out, load_raw
from ragrec.errors import CacheError
from ragrec.io import atomic_directory


@pytest.fixture
def data(ml100k_dir):
    return leave_one_out(load_raw("movielens-100k", ml100k_dir))


def test_round_trip(data, tmp_path: Path):
    data.save(tmp_path / "d")
    back = InteractionData.load(tmp_path / "d")
    assert back.interactions_frame().equals(data.interactions_frame())
    assert back.items_frame().astype(str).equals(data.items_frame().astype(str))
    assert back.users.to_pandas().equals(data.users.to_pandas())
    assert back.stats() == data.stats()
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["counts"]["split"] == {"train": 10, "valid": 4, "test": 5}
    assert set(manifest["files"]) == {"interactions.parquet", "items.parquet", "users.parquet"}


def test_tampered_file_is_detected(data, tmp_path: Path):
    data.save(tmp_path / "d")
    path = tmp_path / "d" / "items.parquet"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CacheError, match="checksum mismatch"):
        InteractionData.load(tmp_path / "d")


def test_other_schema_version_is_refused(data, tmp_path: Path):
    data.save(tmp_path / "d")
    manifest = tmp_path / "d" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"schema_version": 1', '"schema_version": 99'))
    with pytest.raises(CacheError, match="schema version 99"):
        InteractionData.load(tmp_path / "d")
    manifest.write_text("{not json")
    with pytest.raises(CacheError, match="corrupt manifest"):
        InteractionData.load(tmp_path / "d")


def test_crash_mid_save_leaves_old_version(data, tmp_path: Path, monkeypatch):
    target = tmp_path / "d"
    data.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    calls = []
    real = pq.write_table

    def failing(table, where, *a, **k):
        calls.append(where)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        data.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".d.")]  # staging folder removed


def test_atomic_directory_replaces_whole(tmp_path: Path):
    target = tmp_path / "x"
    with atomic_directory(target) as d:
        (d / "a").write_text("1")
    with atomic_directory(target) as d:
        (d / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
