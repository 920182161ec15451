"""The ``movielens`` source: GroupLens MovieLens data sets, from a local copy or the official zip.

Each variant keeps the exact layout GroupLens ships (the folder inside the zip in brackets):

- ``100k`` [``ml-100k``]: ``u.data`` (tab: user, item, rating, timestamp), ``u.item``
  (``|``: id, title, release date, video release date, IMDb URL, 19 genre flags), ``u.genre``
  (``name|index``, the names of the flags), ``u.user`` (``|``: id, age, gender, occupation,
  zip). Text is latin-1. Ratings 1..5.
- ``1m`` [``ml-1m``]: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
  (``MovieID::Title::Genres``, genres ``|``-joined), ``users.dat``
  (``UserID::Gender::Age::Occupation::Zip-code``; age and occupation are codes). Latin-1.
  Ratings 1..5.
- ``10m`` [``ml-10M100K``]: ``ratings.dat``, ``movies.dat`` as in 1m, ``tags.dat``
  (``UserID::MovieID::Tag::Timestamp``); no users file. Ratings 0.5..5 in half stars.
- ``20m``, ``25m``, ``latest-small`` [``ml-20m``, ``ml-25m``, ``ml-latest-small``]: UTF-8 CSV
  with a header: ``ratings.csv`` (``userId,movieId,rating,timestamp``), ``movies.csv``
  (``movieId,title,genres``; titles with commas are quoted), ``tags.csv``
  (``userId,movieId,tag,timestamp``). Ratings 0.5..5.

Text files are decoded as UTF-8 and, failing that, as latin-1: 100k and 1m are latin-1, the
CSV releases UTF-8, and the 10m README names no encoding.

Output: one ``rating`` event per rating; items with title, genres as categories, ``year``
(from the title, else the 100k release date) and a free text of title, genres and the item's
tags; users with the demographics of 100k and 1m. Tags are used only as item metadata (their
authors and times are dropped), so they add words to an item's text and nothing else.

Speed: the large ratings files are read by pandas' C parser with numeric dtypes (``::`` is
first replaced by a tab, because a multi-character separator would force the slow Python
engine). Only when that fast read fails or finds a bad value is the file read again as text,
in chunks, and checked with the schema helpers, so errors still name file, column and row.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import re
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.errors import DataError
from recpipe.io import atomic_path
from recpipe.log import get_logger
from recpipe.schema import (
    RawTables,
    check_ids,
    check_not_empty,
    check_ratings,
    first_bad_row,
    parse_timestamps,
    require_columns,
)

Variant = Literal["100k", "1m", "10m", "20m", "25m", "latest-small"]

BASE_URL = "https://files.grouplens.org/datasets/movielens"
DOWNLOAD_TIMEOUT_SECONDS = 60
_CHUNK = 1 << 20  # bytes per read while downloading or hashing
_CHUNK_ROWS = 1 << 20  # rows per chunk when ratings are checked as text

log = get_logger("movielens")


@dataclass(frozen=True)
class Checksum:
    """What the official zip of a variant must match; ``None`` means not pinned."""

    size: int | None
    md5: str | None
    sha256: str | None


# md5: GroupLens' own sidecar files (<url>.md5, "MD5 (ml-100k.zip) = ..."), as quoted in
# several public repositories. size and sha256: TensorFlow Datasets' url_checksums/movielens.txt
# (ml-10m, which TFDS lacks: projects that pinned the download beside the same official md5).
# GroupLens publishes no md5 we could find for ml-latest-small, which it may regenerate; its
# pin is the 2018-09-26 release that TFDS and many projects record.
CHECKSUMS: dict[str, Checksum] = {
    "100k": Checksum(
        4_924_029,
        "0e33842e24a9c977be4e0107933c0723",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    ),
    "1m": Checksum(
        5_917_549,
        "c4d9eecfca2ab87c1945afe126590906",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    ),
    "10m": Checksum(
        65_566_137,
        "ce571fd55effeba0271552578f2648bd",
        "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
    ),
    "20m": Checksum(
        198_702_078,
        "cd245b17a1ae2cc31bb14903e1204af3",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    ),
    "25m": Checksum(
        261_978_986,
        "6b51fb2759a8657d3bfcbfc42b592ada",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
    ),
    "latest-small": Checksum(
        978_202,
        None,
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    ),
}


@dataclass(frozen=True)
class _Layout:
    """Where and how one variant stores its files."""

    name: str  # zip stem on the GroupLens server, e.g. "ml-100k"
    inner: str  # folder inside the zip
    family: Literal["100k", "dat", "csv"]
    scale: tuple[float, float]  # documented rating range
    ratings: str
    movies: str
    users: str | None
    tags: str | None


LAYOUTS: dict[str, _Layout] = {
    "100k": _Layout("ml-100k", "ml-100k", "100k", (1.0, 5.0), "u.data", "u.item", "u.user", None),
    "1m": _Layout(
        "ml-1m", "ml-1m", "dat", (1.0, 5.0), "ratings.dat", "movies.dat", "users.dat", None
    ),
    "10m": _Layout(
        "ml-10m", "ml-10M100K", "dat", (0.5, 5.0), "ratings.dat", "movies.dat", None, "tags.dat"
    ),
    "20m": _Layout(
        "ml-20m", "ml-20m", "csv", (0.5, 5.0), "ratings.csv", "movies.csv", None, "tags.csv"
    ),
    "25m": _Layout(
        "ml-25m", "ml-25m", "csv", (0.5, 5.0), "ratings.csv", "movies.csv", None, "tags.csv"
    ),
    "latest-small": _Layout(
        "ml-latest-small",
        "ml-latest-small",
        "csv",
        (0.5, 5.0),
        "ratings.csv",
        "movies.csv",
        None,
        "tags.csv",
    ),
}

# The 100k genre flags in u.item's order (its README); used only if u.genre is absent.
GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

# ml-1m users.dat stores occupations as codes; these are the names its README gives.
OCCUPATIONS_1M = {
    0: "other",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}

# Placeholders GroupLens uses for "no genre": not categories.
_NO_GENRE = {"", "unknown", "(no genres listed)"}
# "Title (1995)", also "Series (1975-1979)" and "Show (2007- )"; the year closes the title.
_TITLE_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4}\s*)?\)\s*$")


class MovieLensConfig(Config):
    """A GroupLens MovieLens data set, read from a local copy or downloaded once into raw_dir."""

    source: Literal["movielens"] = Field("movielens", description="selects this source")
    dep: str = Field(
        "recpipe/sources/movielens.py",
        description="path DVC tracks as ingest's input (point it at data.path to track the copy)",
    )
    variant: Variant = Field(
        "100k", description="which release: 100k, 1m, 10m, 20m, 25m or latest-small"
    )
    path: str | None = Field(
        None,
        description=(
            "local copy: the unzipped folder (or its parent), or the official zip; "
            "null downloads the official zip into the raw-data folder and verifies its checksum"
        ),
    )
    weight: Literal["binary", "rating"] = Field(
        "binary", description="interaction weight: 1.0 for every rating, or the rating value"
    )
    duplicates: Literal["keep_all", "keep_last", "keep_first", "sum"] = Field(
        "keep_last",
        description="repeated (user, item) ratings: see schema.apply_duplicate_policy",
    )
    min_rating: float | None = Field(
        None, description="lowest valid rating (null: the variant's scale, 1 or 0.5)"
    )
    max_rating: float | None = Field(
        None, description="highest valid rating (null: the variant's scale, 5)"
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> MovieLensConfig:
        lo, hi = self.min_rating, self.max_rating
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_rating {lo} is above max_rating {hi}")
        return self


def rating_range(cfg: MovieLensConfig) -> tuple[float, float]:
    """The valid rating range: the config's overrides, else the variant's documented scale."""
    lo, hi = LAYOUTS[cfg.variant].scale
    return (
        lo if cfg.min_rating is None else cfg.min_rating,
        hi if cfg.max_rating is None else cfg.max_rating,
    )


def load_movielens(cfg: MovieLensConfig, raw_dir: str | Path) -> RawTables:
    """Read the configured MovieLens variant into :class:`RawTables` (ids not yet mapped).

    With ``cfg.path`` unset, the official zip is downloaded into ``raw_dir`` first (see
    :func:`ensure_zip`). Bad rows raise :class:`DataError` naming file, column and row.
    """
    layout = LAYOUTS[cfg.variant]
    location = Path(cfg.path) if cfg.path else ensure_zip(cfg.variant, raw_dir)
    lo, hi = rating_range(cfg)
    with _open_copy(location, layout) as files:
        inter = _read_ratings(files, layout, lo, hi)
        if cfg.weight == "rating":
            bad = ~(inter["rating"] > 0)
            if bad.any():
                raise DataError(
                    "weight=rating needs a positive rating on every row",
                    file=files.label(layout.ratings),
                    column=_RATING_COLUMNS[layout.family][2],
                    row=first_bad_row(bad),
                )
            inter["weight"] = inter["rating"]
        tags = _read_tags(files, layout) if layout.tags else None
        if layout.family == "100k":
            items = _read_items_100k(files, layout, tags)
            users = _read_users_100k(files, layout)
        else:
            items = _read_movies(files, layout, tags)
            users = _read_users_1m(files, layout) if layout.users else None
        return RawTables(
            inter,
            items,
            users,
            interactions_file=files.label(layout.ratings),
            items_file=files.label(layout.movies),
            users_file=files.label(layout.users) if layout.users else "users",
        )


# --------------------------------------------------------------------------- download


def ensure_zip(variant: str, raw_dir: str | Path) -> Path:
    """Return the verified official zip of ``variant`` in ``raw_dir``, downloading it if absent.

    The download goes to a temporary file that is renamed only once its size and checksums
    match the pinned :data:`CHECKSUMS`, so ``raw_dir`` never holds a partial or wrong zip.
    """
    layout = LAYOUTS[variant]
    target = Path(raw_dir) / f"{layout.name}.zip"
    url = f"{BASE_URL}/{layout.name}.zip"
    if target.is_file():
        hint = "delete it to download it again, or give a local copy with -S data.path=..."
        with target.open("rb") as fh:
            _verify(_hash_stream(fh), variant, str(target), hint)
        return target
    log.info("downloading %s to %s", url, target)
    with atomic_path(target) as tmp:
        try:
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
                tmp.open("wb") as out,
            ):
                digests = _hash_stream(response, out)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(
                f"could not download {url} ({reason}). Without network access, give a local "
                f"copy of MovieLens {variant}: `-S data.path=/path/to/{layout.inner}` (the "
                f"unzipped folder) or `-S data.path=/path/to/{layout.name}.zip`"
            ) from None
        _verify(digests, variant, target.name, f"downloaded from {url}; nothing was kept")
    return target


def _hash_stream(src: IO[bytes], out: IO[bytes] | None = None) -> tuple[int, str, str]:
    """(size, md5, sha256) of everything read from ``src``, copied into ``out`` if given."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        md5.update(chunk)
        sha.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return size, md5.hexdigest(), sha.hexdigest()


