"""The service's settings: one typed object read from ``RECPIPE_*`` environment variables.

``recpipe serve`` sets the few that have command-line options (``--bundle``, ``--store``,
...); everything else comes from the environment, so the same image runs anywhere.
Unknown ``RECPIPE_*`` variables are ignored (the pipeline has its own), misspelled values
of known ones fail at start with the variable's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_N = 1000
"""The largest page (``n``) any request may ask for."""


class Settings(BaseSettings):
    """Everything ``create_app`` needs; each field is the variable ``RECPIPE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="RECPIPE_", extra="ignore", frozen=True)

    bundle: Path = Field(Path("models/bundle"), description="bundle folder (the bundle stage's)")
    store: Literal["memory", "redis"] = Field(
        "memory",
        description="where state shared between replicas lives (recent events, erased "
        "users): this process's memory, or Redis (required with more than one replica)",
    )
    redis_url: str = Field("redis://localhost:6379/0", description="Redis URL (store=redis)")
    redis_prefix: str = Field(
        "recpipe", description="prefix of every Redis key (several services on one Redis)"
    )
    api_key: SecretStr | None = Field(
        None,
        description="when set, events, user deletion and admin endpoints need this value in "
        "the X-API-Key header (401 otherwise)",
    )
    landing: Path = Field(
        Path("data/user/events"),
        description="folder the events are appended to (data=files ingest reads it: data.landing)",
    )
    deletions: Path = Field(
        Path("data/user/deletions.jsonl"),
        description="the erased users' list, appended to (ingest honours it: data.deletions)",
    )
    fsync: bool = Field(True, description="fsync every event and deletion before answering")
    rotate_bytes: int = Field(
        64 * 2**20, ge=1024, description="start a new event file past this size"
    )
    rotate_seconds: float = Field(
        3600.0, gt=0, description="start a new event file after this many seconds"
    )
    reload_interval: float = Field(
        5.0,
        ge=0,
        description="seconds between looks at the bundle's manifest.json; a new bundle is "
        "loaded and swapped in (0: only POST /admin/reload)",
    )
    warm: bool = Field(True, description="touch every model once after a load")
    fresh_concurrency: int = Field(
        1,
        ge=1,
        description="fresh rankings (sessions, users with new events) a worker process runs "
        "at once; the others wait their turn. Side by side they contend for Python's "
        "interpreter lock and each finishes later: run one worker per core instead",
    )
    similarity_tables_mb: int = Field(
        512,
        ge=0,
        description="lay out every item pair's content and collaborative similarity at load "
        "(two float64 item x item tables: 210 MiB at 3,706 items) when they fit in this many "
        "MiB; fresh rankings then read their similarity features instead of computing them "
        "(the same values, about a sixth of a ranking less at that size). 0: never",
    )
    max_n: int = Field(MAX_N, ge=1, le=MAX_N, description="largest n a request may ask for")
    max_body_bytes: int = Field(
        2**20,
        ge=1024,
        description="largest request body in bytes (413 beyond; default 1 MiB)",
    )
    recent_max: int = Field(
        200, ge=1, description="recent events kept per user (the newest) until a bundle has them"
    )
    recent_ttl: float = Field(
        30 * 86400,
        ge=0,
        description="seconds a user's recent events are kept after their last one (0: kept "
        "until erased); a bundle built after them carries them anyway",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0},
        description="event types accepted by POST /v1/events and their weight in fresh "
        "ranking; keep them equal to data.event_weights, which ingest checks",
    )

    @property
    def similarity_tables_bytes(self) -> int:
        """:attr:`similarity_tables_mb` in bytes, as :meth:`Bundle.load` takes it."""
        return self.similarity_tables_mb << 20
