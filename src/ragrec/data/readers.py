"""Low-level readers for the text formats recommendation data comes in.

They stream a file (plain or gzip) line by line, decode strictly, and turn every problem into a
:class:`~ragrec.errors.DataFormatError` that names the file, the line and what was expected:
an empty file, a non-UTF-8 byte, a truncated gzip stream, a row with the wrong number of fields, a
value of the wrong type, a missing column.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd

from ragrec.errors import DataFormatError

__all__ = [
    "Column",
    "iter_lines",
    "read_delimited",
    "read_json_lines",
    "convert_columns",
    "open_binary",
]

Kind = Literal["str", "int", "float"]
_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "text"}


def open_binary(path: str | PathLike[str]) -> IO[bytes]:
    """Open ``path`` for reading bytes, through gzip when it ends in ``.gz``."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_lines(
    path: str | PathLike[str], encoding: str = "utf-8", *, allow_empty: bool = False
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path`` (1-based, newline stripped).

    Decoding is strict: a byte that is not valid in ``encoding`` raises a ``DataFormatError``
    naming the line. A truncated or corrupt gzip stream raises one too. A file with no
    non-blank line raises unless ``allow_empty``.
    """
    seen_content = False
    line_no = 0
    with open_binary(path) as f:
        try:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise DataFormatError(
                        path,
                        f"byte 0x{raw[e.start]:02x} at position {e.start} is not valid {encoding}; "
                        "re-encode the file or name its encoding",
                        line=line_no,
                    ) from None
                text = text.rstrip("\r\n")
                if text.strip():
                    seen_content = True
                yield line_no, text
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise DataFormatError(path, f"truncated or corrupt gzip data after line {line_no} ({e})") from None
    if not seen_content and not allow_empty:
        raise DataFormatError(path, "file is empty")


@dataclass(frozen=True)
class Column:
    """One field to read: its output ``name``, its type, and whether an empty value is allowed.

    ``source`` is the field's name in the file's header (header formats) or its 0-based position
    (header-less formats); it defaults to ``name``.
    """

    name: str
    kind: Kind = "str"
    required: bool = True
    source: str | int | None = None

    @property
    def key(self) -> str | int:
        return self.name if self.source is None else self.source


def _split_rows(
    path: str | PathLike[str],
    sep: str,
    encoding: str,
    quoted: bool,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, fields)``; ``quoted`` uses the csv module (quotes, embedded seps)."""
    lines = iter_lines(path, encoding)
    if not quoted:
        for line_no, text in lines:
            if text.strip():
                yield line_no, (text.split() if sep == " " else text.split(sep))
        return
    # csv.reader pulls more lines itself for a quoted field that spans lines; track the number.
    current = [0]

    def feed() -> Iterator[str]:
        for line_no, text in lines:
            current[0] = line_no
            yield text

    try:
        for row in csv.reader(feed(), delimiter=sep, strict=True):
            if row and any(cell.strip() for cell in row):
                yield current[0], row
    except csv.Error as e:
        raise DataFormatError(path, f"malformed CSV ({e})", line=current[0]) from None


