"""Settings of the ranker's features: :class:`FeaturesConfig`, the params block ``features``."""

from __future__ import annotations

from pydantic import Field, PositiveInt, field_validator

from recpipe.config import Config


class FeaturesConfig(Config):
    """Settings of the feature computations (``features``)."""

    windows_days: list[PositiveInt] = Field(
        [7, 30, 90],
        min_length=1,
        description="recent-activity windows in days: u_events_<w>d and i_users_<w>d per "
        "window; i_trend compares the shortest with the longest",
    )
    half_life_days: float = Field(
        30.0,
        gt=0,
        description="half-life of i_pop_decayed: an event this many days before now counts half",
    )
    min_ratings: int = Field(
        1,
        ge=1,
        description="u_mean_rating / i_mean_rating need at least this many rated events, "
        "else they are NaN",
    )
    trend_prior: float = Field(
        5.0,
        gt=0,
        description="pseudo-events added to both sides of i_trend, so items with few events "
        "stay near 1 instead of swinging on noise",
    )
    content_history: int = Field(
        50,
        ge=1,
        description="p_content_*_sim and p_cf_max_sim compare a candidate with at most this "
        "many of the user's most recent distinct (describable) history items",
    )
    recent_items: list[PositiveInt] = Field(
        [1, 3, 10],
        description="p_cf_last<k>_sim per k: mean collaborative cosine between a candidate and "
        "the user's k most recent distinct items (short-term interest)",
    )
    session_gap_hours: float = Field(
        24.0,
        gt=0,
        description="u_last_session_items counts the user's items from the last event back "
        "while consecutive first events are at most this many hours apart",
    )
    max_attribute_levels: int = Field(
        50,
        ge=2,
        description="string/categorical user or item attributes with at most this many "
        "distinct values become integer codes; more are left out",
    )

    @field_validator("windows_days", "recent_items")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"values must be distinct, got {value}")
        return value
