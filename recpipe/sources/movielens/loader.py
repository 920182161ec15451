"""The ``movielens`` source's entry point: :class:`MovieLensConfig` and :func:`load_movielens`.

Output: one ``rating`` event per rating; items with title, genres as categories, ``year``
(from the title, else the 100k release date) and a free text of title, genres and the item's
tags; users with the demographics of 100k and 1m. Tags are used only as item metadata (their
authors and times are dropped), so they add words to an item's text and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.errors import DataError
from recpipe.schema import RawTables, first_bad_row
from recpipe.sources.movielens.download import ensure_zip
from recpipe.sources.movielens.files import _open_copy
from recpipe.sources.movielens.items import _read_items_100k, _read_movies, _read_tags
from recpipe.sources.movielens.ratings import _RATING_COLUMNS, _read_ratings
from recpipe.sources.movielens.users import _read_users_1m, _read_users_100k
from recpipe.sources.movielens.variants import LAYOUTS, Variant

RATINGS_PER_RELEASE: dict[str, int] = {
    "100k": 100_000,
    "1m": 1_000_209,
    "10m": 10_000_054,
    "20m": 20_000_263,
    "25m": 25_000_095,
}
"""Ratings in each fixed release, as GroupLens publishes them (latest-small changes)."""


class MovieLensConfig(Config):
    """A GroupLens MovieLens data set, read from a local copy or downloaded once into raw_dir."""

    source: Literal["movielens"] = Field("movielens", description="selects this source")
    dep: str = Field(
        "recpipe/sources/movielens/loader.py",
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
    check_rows: bool = Field(
        True,
        description="refuse a copy whose number of ratings differs from the release's "
        "published count (a truncated or edited file); false reads any copy",
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
        expected = RATINGS_PER_RELEASE.get(cfg.variant)
        if cfg.check_rows and expected is not None and len(inter) != expected:
            raise DataError(
                f"{len(inter):,} ratings, but the MovieLens {cfg.variant} release has "
                f"{expected:,}: a truncated or edited copy? Set data.check_rows: false to "
                "read it anyway",
                file=files.label(layout.ratings),
            )
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
