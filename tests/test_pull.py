"""``pull``: URL first, then the offline source (reported), counts verified, cache reused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from conftest import N_INTERACTIONS, run_cli
from ragrec import paths, wheels
from ragrec.data import sources
from ragrec.data.sources import SOURCES, Counts, Source, pull
from ragrec.errors import DownloadError


def _offline_from(folder: Path):
    def fetch(work: Path):
        return folder, "movielens-100k", f"local copy {folder.name}"

    return fetch


@pytest.fixture
def tiny_source(ml100k_dir, monkeypatch):
    """A source whose URL is unreachable and whose offline copy is the tiny fixture."""
    spec = Source(
        name="tiny", url="https://example.invalid/tiny.zip", format="movielens-100k", archive_dir="ml-100k",
        expected=Counts(users=5, items=8, interactions=N_INTERACTIONS), offline=_offline_from(ml100k_dir),
    )  # fmt: skip
    monkeypatch.setitem(SOURCES._entries, "tiny", spec)

    def no_network(url, target):
        raise DownloadError(f"cannot download {url}: offline (test)")

    monkeypatch.setattr(sources, "_download", no_network)
    return spec


def test_fallback_is_reported_and_cached(tiny_source):
    report = pull("tiny")
    assert report.origin == "local copy ml-100k"
    assert "offline (test)" in report.fallback_reason
    assert report.data.info["fallback_reason"] == report.fallback_reason
    assert report.data.stats().split == {"train": 10, "valid": 4, "test": 5}
    again = pull("tiny")
    assert again.from_cache and again.data.stats() == report.data.stats()


def test_url_only_fails_clearly(tiny_source):
    with pytest.raises(DownloadError, match="offline \\(test\\)"):
        pull("tiny", source="url")


def test_zip_archive_from_url(tiny_source, ml100k_dir, monkeypatch):
    def fake_download(url, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(target, "w") as zf:
            for f in ml100k_dir.iterdir():
                zf.write(f, f"ml-100k/{f.name}")

    monkeypatch.setattr(sources, "_download", fake_download)
    report = pull("tiny", force=True)
    assert report.origin == "https://example.invalid/tiny.zip" and report.fallback_reason is None


def test_wrong_counts_are_refused(tiny_source, monkeypatch):
    monkeypatch.setitem(
        SOURCES._entries, "tiny", Source(**{**tiny_source.__dict__, "expected": Counts(943, 1682, 100_000)})
    )
    with pytest.raises(DownloadError, match="expected Counts\\(users=943"):
        pull("tiny")
    assert not (paths.datasets_dir() / "tiny").exists()


def test_recbole_wheel_reader(tmp_path, recbole_dir, monkeypatch):
    """The ML-100K offline path reads the three atomic files out of a cached wheel (no pip call)."""
    wheel = paths.downloads_dir() / "recbole-1.2.1-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        for suffix in ("inter", "item", "user"):
            zf.write(recbole_dir / f"tiny.{suffix}", f"recbole/dataset_example/ml-100k/ml-100k.{suffix}")
    monkeypatch.setattr(wheels.subprocess, "run", lambda *a, **k: pytest.fail("pip must not run: wheel is cached"))
    work = tmp_path / "work"
    work.mkdir()
    folder, fmt, origin = sources._ml100k_from_recbole_wheel(work)
    assert fmt == "recbole" and "recbole==1.2.1" in origin
    # The real source checks the counts, so the tiny wheel is refused: nothing is cached.
    with pytest.raises(DownloadError, match="not the published dataset"):
        pull("ml-100k", source="offline")


def test_cli_pull_prints_fallback(tiny_source):
    # The CLI runs in another process, so the monkeypatched source is not there: check the
    # library report instead, and the CLI's handling of a cached dataset.
    report = pull("tiny")
    code, out, err = run_cli("data", "stats", str(report.path), "--json")
    assert code == 0, err
    assert '"users": 5' in out and f'"interactions": {N_INTERACTIONS}' in out
