"""Loaders for the formats recommendation data is published in, registered by name.

Each reads the files exactly as their publisher wrote them and returns an
:class:`~ragrec.data.dataset.InteractionData`. ``ragrec data prepare --format NAME`` and
:func:`load_raw` pick a loader from :data:`FORMATS`; a new format is one function plus one
``@FORMATS.decorator("name")`` line.

=================  ==========================================================================
format             reads
=================  ==========================================================================
movielens-100k     a folder with ``u.data``, ``u.item`` (and optional ``u.user``, ``u.genre``)
movielens-dat      ML-1M/10M: ``ratings.dat[.gz]`` (or ``ratings*.dat[.gz]``), ``movies.dat``,
                   optional ``users.dat``; ``::``-separated, latin-1
movielens-csv      ml-latest(-small): ``ratings.csv``, ``movies.csv``
recbole            RecBole atomic files ``.inter``/``.item``/``.user`` (``name:type`` headers),
                   including the ``item_id_list`` sequence form
amazon             Amazon reviews 2014/2018 (``reviews_*.json[.gz]`` or ``<Category>.json[.gz]``,
                   one object per line, JSON or Python literals) + optional ``meta_*.json[.gz]``
sequence           ``user item item ...`` per line (P5, S3-Rec, LLMRank) + optional title file
tabular            any CSV/TSV/Parquet/JSON Lines with a column mapping
=================  ==========================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ragrec import schema as S
from ragrec.config import model_from_yaml
from ragrec.data.dataset import InteractionData
from ragrec.data.readers import Column, convert_columns, iter_lines, read_delimited, read_json_lines
from ragrec.errors import DataFormatError, RagrecError
from ragrec.registry import Registry

__all__ = ["FORMATS", "load_raw", "TableMapping", "DataMapping", "split_title_year"]

Loader = Callable[..., InteractionData]
FORMATS: Registry[Loader] = Registry("data format")

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-\u2013]\d{0,4})?\)\s*$")


def split_title_year(title: str | None) -> tuple[str | None, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; a title without a year is kept whole."""
    if title is None:
        return None, None
    m = _TITLE_YEAR.match(title)
    if not m or not m.group("title"):
        return title.strip() or None, None
    return m.group("title"), int(m.group("year"))


def _lenient_year(value: Any) -> int | None:
    text = str(value).strip() if value is not None else ""
    m = re.search(r"\b(1[89]\d\d|20\d\d)\b", text)
    return int(m.group(1)) if m else None


LINE = "_line"  # column read_delimited adds with each row's file line


def unique_items(
    items: pd.DataFrame, path: str | PathLike[str], line_numbers: Sequence[int] | None = None
) -> pd.DataFrame:
    """Drop exact duplicate item rows; a repeated id with a different title is an error.

    Line numbers come from ``line_numbers`` or the ``_line`` column (which is dropped).
    """
    if LINE in items:
        line_numbers = items[LINE].to_numpy()
        items = items.drop(columns=[LINE])
    if line_numbers is None:
        line_numbers = np.arange(len(items)) + 2
    ids = items[S.ITEM_ID].astype(str)
    repeated = ids.duplicated(keep=False)
    if not repeated.any():
        return items
    lines = np.asarray(line_numbers)
    first_seen: dict[str, int] = {}
    titles = items[S.TITLE] if S.TITLE in items else pd.Series(None, index=items.index)
    keep = np.ones(len(items), dtype=bool)
    for pos in np.flatnonzero(repeated.to_numpy()):
        item_id = ids.iloc[pos]
        if item_id not in first_seen:
            first_seen[item_id] = pos
            continue
        first = first_seen[item_id]
        if titles.iloc[pos] != titles.iloc[first]:
            raise DataFormatError(
                path,
                f"item {item_id!r} appears again with a different title "
                f"({titles.iloc[pos]!r}; line {lines[first]} has {titles.iloc[first]!r})",
                line=int(lines[pos]),
            )
        keep[pos] = False
    return items[keep].reset_index(drop=True)