def _verify(digests: tuple[int, str, str], variant: str, file: str, hint: str) -> None:
    """Raise naming the file and the expected and actual value of every pin that differs."""
    want = CHECKSUMS[variant]
    size, md5, sha = digests
    wrong = [
        f"{kind} expected {expected}, actual {actual}"
        for kind, expected, actual in (
            ("md5", want.md5, md5),
            ("sha256", want.sha256, sha),
            ("size", want.size, size),
        )
        if expected is not None and expected != actual
    ]
    if wrong:
        raise DataError(
            f"checksum mismatch for the MovieLens {variant} zip: {'; '.join(wrong)} ({hint})",
            file=file,
        )


# --------------------------------------------------------------------------- local copies


class _Files:
    """The files of one copy of a variant, in a folder or in a zip, with names for messages."""

    def __init__(self, layout: _Layout, folder: Path | None, archive: Path | None) -> None:
        self.layout = layout
        self.folder = folder
        self.archive = archive
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if archive is not None:
            try:
                self._zip = zipfile.ZipFile(archive)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"not a readable zip file: {exc}", file=str(archive)) from None
            self._index_members(self._zip.namelist())

    def _index_members(self, names: list[str]) -> None:
        # Prefer the official inner folder, then the zip's stem, then the top level, then any
        # other folder (shallowest first): re-zipped copies still work.
        preferred = (self.layout.inner, self.layout.name, "")

        def rank(member: str) -> tuple[int, int]:
            folder = member.rpartition("/")[0]
            first = preferred.index(folder) if folder in preferred else len(preferred)
            return first, member.count("/")

        for member in sorted(names, key=rank):
            base = member.rpartition("/")[2]
            if base and base not in self._members:
                self._members[base] = member

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def has(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._members
        assert self.folder is not None
        return (self.folder / name).is_file()

    def label(self, name: str) -> str:
        """How messages name the file: its path, or ``zip:member``."""
        if self._zip is not None:
            member = self._members.get(name, f"{self.layout.inner}/{name}")
            return f"{self.archive}:{member}"
        assert self.folder is not None
        return str(self.folder / name)

    def open(self, name: str) -> IO[bytes]:
        if not self.has(name):
            raise DataError(
                f"file not found: MovieLens {self.layout.name} needs {name}", file=self.label(name)
            )
        if self._zip is not None:
            return self._zip.open(self._members[name])
        assert self.folder is not None
        return (self.folder / name).open("rb")

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.open(name) as fh:
                return fh.read()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"cannot read file: {exc}", file=self.label(name)) from None

    def read_text(self, name: str) -> str:
        return _decode(self.read_bytes(name))


