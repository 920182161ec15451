"""The MovieLens movies as canonical items: title, genres as categories, year and a free text.

``year`` comes from the title, else the 100k release date; the text joins title, genres and
the item's tags. Tags are used only as item metadata (their authors and times are dropped),
so they add words to an item's text and nothing else.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from recpipe.errors import DataError
from recpipe.log import get_logger
from recpipe.schema import check_not_empty, first_bad_row, require_columns
from recpipe.sources.movielens.files import _Files
from recpipe.sources.movielens.parsing import _int_ids, _read_csv_text, _split_fields
from recpipe.sources.movielens.variants import _Layout

log = get_logger("movielens")


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


# Placeholders GroupLens uses for "no genre": not categories.
_NO_GENRE = {"", "unknown", "(no genres listed)"}
# "Title (1995)", also "Series (1975-1979)" and "Show (2007- )"; the year closes the title.
_TITLE_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4}\s*)?\)\s*$")


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
