"""Atomic file and directory writes: a reader sees the old version or the new one, never half."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_directory", "sha256_file", "read_json_meta"]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``path`` as a whole.

    If the block raises, the staging folder is removed and ``path`` is left exactly as it was.
    The swap is two renames (old -> backup, staging -> path); a crash between them leaves the
    backup beside ``path`` (named ``.<name>.old-*``), never a half-written ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
    try:
        yield staging
        for child in staging.rglob("*"):
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        backup = None
        if path.exists():
            backup = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.rmdir(backup)
            os.replace(path, backup)
        os.replace(staging, path)
        _fsync_dir(path.parent)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json_meta(path: str | os.PathLike[str], what: str) -> dict:
    """Read the JSON metadata file of a saved artefact; missing or corrupt -> ``CacheError``."""
    from ragrec.errors import CacheError

    path = Path(path)
    try:
        meta = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{path.parent}: not a saved {what} (no {path.name})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{path}: corrupt ({e})") from None
    if not isinstance(meta, dict):
        raise CacheError(f"{path}: corrupt (expected a JSON object)")
    return meta