@contextmanager
def _open_copy(location: Path, layout: _Layout) -> Iterator[_Files]:
    """Open a local copy: a zip, the folder holding the files, or a parent of that folder."""
    how = f"give the unzipped {layout.inner} folder or the official {layout.name}.zip"
    if location.is_file():
        files = _Files(layout, None, location)
    elif location.is_dir():
        folder = next(
            (
                d
                for d in (location, location / layout.inner, location / layout.name)
                if (d / layout.ratings).is_file()
            ),
            None,
        )
        if folder is not None:
            files = _Files(layout, folder, None)
        elif (location / f"{layout.name}.zip").is_file():
            files = _Files(layout, None, location / f"{layout.name}.zip")
        else:
            raise DataError(
                f"file not found: MovieLens {layout.name} needs {layout.ratings} in this "
                f"folder or in {layout.inner}/ below it ({how})",
                file=str(location / layout.ratings),
            )
    else:
        raise DataError(f"no such file or folder ({how})", file=str(location))
    try:
        yield files
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # A damaged member shows up only when read (bad CRC, truncated deflate stream).
        raise DataError(f"cannot read the zip, damaged? ({exc})", file=str(location)) from None
    finally:
        files.close()


def _decode(data: bytes) -> str:
    """Text of a MovieLens file: UTF-8 (newer releases), else latin-1 (100k and 1m).

    A latin-1 accent is invalid UTF-8, so trying UTF-8 first also reads copies someone
    re-encoded to UTF-8 correctly.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# --------------------------------------------------------------------------- parsing helpers


def _split_fields(
    text: str, sep: str, names: list[str], file: str, text_col: int | None = None
) -> pd.DataFrame:
    """Split a header-less file into ``names`` columns of strings; row = line number.

    ``text_col`` names the one free-text field that may itself contain ``sep`` (a title or a
    tag): the fields before it are split from the left and those after it from the right.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("input is empty: no data rows", file=file)
    s = pd.Series(lines, dtype="str").str.rstrip("\r")
    n = len(names)
    if text_col is None:
        parts = s.str.split(sep, regex=False, expand=True)
    else:
        head = s.str.split(sep, n=text_col, regex=False, expand=True).reindex(
            columns=range(text_col + 1)
        )
        rest = head[text_col].astype("str")
        right = n - text_col - 1
        # n=0 would mean "split everywhere" to pandas; with nothing right of the text, don't.
        tail = rest.str.rsplit(sep, n=right, expand=True) if right else rest.to_frame()
        tail = tail.reindex(columns=range(right + 1))
        parts = pd.concat([head.iloc[:, :text_col], tail], axis=1, ignore_index=True)
    parts = parts.reindex(columns=range(max(n, parts.shape[1])))
    count = parts.notna().sum(axis=1)
    bad = count != n
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"expected {n} fields separated by {sep!r} ({', '.join(names)}), "
            f"found {int(count.iloc[row - 1])}",
            file=file,
            row=row,
        )
    parts = parts.iloc[:, :n]
    parts.columns = names
    return parts


