"""Where ragrec keeps its cache: ``$RAGREC_HOME``, default ``~/.cache/ragrec``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home", "datasets_dir", "downloads_dir"]


def home() -> Path:
    """The cache root, from ``RAGREC_HOME`` (default ``~/.cache/ragrec``); not created here."""
    env = os.environ.get("RAGREC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ragrec"


def datasets_dir() -> Path:
    """Prepared datasets, one folder per name (``<home>/datasets/<name>/``)."""
    return home() / "datasets"


def downloads_dir() -> Path:
    """Raw downloads (archives, wheels) kept so that a second pull needs no network."""
    return home() / "downloads"
