"""The MovieLens releases this source reads, and the exact layout GroupLens ships for each.

Each variant keeps the files of its official zip (the folder inside the zip in brackets):

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Variant = Literal["100k", "1m", "10m", "20m", "25m", "latest-small"]


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