def _int_ids(raw: pd.DataFrame, column: str, file: str) -> pd.Series:
    """MovieLens ids are integers: check them and return them as int64."""
    ids = check_ids(raw, column, file)
    num = pd.to_numeric(ids, errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"id is not an integer: {ids.iloc[row - 1]!r}", file=file, column=column, row=row
        )
    return num.astype("int64")


def _read_csv_text(text: str, file: str) -> pd.DataFrame:
    """A CSV with a header, every cell a string; data rows numbered from 1 after the header."""
    try:
        # header=None then the first row as header: a row longer than the header is then a
        # parse error instead of silently becoming the index.
        raw = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise DataError("input is empty: no header and no data rows", file=file) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot parse file: {exc}", file=file) from None
    header = [str(c).strip() for c in raw.iloc[0]]
    data = raw.iloc[1:].reset_index(drop=True)
    data.columns = header
    return data


# --------------------------------------------------------------------------- ratings

_RATING_COLUMNS = {
    "100k": ["user_id", "item_id", "rating", "timestamp"],
    "dat": ["UserID", "MovieID", "Rating", "Timestamp"],
    "csv": ["userId", "movieId", "rating", "timestamp"],
}


def _read_ratings(files: _Files, layout: _Layout, lo: float, hi: float) -> pd.DataFrame:
    """Ratings as canonical interactions (weight 1.0); fast path first, checked text if needed."""
    names = _RATING_COLUMNS[layout.family]
    table = _ratings_fast(files, layout, names)
    if table is None or not _ratings_clean(table, lo, hi):
        table = _ratings_checked(files, layout, names, lo, hi)
    user, item, rating, ts = (table[c] for c in names)
    inter = pd.DataFrame(
        {"user_id": user.astype(str), "item_id": item.astype(str), "rating": rating.astype(float)}
    )
    # Constants assigned after construction: broadcasting them inside the constructor is
    # several times slower on 20M rows.
    inter["event"] = "rating"
    inter["weight"] = 1.0
    inter["timestamp"] = ts.to_numpy(dtype="int64")
    return inter


