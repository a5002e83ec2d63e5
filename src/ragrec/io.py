"""Atomic file and directory writes: a reader sees the old version or the new one, never half."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_directory",
    "clean_stale",
    "sha256_file",
    "read_json_meta",
]


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make every written file private
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _writer_pid(name: str, prefix: str) -> int | None:
    """The writer's pid in a staging/backup name ``<prefix><pid>-<random>`` (None: an old name)."""
    head = name[len(prefix) :].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def clean_stale(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what an interrupted :func:`atomic_directory` left beside ``path``: staging folders
    (``.<name>.new-<pid>-*``) and backups (``.<name>.old-<pid>-*``) whose writer is no longer
    running. A backup with no ``path`` beside it (a crash between the two renames) is renamed
    back to ``path`` rather than removed. Names without a pid (older ragrec versions) are stale
    once an hour old. Returns what was removed or restored."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    done = []
    for kind in ("new", "old"):
        prefix = f".{path.name}.{kind}-"
        for leftover in sorted(path.parent.glob(prefix + "*")):
            pid = _writer_pid(leftover.name, prefix)
            if pid is not None and _pid_alive(pid):
                continue
            if pid is None:
                with contextlib.suppress(OSError):
                    if time.time() - leftover.stat().st_mtime < 3600:
                        continue
            if kind == "old" and not path.exists():
                os.replace(leftover, path)
            else:
                shutil.rmtree(leftover, ignore_errors=True)
            done.append(leftover)
    return done


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``path`` as a whole.

    If the block raises, the staging folder is removed and ``path`` is left exactly as it was.
    The swap is two renames (old -> backup, staging -> path); a crash between them leaves the
    backup beside ``path`` (named ``.<name>.old-<pid>-*``), never a half-written ``path``. A
    process killed outright (SIGKILL) leaves its staging folder: the next write of the same
    ``path`` removes it (:func:`clean_stale`), and restores a lone backup.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-{os.getpid()}-"))
    try:
        yield staging
        for child in staging.rglob("*"):
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        backup = None
        if path.exists():
            backup = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-{os.getpid()}-"))
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