def read_delimited(
    path: str | PathLike[str],
    columns: Sequence[Column],
    *,
    sep: str = ",",
    header: bool = True,
    encoding: str = "utf-8",
    quoted: bool = False,
    header_parser: Callable[[str], str] | None = None,
    fields_hint: str | None = None,
    line_column: str | None = None,
) -> pd.DataFrame:
    """Read a delimited text file into a DataFrame with exactly ``columns``, typed and validated.

    With ``header=True`` each column is found by name in the first row (``header_parser`` may
    normalise header cells, e.g. RecBole's ``name:type``); a missing one raises an error listing
    the columns the file has. Without a header columns are taken by position and every row must
    have the same number of fields as the first (``fields_hint`` describes them in the error).
    ``sep=" "`` splits on any run of whitespace.
    """
    rows = _split_rows(path, sep, encoding, quoted)
    positions: dict[str, int] = {}
    if header:
        try:
            header_line, head = next(rows)
        except StopIteration:  # pragma: no cover - iter_lines already rejects empty files
            raise DataFormatError(path, "file is empty") from None
        names = [header_parser(h) if header_parser else h.strip() for h in head]
        for col in columns:
            if col.key in names:
                positions[col.name] = names.index(str(col.key))
            elif col.required:
                raise DataFormatError(
                    path,
                    f"missing column {col.key!r}; the header has: {', '.join(names)}",
                    line=header_line,
                )
        width = len(names)
    else:
        for col in columns:
            if not isinstance(col.key, int):
                raise TypeError(f"column {col.name!r} needs an integer source without a header")
            positions[col.name] = col.key
        width = None

    line_numbers: list[int] = []
    values: dict[str, list[str]] = {name: [] for name in positions}
    for line_no, fields in rows:
        if width is None:
            width = len(fields)
            needed = max(positions.values(), default=-1) + 1
            if width < needed:
                raise DataFormatError(
                    path,
                    f"expected at least {needed} fields"
                    + (f" ({fields_hint})" if fields_hint else "")
                    + f", got {width}",
                    line=line_no,
                )
        if len(fields) != width:
            raise DataFormatError(
                path,
                f"expected {width} fields" + (f" ({fields_hint})" if fields_hint else "") + f", got {len(fields)}",
                line=line_no,
            )
        line_numbers.append(line_no)
        for name, pos in positions.items():
            values[name].append(fields[pos])
    if not line_numbers:
        raise DataFormatError(path, "file has a header but no rows" if header else "file is empty")

    frame = pd.DataFrame({name: pd.Series(v, dtype=object) for name, v in values.items()})
    out = convert_columns(frame, [c for c in columns if c.name in positions], path, line_numbers)
    if line_column is not None:
        out[line_column] = np.asarray(line_numbers, dtype=np.int64)
    return out


def convert_columns(
    frame: pd.DataFrame,
    columns: Sequence[Column],
    path: str | PathLike[str],
    line_numbers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Type each column of ``frame`` (holding strings) as declared; errors name the line.

    ``line_numbers[i]`` is the file line of row ``i`` (default: ``i + 2``, a CSV with a header).
    Empty strings become nulls; a null in a ``required`` column is an error.
    """
    lines = np.asarray(line_numbers if line_numbers is not None else np.arange(len(frame)) + 2)
    out = {}
    for col in columns:
        raw = frame[col.name]
        text = raw.astype("string").str.strip()
        empty = text.isna() | (text == "")
        if col.required and empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise DataFormatError(
                path,
                f"empty value; expected {_KIND_WORDS[col.kind]}",
                line=int(lines[i]),
                column=str(col.key),
            )
        if col.kind == "str":
            out[col.name] = text.where(~empty, None).astype(object)
            continue
        numbers = pd.to_numeric(text.where(~empty, None), errors="coerce")
        bad = numbers.isna() & ~empty
        if col.kind == "int":
            finite = numbers.notna()
            bad |= finite & (numbers.where(finite, 0) % 1 != 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(
                path,
                f"expected {_KIND_WORDS[col.kind]}, got {text.iloc[i]!r}",
                line=int(lines[i]),
                column=str(col.key),
            )
        if col.kind == "int":
            out[col.name] = numbers.astype("Int64") if not col.required else numbers.astype("int64")
        else:
            out[col.name] = numbers.astype("float64")
    return pd.DataFrame(out, index=frame.index)


def parse_json_line(text: str) -> Any:
    """Parse one line of JSON Lines, accepting the Python-literal lines of Amazon's 2014 files."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        # The 2014 Amazon dumps (e.g. meta_*.json.gz) hold Python dict literals, not JSON.
        # literal_eval evaluates literals only: it never runs code.
        return ast.literal_eval(text)


def read_json_lines(
    path: str | PathLike[str],
    required: Iterable[str] = (),
    encoding: str = "utf-8",
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; each must be an object with the
    ``required`` keys."""
    required = tuple(required)
    for line_no, text in iter_lines(path, encoding):
        if not text.strip():
            continue
        try:
            obj = parse_json_line(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataFormatError(
                path, "expected one JSON object per line (or a Python dict literal)", line=line_no
            ) from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(obj).__name__}", line=line_no)
        for key in required:
            if key not in obj:
                raise DataFormatError(path, f"missing key {key!r}; the object has: {', '.join(obj)}", line=line_no)
        yield line_no, obj