def _ratings_source(files: _Files, layout: _Layout) -> IO[bytes]:
    if layout.family == "dat":
        # All four fields are numbers, so "::" -> tab is safe and keeps the C engine.
        return io.BytesIO(files.read_bytes(layout.ratings).replace(b"::", b"\t"))
    return files.open(layout.ratings)


def _csv_options(layout: _Layout) -> dict[str, object]:
    if layout.family == "csv":
        return {"skip_blank_lines": False}
    return {"sep": "\t", "quoting": csv.QUOTE_NONE, "skip_blank_lines": False}


def _ratings_fast(files: _Files, layout: _Layout, names: list[str]) -> pd.DataFrame | None:
    """Numeric read with the C parser; ``None`` when the file does not parse that way."""
    dtypes = ["int64", "int64", "float64", "int64"]
    header = layout.family == "csv"
    try:
        with _ratings_source(files, layout) as fh:
            df = pd.read_csv(
                fh,
                header=0 if header else None,
                dtype=dict(zip(names, dtypes, strict=True)) if header else dict(enumerate(dtypes)),
                **_csv_options(layout),  # type: ignore[arg-type]
            )
    except DataError:
        raise
    except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if df.shape[1] != len(names) or (header and list(df.columns) != names):
        return None
    df.columns = names
    # A row longer than the rest turns leading columns into the index: not a clean file.
    if not df.index.equals(pd.RangeIndex(len(df))):
        return None
    return df


def _ratings_clean(df: pd.DataFrame, lo: float, hi: float) -> bool:
    rating = df.iloc[:, 2]
    return len(df) > 0 and bool(rating.notna().all()) and bool(rating.between(lo, hi).all())


