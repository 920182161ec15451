"""The ``data`` params block: one config class per source, chosen by its ``source`` key."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from recpipe.sources.movielens.loader import MovieLensConfig
from recpipe.sources.synthetic import SyntheticConfig
from recpipe.sources.userfiles import FilesConfig

DataConfig = Annotated[
    SyntheticConfig | MovieLensConfig | FilesConfig, Field(discriminator="source")
]
"""What ``load_params("data", DataConfig)`` validates: the block of the source it names."""