def _find(folder: Path, *patterns: str, required: bool = True, what: str = "") -> Path | None:
    """The first file in ``folder`` matching one of ``patterns`` (in order of preference)."""
    for pattern in patterns:
        hits = sorted(folder.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise RagrecError(
                f"{folder}: several files match {pattern!r} ({', '.join(h.name for h in hits)}); "
                "pass the one to read as the path"
            )
    if required:
        raise RagrecError(f"{folder}: no {what or ' or '.join(patterns)} file found")
    return None


def _folder(path: str | PathLike[str]) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise RagrecError(f"{folder}: not a folder")
    return folder


# ---------------------------------------------------------------------------------- MovieLens
@FORMATS.decorator("movielens-100k")
def load_movielens_100k(
    path: str | PathLike[str], *, name: str = "ml-100k", scenario: str = S.DEFAULT_SCENARIO
) -> InteractionData:
    """GroupLens ML-100K folder: ``u.data`` (tab: user item rating timestamp), ``u.item`` (``|``)."""
    folder = _folder(path)
    data_file = _find(folder, "u.data", what="u.data")
    inter = read_delimited(
        data_file,
        [Column(S.USER_ID, source=0), Column(S.ITEM_ID, source=1), Column(S.RATING, "float", source=2),
         Column(S.TIMESTAMP, "int", source=3)],
        sep="\t", header=False, fields_hint="user item rating timestamp",
    )  # fmt: skip
    genres = list(ML100K_GENRES)
    genre_file = _find(folder, "u.genre", required=False)
    if genre_file is not None:
        names = read_delimited(genre_file, [Column("genre", source=0)], sep="|", header=False, encoding="latin-1")
        genres = names["genre"].tolist()
    item_file = _find(folder, "u.item", what="u.item")
    cols = [Column(S.ITEM_ID, source=0), Column(S.TITLE, source=1, required=False)]
    cols += [Column(f"g{i}", "int", source=5 + i) for i in range(len(genres))]
    raw = read_delimited(item_file, cols, sep="|", header=False, encoding="latin-1", line_column=LINE,
                         fields_hint=f"id|title|release|video release|url|{len(genres)} genre flags")  # fmt: skip
    flags = raw[[f"g{i}" for i in range(len(genres))]].to_numpy()
    title_year = [split_title_year(t) for t in raw[S.TITLE]]
    items = pd.DataFrame(
        {
            S.ITEM_ID: raw[S.ITEM_ID],
            S.TITLE: [t for t, _ in title_year],
            S.YEAR: [y for _, y in title_year],
            S.CATEGORIES: [[g for g, f in zip(genres, row) if f] for row in flags],
            LINE: raw[LINE],
        }
    )
    items = unique_items(items, item_file)
    users = None
    user_file = _find(folder, "u.user", required=False)
    if user_file is not None:
        users = read_delimited(
            user_file,
            [Column(S.USER_ID, source=0), Column("age", source=1), Column("gender", source=2),
             Column("occupation", source=3), Column("zip_code", source=4, required=False)],
            sep="|", header=False, encoding="latin-1", fields_hint="id|age|gender|occupation|zip",
        )  # fmt: skip
    return InteractionData.from_frames(
        name, inter, items, users, scenario=scenario,
        info={"source": {"format": "movielens-100k", "path": str(folder)}},
    )  # fmt: skip


def _movies_items(movies: pd.DataFrame, path: Path) -> pd.DataFrame:
    title_year = [split_title_year(t) for t in movies[S.TITLE]]
    items = pd.DataFrame(
        {
            S.ITEM_ID: movies[S.ITEM_ID],
            S.TITLE: [t for t, _ in title_year],
            S.YEAR: [y for _, y in title_year],
            S.CATEGORIES: [
                [g for g in (genres or "").split("|") if g and g != "(no genres listed)"] for genres in movies["genres"]
            ],
            LINE: movies[LINE],
        }
    )
    return unique_items(items, path)


@FORMATS.decorator("movielens-dat")
def load_movielens_dat(
    path: str | PathLike[str], *, name: str = "ml-1m", scenario: str = S.DEFAULT_SCENARIO
) -> InteractionData:
    """ML-1M / ML-10M ``::``-separated latin-1 files."""
    folder = _folder(path)
    ratings = _find(folder, "ratings.dat", "ratings.dat.gz", "ratings*.dat", "ratings*.dat.gz", what="ratings.dat")
    inter = read_delimited(
        ratings,
        [Column(S.USER_ID, source=0), Column(S.ITEM_ID, source=1), Column(S.RATING, "float", source=2),
         Column(S.TIMESTAMP, "int", source=3)],
        sep="::", header=False, encoding="latin-1", fields_hint="user::item::rating::timestamp",
    )  # fmt: skip
    movies_file = _find(folder, "movies.dat", what="movies.dat")
    movies = read_delimited(
        movies_file,
        [Column(S.ITEM_ID, source=0), Column(S.TITLE, source=1), Column("genres", source=2, required=False)],
        sep="::", header=False, encoding="latin-1", fields_hint="id::title::genres", line_column=LINE,
    )  # fmt: skip
    items = _movies_items(movies, movies_file)
    users = None
    users_file = _find(folder, "users.dat", required=False)
    if users_file is not None:
        users = read_delimited(
            users_file,
            [Column(S.USER_ID, source=0), Column("gender", source=1), Column("age", source=2),
             Column("occupation", source=3), Column("zip_code", source=4, required=False)],
            sep="::", header=False, encoding="latin-1", fields_hint="id::gender::age::occupation::zip",
        )  # fmt: skip
    return InteractionData.from_frames(
        name, inter, items, users, scenario=scenario,
        info={"source": {"format": "movielens-dat", "path": str(folder), "ratings_file": ratings.name}},
    )  # fmt: skip


@FORMATS.decorator("movielens-csv")
def load_movielens_csv(
    path: str | PathLike[str], *, name: str = "ml-latest-small", scenario: str = S.DEFAULT_SCENARIO
) -> InteractionData:
    """ml-latest / ml-latest-small: ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv``."""
    folder = _folder(path)
    ratings = _find(folder, "ratings.csv", "ratings.csv.gz", what="ratings.csv")
    inter = read_delimited(
        ratings,
        [Column(S.USER_ID, source="userId"), Column(S.ITEM_ID, source="movieId"),
         Column(S.RATING, "float", source="rating"), Column(S.TIMESTAMP, "int", source="timestamp")],
        sep=",", quoted=True,
    )  # fmt: skip
    movies_file = _find(folder, "movies.csv", "movies.csv.gz", what="movies.csv")
    movies = read_delimited(
        movies_file,
        [Column(S.ITEM_ID, source="movieId"), Column(S.TITLE, source="title"),
         Column("genres", source="genres", required=False)],
        sep=",", quoted=True, line_column=LINE,
    )  # fmt: skip
    items = _movies_items(movies, movies_file)
    return InteractionData.from_frames(
        name, inter, items, scenario=scenario,
        info={"source": {"format": "movielens-csv", "path": str(folder)}},
    )  # fmt: skip


# ---------------------------------------------------------------------------------- RecBole
def _recbole_header(cell: str) -> str:
    return cell.strip().split(":", 1)[0]


def _recbole_fields(path: Path) -> list[str]:
    for _, text in iter_lines(path):
        return [_recbole_header(c) for c in text.split("\t")]
    return []  # pragma: no cover - iter_lines rejects empty files


def _expand_sequences(
    users: Sequence[str], sequences: Sequence[list[str]], targets: Sequence[str | None] | None = None
) -> pd.DataFrame:
    """Turn per-user item sequences (+ optional last item) into interactions timed by position."""
    user_col: list[str] = []
    item_col: list[str] = []
    time_col: list[int] = []
    for k, (user, seq) in enumerate(zip(users, sequences)):
        full = list(seq) + ([targets[k]] if targets is not None and targets[k] is not None else [])
        user_col.extend([user] * len(full))
        item_col.extend(full)
        time_col.extend(range(len(full)))
    return pd.DataFrame({S.USER_ID: user_col, S.ITEM_ID: item_col, S.TIMESTAMP: time_col})


@FORMATS.decorator("recbole")
def load_recbole(
    path: str | PathLike[str], *, name: str | None = None, scenario: str = S.DEFAULT_SCENARIO
) -> InteractionData:
    """RecBole atomic files. ``path`` is a ``.inter`` file or a folder holding exactly one.

    Known fields: ``user_id``, ``item_id``, ``rating``, ``timestamp``, ``review``; the sequence
    form ``user_id``, ``item_id_list`` (space-separated history) [, ``item_id`` = last item]
    becomes interactions timed by position. The ``.item`` file beside it (same base name, or the
    only one) gives ``title``/``movie_title``, ``release_year``/``year``, ``class``/``genre``/
    ``categories`` and ``brand``; a ``.user`` file, user attributes.
    """
    path = Path(path)
    inter_file = path if path.is_file() else _find(_folder(path), "*.inter", what=".inter")
    assert inter_file is not None
    folder = inter_file.parent
    base = inter_file.name.split(".")[0]
    name = name or base
    fields = _recbole_fields(inter_file)
    if "item_id_list" in fields:
        cols = [Column(S.USER_ID), Column("item_id_list", required=False)]
        if S.ITEM_ID in fields:
            cols.append(Column(S.ITEM_ID))
        raw = read_delimited(inter_file, cols, sep="\t", header_parser=_recbole_header)
        sequences = [(s or "").split() for s in raw["item_id_list"]]
        targets = raw[S.ITEM_ID].tolist() if S.ITEM_ID in raw else None
        inter = _expand_sequences(raw[S.USER_ID].tolist(), sequences, targets)
    else:
        cols = [Column(S.USER_ID), Column(S.ITEM_ID), Column(S.RATING, "float", required=False),
                Column(S.TIMESTAMP, "int", required=False), Column(S.REVIEW, required=False)]  # fmt: skip
        inter = read_delimited(inter_file, cols, sep="\t", header_parser=_recbole_header)
        if S.TIMESTAMP not in inter:
            # No clock: file order within each user is the order.
            inter[S.TIMESTAMP] = inter.groupby(S.USER_ID, sort=False).cumcount()
        elif inter[S.TIMESTAMP].isna().any():
            row = int(np.flatnonzero(inter[S.TIMESTAMP].isna().to_numpy())[0])
            raise DataFormatError(inter_file, "empty value; expected an integer", line=row + 2, column=S.TIMESTAMP)
    items = None
    item_file = folder / f"{base}.item"
    if not item_file.is_file():
        item_file = _find(folder, "*.item", required=False)
    if item_file is not None:
        items = _recbole_items(item_file)
    users = None
    user_file = folder / f"{base}.user"
    if user_file.is_file():
        users = read_delimited(user_file, [Column(f) for f in _recbole_fields(user_file)], sep="\t",
                               header_parser=_recbole_header)  # fmt: skip
        if S.USER_ID not in users:
            raise DataFormatError(user_file, f"missing column {S.USER_ID!r}", line=1)
    return InteractionData.from_frames(
        name, inter, items, users, scenario=scenario,
        info={"source": {"format": "recbole", "path": str(inter_file)}},
    )  # fmt: skip


def _first_present(fields: Sequence[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in fields), None)


def _recbole_items(item_file: Path) -> pd.DataFrame:
    fields = _recbole_fields(item_file)
    title = _first_present(fields, "title", "movie_title", "item_name", "name")
    year = _first_present(fields, "release_year", "year")
    cats = _first_present(fields, "categories", "class", "genre", "genres", "category")
    brand = _first_present(fields, "brand")
    cols = [Column(S.ITEM_ID)] + [Column(f, required=False) for f in (title, year, cats, brand) if f]
    raw = read_delimited(item_file, cols, sep="\t", header_parser=_recbole_header, line_column=LINE)
    items = pd.DataFrame({S.ITEM_ID: raw[S.ITEM_ID], LINE: raw[LINE]})
    items[S.TITLE] = raw[title] if title else None
    items[S.YEAR] = [_lenient_year(v) for v in raw[year]] if year else None
    items[S.CATEGORIES] = [(v or "").split() for v in raw[cats]] if cats else None
    items[S.BRAND] = raw[brand] if brand else None
    return unique_items(items, item_file)


# ---------------------------------------------------------------------------------- Amazon
def _flatten_categories(value: Any) -> list[str]:
    """2014 meta: ``[["Toys", "Games"], [...]]``; 2018: ``["Toys", "Games"]``."""
    out: list[str] = []
    stack = [value] if value is not None else []
    while stack:
        v = stack.pop(0)
        if isinstance(v, (list, tuple)):
            stack[:0] = list(v)
        elif v is not None and str(v).strip() and str(v) not in out:
            out.append(str(v).strip())
    return out


def _text(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v)
    text = str(value).strip() if value is not None else ""
    return text or None


@FORMATS.decorator("amazon")
def load_amazon(
    path: str | PathLike[str],
    *,
    meta: str | PathLike[str] | None = None,
    name: str | None = None,
    scenario: str = S.DEFAULT_SCENARIO,
) -> InteractionData:
    """Amazon review data (2014 and 2018 releases, 5-core or raw).

    ``path`` is the reviews file, or a folder with one ``reviews_*.json[.gz]`` (2014) or
    ``*.json[.gz]`` that is not a meta file (2018). Each line: ``reviewerID``, ``asin``,
    ``overall``, ``unixReviewTime`` and optional ``reviewText``. ``meta`` (or a ``meta_*`` file
    in the folder) gives ``title``, ``categories``/``category``, ``brand``, ``description``.
    """
    path = Path(path)
    if path.is_dir():
        reviews = _find(path, "reviews_*.json.gz", "reviews_*.json", required=False)
        if reviews is None:
            candidates = [p for p in sorted(path.glob("*.json*")) if not p.name.startswith("meta_")]
            if len(candidates) != 1:
                raise RagrecError(f"{path}: expected one reviews file, found {[p.name for p in candidates]}")
            reviews = candidates[0]
        if meta is None:
            meta = _find(path, "meta_*.json.gz", "meta_*.json", required=False)
    else:
        reviews = path
    users, items_, times, ratings, texts, lines = [], [], [], [], [], []
    for line_no, obj in read_json_lines(reviews, required=("reviewerID", "asin", "unixReviewTime")):
        lines.append(line_no)
        users.append(obj["reviewerID"])
        items_.append(obj["asin"])
        times.append(obj["unixReviewTime"])
        ratings.append(obj.get("overall"))
        texts.append(obj.get("reviewText"))
    raw = pd.DataFrame({S.USER_ID: users, S.ITEM_ID: items_, S.TIMESTAMP: times, S.RATING: ratings}, dtype=object)
    inter = convert_columns(
        raw,
        [Column(S.USER_ID, source="reviewerID"), Column(S.ITEM_ID, source="asin"),
         Column(S.TIMESTAMP, "int", source="unixReviewTime"), Column(S.RATING, "float", required=False, source="overall")],
        reviews, line_numbers=lines,
    )  # fmt: skip
    inter[S.REVIEW] = [_text(t) for t in texts]
    items = None
    if meta is not None:
        rows, lines = [], []
        for line_no, obj in read_json_lines(meta, required=("asin",)):
            rows.append(
                {
                    S.ITEM_ID: str(obj["asin"]),
                    S.TITLE: _text(obj.get("title")),
                    S.CATEGORIES: _flatten_categories(obj.get("categories", obj.get("category"))),
                    S.BRAND: _text(obj.get("brand")),
                    S.DESCRIPTION: _text(obj.get("description")),
                }
            )
            lines.append(line_no)
        items = unique_items(pd.DataFrame(rows), meta, lines)
    return InteractionData.from_frames(
        name or reviews.name.split(".")[0], inter, items, scenario=scenario,
        info={"source": {"format": "amazon", "path": str(reviews), "meta": str(meta) if meta else None}},
    )  # fmt: skip


# ---------------------------------------------------------------------------------- sequences
@FORMATS.decorator("sequence")
def load_sequence(
    path: str | PathLike[str],
    *,
    items: str | PathLike[str] | None = None,
    name: str | None = None,
    scenario: str = S.DEFAULT_SCENARIO,
) -> InteractionData:
    """``user item item ...`` per line, in time order (P5/S3-Rec ``sequential_data.txt``).

    ``items`` optionally names a title file: RecBole ``.item`` (``name:type`` header) or plain
    ``item_id<TAB>title`` lines. Timestamps are positions in the sequence.
    """
    path = Path(path)
    users: list[str] = []
    sequences: list[list[str]] = []
    for line_no, text in iter_lines(path):
        parts = text.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataFormatError(path, "expected 'user item [item ...]', got a user with no items", line=line_no)
        users.append(parts[0])
        sequences.append(parts[1:])
    inter = _expand_sequences(users, sequences)
    item_frame = None
    if items is not None:
        items = Path(items)
        first = next(iter_lines(items))[1]
        if ":" in first.split("\t")[0]:
            item_frame = _recbole_items(items)
        else:
            raw = read_delimited(items, [Column(S.ITEM_ID, source=0), Column(S.TITLE, source=1)],
                                 sep="\t", header=False, fields_hint="item_id<TAB>title", line_column=LINE)  # fmt: skip
            item_frame = unique_items(raw, items)
    return InteractionData.from_frames(
        name or path.stem, inter, item_frame, scenario=scenario,
        info={"source": {"format": "sequence", "path": str(path), "items": str(items) if items else None}},
    )  # fmt: skip


# ---------------------------------------------------------------------------------- tabular
_INTERACTION_FIELDS = (S.USER_ID, S.ITEM_ID, S.TIMESTAMP, S.RATING, S.REVIEW)
_ITEM_FIELDS = (S.ITEM_ID, S.TITLE, S.YEAR, S.CATEGORIES, S.BRAND, S.DESCRIPTION)


class TableMapping(BaseModel):
    """One table of a generic source: where it is and which of its columns feed which field."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="CSV/TSV/Parquet/JSON Lines file (optionally .gz).")
    columns: dict[str, str] = Field(description="ragrec field -> column name in the file.")
    sep: str | None = Field(default=None, description="Field separator; default by extension (',' or tab).")
    encoding: str = Field(default="utf-8", description="Text encoding of CSV/TSV/JSON Lines files.")
    list_separator: str = Field(default="|", description="Separator of multi-valued cells (categories).")
    timestamp_format: Literal["unix", "datetime"] = Field(
        default="unix", description="unix: integer seconds; datetime: parsed date/time text."
    )


class DataMapping(BaseModel):
    """A generic source: an interactions table and optional items/users tables (YAML-loadable)."""

    model_config = ConfigDict(extra="forbid")

    interactions: TableMapping
    items: TableMapping | None = None
    users: TableMapping | None = None

    @classmethod
    def from_yaml(cls, path: str | PathLike[str]) -> DataMapping:
        path = Path(path)
        mapping = model_from_yaml(cls, path)
        base = path.parent
        for table in (mapping.interactions, mapping.items, mapping.users):
            if table is not None and not Path(table.path).is_absolute():
                table.path = str(base / table.path)
        return mapping


def _read_table(
    table: TableMapping, allowed: Iterable[str], required: Sequence[str], kinds: dict[str, str]
) -> pd.DataFrame:
    path = Path(table.path)
    unknown = set(table.columns) - set(allowed)
    if unknown:
        raise RagrecError(f"{path}: unknown field(s) {sorted(unknown)} in the mapping; valid: {', '.join(allowed)}")
    for field in required:
        if field not in table.columns:
            raise RagrecError(f"{path}: the mapping must name a column for {field!r}")
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    columns = [
        Column(field, "str" if field == S.TIMESTAMP and table.timestamp_format == "datetime" else kinds.get(field, "str"),
               required=field in required, source=src)
        for field, src in table.columns.items()
    ]  # fmt: skip
    if ext in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataFormatError(path, f"unreadable Parquet ({e})") from None
        missing = [c.source for c in columns if c.source not in frame.columns and c.required]
        if missing:
            raise DataFormatError(
                path, f"missing column {missing[0]!r}; the file has: {', '.join(map(str, frame.columns))}"
            )
        present = [c for c in columns if c.source in frame.columns]
        raw = pd.DataFrame({c.name: frame[c.source].astype("string") for c in present})
        out = convert_columns(raw, present, path, line_numbers=np.arange(len(raw)) + 1)
    elif ext in (".jsonl", ".json", ".ndjson"):
        rows, lines = [], []
        for line_no, obj in read_json_lines(path, encoding=table.encoding):
            rows.append(obj)
            lines.append(line_no)
        frame = pd.DataFrame(rows)
        for c in columns:
            if c.source not in frame.columns and c.required:
                raise DataFormatError(path, f"missing key {c.source!r}; the objects have: {', '.join(frame.columns)}")
        present = [c for c in columns if c.source in frame.columns]
        raw = pd.DataFrame({c.name: frame[c.source].map(lambda v: v if isinstance(v, list) else v) for c in present})
        lists = {c.name: raw[c.name] for c in present if c.name == S.CATEGORIES}
        raw = raw.drop(columns=list(lists)).astype("string")
        out = convert_columns(raw, [c for c in present if c.name not in lists], path, line_numbers=lines)
        for name, values in lists.items():
            out[name] = values.map(lambda v: [str(x) for x in v] if isinstance(v, list) else
                                   ([x for x in str(v).split(table.list_separator) if x] if v is not None and v == v else []))  # fmt: skip
    else:
        sep = table.sep or ("\t" if ext in (".tsv", ".tab") else ",")
        out = read_delimited(path, columns, sep=sep, quoted=True, encoding=table.encoding, line_column=LINE)
    if S.CATEGORIES in out and out[S.CATEGORIES].map(lambda v: isinstance(v, str) or v is None).all():
        out[S.CATEGORIES] = out[S.CATEGORIES].map(
            lambda v: [x.strip() for x in v.split(table.list_separator) if x.strip()] if v else []
        )
    if S.TIMESTAMP in out and table.timestamp_format == "datetime":
        parsed = pd.to_datetime(out[S.TIMESTAMP], errors="coerce", utc=True, format="mixed")
        bad = parsed.isna() & out[S.TIMESTAMP].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(
                path,
                f"expected a date/time, got {out[S.TIMESTAMP].iloc[i]!r}",
                line=int(out[LINE].iloc[i]) if LINE in out else i + 1,
                column=table.columns[S.TIMESTAMP],
            )
        out[S.TIMESTAMP] = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return out


@FORMATS.decorator("tabular")
def load_tabular(
    path: str | PathLike[str] | None = None,
    *,
    mapping: DataMapping | str | PathLike[str],
    name: str | None = None,
    scenario: str = S.DEFAULT_SCENARIO,
) -> InteractionData:
    """Generic CSV/TSV/Parquet/JSON Lines through a :class:`DataMapping` (or a YAML file of one).

    Without a ``timestamp`` column interactions are ordered as they appear in the file. ``path``,
    when given, replaces the interactions file named in the mapping.
    """
    if not isinstance(mapping, DataMapping):
        mapping = DataMapping.from_yaml(mapping)
    if path is not None:
        mapping = mapping.model_copy(deep=True)
        mapping.interactions.path = str(path)
    kinds = {S.TIMESTAMP: "int", S.RATING: "float", S.YEAR: "int"}
    inter = _read_table(mapping.interactions, _INTERACTION_FIELDS, (S.USER_ID, S.ITEM_ID), kinds).drop(
        columns=[LINE], errors="ignore"
    )
    if S.TIMESTAMP not in inter:
        inter[S.TIMESTAMP] = inter.groupby(S.USER_ID, sort=False).cumcount()
    items = None
    if mapping.items is not None:
        items = _read_table(mapping.items, _ITEM_FIELDS, (S.ITEM_ID,), kinds)
        items = unique_items(items, mapping.items.path)
    users = None
    if mapping.users is not None:
        users = _read_table(mapping.users, [S.USER_ID, *mapping.users.columns], (S.USER_ID,), {}).drop(
            columns=[LINE], errors="ignore"
        )
    src = Path(mapping.interactions.path)
    return InteractionData.from_frames(
        name or src.name.split(".")[0], inter, items, users, scenario=scenario,
        info={"source": {"format": "tabular", "mapping": mapping.model_dump()}},
    )  # fmt: skip


def load_raw(format: str, path: str | PathLike[str] | None, **options: Any) -> InteractionData:
    """Load raw files with the loader registered as ``format`` (see :data:`FORMATS`)."""
    loader = FORMATS.get(format)
    return loader(path, **{k: v for k, v in options.items() if v is not None})