def _ratings_checked(
    files: _Files, layout: _Layout, names: list[str], lo: float, hi: float
) -> pd.DataFrame:
    """Read the ratings as text and check every cell with the schema helpers.

    Reached only when the fast read failed or found a bad value. The file is read in chunks
    (memory stays flat on 20M rows), a chunk whose cells all convert cleanly skips the slower
    helpers, and an error's row is shifted from the chunk's numbering to the file's.
    """
    file = files.label(layout.ratings)
    header = layout.family == "csv"
    positions = list(range(len(names)))
    parts: list[pd.DataFrame] = []
    try:
        with _ratings_source(files, layout) as fh:
            reader = pd.read_csv(
                fh,
                header=None,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding="latin-1",  # any byte decodes; a stray one then shows as a bad value
                chunksize=_CHUNK_ROWS,
                **_csv_options(layout),  # type: ignore[arg-type]
            )
            for chunk in reader:
                if header and int(chunk.index[0]) == 0:
                    found = [str(c).strip() for c in chunk.iloc[0]]
                    require_columns(pd.DataFrame(columns=found), names, file)
                    positions = [found.index(c) for c in names]
                    chunk = chunk.iloc[1:]
                offset = int(chunk.index[0]) - int(header) if len(chunk) else 0
                local = chunk.reset_index(drop=True)
                try:
                    parts.append(
                        _check_ratings_chunk(local, positions, names, file, lo, hi, header)
                    )
                except DataError as err:
                    raise _shifted(err, offset) from None
    except pd.errors.EmptyDataError:
        raise DataError("input is empty: no data rows", file=file) from None
    except pd.errors.ParserError as exc:
        # "Expected 4 fields in line 7, saw 5": a row longer than the first one.
        found_line = re.search(r"line (\d+), saw (\d+)", str(exc))
        if found_line is None:
            raise DataError(f"cannot parse file: {exc}", file=file) from None
        line, saw = (int(x) for x in found_line.groups())
        raise DataError(
            f"expected {len(names)} fields ({', '.join(names)}), found {saw}",
            file=file,
            row=line - int(header),
        ) from None
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    check_not_empty(table, file)
    return table


def _check_ratings_chunk(
    chunk: pd.DataFrame,
    positions: list[int],
    names: list[str],
    file: str,
    lo: float,
    hi: float,
    header: bool,
) -> pd.DataFrame:
    """One chunk of text ratings as numbers; rows numbered from 1 within the chunk.

    ``positions`` are the columns holding ``names``. Without a header, a further column is a
    row with too many fields (with one, it is just a column the header names).
    """
    if not header and chunk.shape[1] > len(names):
        more = chunk.iloc[:, len(names) :].notna().any(axis=1)
        if more.any():
            row = first_bad_row(more)
            found = int(chunk.iloc[row - 1].notna().sum())
            raise DataError(
                f"expected {len(names)} fields ({', '.join(names)}), found {found}",
                file=file,
                row=row,
            )
    # Short rows (every row, in a chunk of them) leave columns missing: they read as empty.
    raw = chunk.reindex(columns=positions)
    raw.columns = names
    u, i, r, t = names
    user_n, item_n, ts_n = (_cast(raw[c], pa.int64()) for c in (u, i, t))
    rating_n = _cast(raw[r], pa.float64())
    cast = (user_n, item_n, rating_n, ts_n)
    if all(x is not None for x in cast) and bool(((rating_n >= lo) & (rating_n <= hi)).all()):
        return pd.DataFrame(dict(zip(names, cast, strict=True)))
    user = _int_ids(raw, u, file)
    item = _int_ids(raw, i, file)
    rating = check_ratings(raw, r, file, lo, hi)
    if rating.isna().any():
        raise DataError("missing rating", file=file, column=r, row=first_bad_row(rating.isna()))
    ts = parse_timestamps(raw[t], t, file, fmt="unix")
    return pd.DataFrame({u: user, i: item, r: rating, t: ts})


