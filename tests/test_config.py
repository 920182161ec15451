"""Typed params: unknown keys and bad values fail with the dotted key named."""

from __future__ import annotations

import pytest

from recpipe.config import load_params, parse
from recpipe.errors import ConfigError
from recpipe.splitting import RandomSplit, SplitConfig, TemporalSplit


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"split\.n_tset: unknown key"):
        parse({"method": "temporal", "n_tset": 2}, SplitConfig, "split")


def test_nested_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"split\.kcore\.users: unknown key"):
        parse({"method": "random", "kcore": {"users": 5}}, SplitConfig, "split")


def test_bad_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"split\.n_test"):
        parse({"method": "temporal", "n_test": 0}, SplitConfig, "split")


def test_discriminated_union_picks_the_method() -> None:
    assert isinstance(parse({"method": "random"}, SplitConfig, "split"), RandomSplit)
    assert isinstance(parse({"method": "temporal"}, SplitConfig, "split"), TemporalSplit)


def test_ratios_must_sum_to_one() -> None:
    with pytest.raises(ConfigError, match="sum to 1"):
        parse({"method": "random", "ratios": [0.5, 0.2, 0.2]}, SplitConfig, "split")


def test_missing_section_and_file(tmp_path) -> None:
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="missing params key 'split'"):
        load_params("split", SplitConfig, p)
    assert load_params("seed", int, p) == 1
    with pytest.raises(ConfigError, match="not found"):
        load_params("seed", int, tmp_path / "nope.yaml")
