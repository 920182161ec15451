"""Settings of the serving bundle (``serve`` in params.yaml, ``conf/serve/default.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recpipe.config import Config


class ServeConfig(Config):
    """What the ``bundle`` stage puts in ``models/bundle`` for the service."""

    fold: Literal["serve", "test"] = Field(
        "serve",
        description="serve: models refitted on every interaction (what a shop deploys); "
        "test: the same bundle built from the test fold's history, whose lists for the test "
        "users equal the evaluated ranker lists (a check that what is served is what was "
        "measured)",
    )
    models: list[str] | None = Field(
        None,
        description="candidate models in the bundle (null: every enabled one); the ranker "
        "needs the columns of every model the blend had, so leaving one out is refused when "
        "the ranker uses its columns",
    )
    cache_n: int = Field(
        100,
        ge=1,
        le=1000,
        description="length of the precomputed list of every known user, per model, seen "
        "items excluded (a request for more items than this is ranked fresh)",
    )
    popular_n: int = Field(
        200, ge=1, description="length of each popularity list (overall, per category, trending)"
    )
    trending_days: float = Field(
        7.0,
        gt=0,
        description="trending: the items most users touched in this many days up to the "
        "last event of the history",
    )
    neighbours: int = Field(
        50, ge=1, description="nearest neighbours kept per item (collaborative and content)"
    )
    cold_item_users: int = Field(
        5,
        ge=0,
        description="similar-items kind=auto answers with content neighbours for items that "
        "fewer users than this touched (too little data for collaborative ones)",
    )
    fallback: list[Literal["popular", "trending"]] = Field(
        default_factory=lambda: ["popular"],
        description="lists a user the bundle does not know (and who sends no items) gets, "
        "tried in this order until one has enough items",
    )
    block_users: int = Field(
        2_000,
        ge=1,
        description="users ranked together while the bundle is built (bounds its memory, "
        "beside the similarity features that groups of blocks share, at most "
        "recpipe.features.pairs.SHARED_PAIRS pairs at a time; the lists do not depend on it)",
    )