def _cast(col: pd.Series, kind: pa.DataType) -> np.ndarray | None:
    """The column as numbers if every cell is exactly one, else ``None``.

    pyarrow's cast is some 30 times faster than ``pd.to_numeric`` on text; whatever it
    rejects goes to the schema helpers, which name the bad cell (or accept it, e.g. "5.0").
    """
    try:
        arr = pc.cast(pa.array(col), kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if arr.null_count:
        return None
    return arr.to_numpy(zero_copy_only=False)


def _shifted(err: DataError, offset: int) -> DataError:
    """``err`` with its row moved by ``offset`` rows (helpers number rows within a chunk)."""
    if not isinstance(err.row, int) or offset == 0:
        return err
    prefix = str(DataError("", file=err.file, column=err.column, row=err.row))
    message = str(err)[len(prefix) :]
    return DataError(message, file=err.file, column=err.column, row=err.row + offset)


# --------------------------------------------------------------------------- items


def _title_year(titles: pd.Series) -> pd.Series:
    """The year that closes a title, ``(1995)``, as float (NaN when there is none)."""
    return pd.to_numeric(titles.str.extract(_TITLE_YEAR, expand=False), errors="coerce").astype(
        float
    )


def _items_frame(
    ids: pd.Series,
    titles: pd.Series,
    genres: list[list[str]],
    tags: pd.Series | None,
    year: pd.Series,
) -> pd.DataFrame:
    """Canonical items: categories without "no genre" placeholders; text = title, genres, tags."""
    title = titles.fillna("").astype(str).str.strip()
    cats = [[g for g in gs if g.strip().lower() not in _NO_GENRE] for gs in genres]
    keys = ids.astype(str)
    tag_text = keys.map(tags).fillna("").tolist() if tags is not None else [""] * len(ids)
    text = [
        " ".join(p for p in (t, " ".join(c), tg) if p)
        for t, c, tg in zip(title.tolist(), cats, tag_text, strict=True)
    ]
    return pd.DataFrame(
        {
            "item_id": keys.to_numpy(),
            "title": title.to_numpy(),
            "text": text,
            "categories": cats,
            "year": year.to_numpy(dtype=float),
        }
    )


def _read_tags(files: _Files, layout: _Layout) -> pd.Series | None:
    """Each item's distinct tags (case-insensitively), joined in order of first use."""
    assert layout.tags is not None
    if not files.has(layout.tags):
        log.warning("%s not found: item text without tags", files.label(layout.tags))
        return None
    file = files.label(layout.tags)
    text = files.read_text(layout.tags)
    if not text.strip():
        return None
    if layout.family == "csv":
        raw = _read_csv_text(text, file)
        require_columns(raw, ["movieId", "tag"], file)
        item_col, tag_col = "movieId", "tag"
    else:
        names = ["UserID", "MovieID", "Tag", "Timestamp"]
        raw = _split_fields(text, "::", names, file, text_col=2)
        item_col, tag_col = "MovieID", "Tag"
    if len(raw) == 0:
        return pd.Series(dtype=str)
    tags = pd.DataFrame({"item": _int_ids(raw, item_col, file), "tag": raw[tag_col].str.strip()})
    tags = tags[tags["tag"].notna() & tags["tag"].ne("")]
    tags = tags.assign(key=tags["tag"].str.lower()).drop_duplicates(["item", "key"])
    # Join per item by slicing one stable sort: a groupby with a Python join per group takes
    # seconds on the 25m tags.
    order = np.argsort(tags["item"].to_numpy(), kind="stable")
    item = tags["item"].to_numpy()[order]
    words = tags["tag"].to_numpy(dtype=object)[order].tolist()
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    ends = np.r_[starts[1:], len(item)]
    return pd.Series(
        [", ".join(words[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)],
        index=item[starts].astype(str),
        dtype=object,
    )


def _read_items_100k(files: _Files, layout: _Layout, tags: pd.Series | None) -> pd.DataFrame:
    genres = _read_genres_100k(files)
    file = files.label(layout.movies)
    names = ["movie id", "movie title", "release date", "video release date", "IMDb URL"]
    raw = _split_fields(files.read_text(layout.movies), "|", names + genres, file, text_col=1)
    ids = _int_ids(raw, "movie id", file)
    flags = raw[genres]
    bad = ~flags.isin(["0", "1"])
    if bad.to_numpy().any():
        row = first_bad_row(bad.any(axis=1))
        col = genres[int(np.argmax(bad.iloc[row - 1].to_numpy()))]
        raise DataError(
            f"genre flag must be 0 or 1, found {flags.iloc[row - 1][col]!r}",
            file=file,
            column=col,
            row=row,
        )
    on = flags.eq("1").to_numpy()
    cats = [[g for g, f in zip(genres, row, strict=True) if f] for row in on]
    # The title's year, else the release date's ("01-Jan-1995").
    released = pd.to_numeric(raw["release date"].str.extract(r"(\d{4})\s*$", expand=False))
    year = _title_year(raw["movie title"]).fillna(released.astype(float))
    return _items_frame(ids, raw["movie title"], cats, tags, year)


def _read_genres_100k(files: _Files) -> list[str]:
    """u.genre: ``name|index`` lines (and a blank last line) naming the u.item flags."""
    if not files.has("u.genre"):
        log.warning("%s not found: using the README's genre order", files.label("u.genre"))
        return list(GENRES_100K)
    file = files.label("u.genre")
    lines = [ln.strip() for ln in files.read_text("u.genre").split("\n")]
    by_index: dict[int, str] = {}
    for row, line in enumerate(lines, start=1):
        if not line:
            continue
        name, _, idx = line.rpartition("|")
        if not name or not idx.strip().isdigit():
            raise DataError(f"expected 'name|index', found {line!r}", file=file, row=row)
        by_index[int(idx)] = name.strip()
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"genre indices must run 0..{len(by_index) - 1}", file=file)
    return [by_index[i] for i in range(len(by_index))]


def _read_movies(files: _Files, layout: _Layout, tags: pd.Series | None) -> pd.DataFrame:
    """movies.dat (``::``) or movies.csv: id, title, ``|``-joined genres."""
    file = files.label(layout.movies)
    text = files.read_text(layout.movies)
    if layout.family == "csv":
        raw = _read_csv_text(text, file)
        check_not_empty(raw, file)
        require_columns(raw, ["movieId", "title", "genres"], file)
        id_col, title_col, genre_col = "movieId", "title", "genres"
    else:
        names = ["MovieID", "Title", "Genres"]
        raw = _split_fields(text, "::", names, file, text_col=1)
        id_col, title_col, genre_col = names
    ids = _int_ids(raw, id_col, file)
    genres = [g.split("|") if isinstance(g, str) else [] for g in raw[genre_col].tolist()]
    return _items_frame(ids, raw[title_col], genres, tags, _title_year(raw[title_col]))


# --------------------------------------------------------------------------- users


def _int_column(raw: pd.DataFrame, column: str, file: str) -> pd.Series:
    values = pd.to_numeric(raw[column].str.strip(), errors="coerce")
    bad = values.isna() | (values != np.floor(values))
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"expected a whole number, found {raw[column].iloc[row - 1]!r}",
            file=file,
            column=column,
            row=row,
        )
    return values.astype("int64")


