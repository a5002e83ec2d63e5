"""Errors that ragrec raises on purpose.

Every error that reaches a user is a :class:`RagrecError`: the CLI prints its one-line message and
exits non-zero, without a traceback. Anything else escaping is a bug.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["RagrecError", "DataFormatError", "UnknownNameError", "CacheError", "DownloadError"]


class RagrecError(Exception):
    """Base class of the errors ragrec raises deliberately (bad input, missing data, ...)."""


class DataFormatError(RagrecError, ValueError):
    """A data file does not match the format it is read as.

    The message names the file, and where known the line and the column, and what was expected, e.g.
    ``ratings.dat line 12: expected 4 '::'-separated fields (user::item::rating::timestamp), got 3``.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.column = column
        where = self.path
        if line is not None:
            where += f" line {line}"
        if column is not None:
            where += f" column {column!r}"
        super().__init__(f"{where}: {message}")


class UnknownNameError(RagrecError, KeyError):
    """A name (dataset, format, scenario, task, ...) that no registry knows; lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        listed = ", ".join(self.valid) if self.valid else "(none registered)"
        super().__init__(f"unknown {kind} {name!r}; valid: {listed}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class CacheError(RagrecError):
    """A saved artefact (prepared dataset, index, adapter) is missing, corrupt or of another version."""


class DownloadError(RagrecError):
    """A remote resource could not be fetched and no offline source could stand in for it."""