def _read_users_100k(files: _Files, layout: _Layout) -> pd.DataFrame | None:
    """u.user: id|age|gender|occupation|zip (zip codes stay text: some are Canadian)."""
    assert layout.users is not None
    if not files.has(layout.users):
        log.warning("%s not found: users without attributes", files.label(layout.users))
        return None
    file = files.label(layout.users)
    names = ["user id", "age", "gender", "occupation", "zip code"]
    raw = _split_fields(files.read_text(layout.users), "|", names, file)
    return pd.DataFrame(
        {
            "user_id": _int_ids(raw, "user id", file).astype(str),
            "age": _int_column(raw, "age", file),
            "gender": raw["gender"].str.strip(),
            "occupation": raw["occupation"].str.strip(),
            "zip": raw["zip code"].str.strip(),
        }
    )


def _read_users_1m(files: _Files, layout: _Layout) -> pd.DataFrame | None:
    """users.dat: UserID::Gender::Age::Occupation::Zip-code.

    ``age`` stays the README's bucket code, which is the bucket's lower bound (1 = under 18,
    18 = 18-24, ..., 56 = 56+); occupation codes become the README's names.
    """
    assert layout.users is not None
    if not files.has(layout.users):
        log.warning("%s not found: users without attributes", files.label(layout.users))
        return None
    file = files.label(layout.users)
    names = ["UserID", "Gender", "Age", "Occupation", "Zip-code"]
    raw = _split_fields(files.read_text(layout.users), "::", names, file)
    occupation = _int_column(raw, "Occupation", file)
    return pd.DataFrame(
        {
            "user_id": _int_ids(raw, "UserID", file).astype(str),
            "age": _int_column(raw, "Age", file),
            "gender": raw["Gender"].str.strip(),
            # An undocumented code stays visible as its number rather than becoming "other".
            "occupation": occupation.map(OCCUPATIONS_1M).fillna(occupation.astype(str)),
            "zip": raw["Zip-code"].str.strip(),
        }
    )
