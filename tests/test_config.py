"""Typed params: unknown keys and bad values fail with the dotted key named."""

from __future__ import annotations

import pytest

from recpipe.config import load_params, parse, read_params
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


def test_one_setting_with_a_default(tmp_path) -> None:
    """A stage that reads one setting of another block (the blend's
    ``ranker.rerank_top``) takes the default where the file leaves it out, and still
    validates a value that is there."""
    from recpipe.blending import RERANK_TOP, TopPairs

    p = tmp_path / "params.yaml"
    for text, expected in (
        ("seed: 1\n", 200),
        ("ranker: {}\n", 200),
        ("ranker: {rerank_top: 7}\n", 7),
    ):
        p.write_text(text)
        assert load_params("ranker.rerank_top", TopPairs, p, default=RERANK_TOP) == expected
    p.write_text("ranker: {rerank_top: null}\n")
    assert load_params("ranker.rerank_top", TopPairs, p, default=RERANK_TOP) is None
    p.write_text("ranker: {rerank_top: 0}\n")
    with pytest.raises(
        ConfigError, match="ranker.rerank_top: Input should be greater than or equal to 1"
    ):
        load_params("ranker.rerank_top", TopPairs, p, default=RERANK_TOP)
    p.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="missing params key 'ranker'"):
        load_params("ranker.rerank_top", TopPairs, p)
    for broken in ("ranker: null\n", "ranker: 5\n", "ranker: [rerank_top]\n"):
        p.write_text(broken)  # a block that is no mapping is a mistake, not a left-out key
        with pytest.raises(ConfigError, match="params key 'ranker' is not a mapping"):
            load_params("ranker.rerank_top", TopPairs, p, default=RERANK_TOP)


def test_a_misspelled_key_names_the_nearest_valid_one() -> None:
    """Hydra answers `-S split.n_tset=2` with advice to write `+split.n_tset=2`; that adds the
    misspelled key, and this is the message it then meets: the key and the one meant."""
    with pytest.raises(ConfigError) as err:
        parse({"method": "temporal", "n_tset": 2}, SplitConfig, "split")
    assert str(err.value) == "params.yaml: split.n_tset: unknown key (did you mean split.n_test?)"


def test_the_nearest_key_follows_nested_blocks_and_union_members() -> None:
    # kcore is a nested block; method picks the union member whose keys are offered
    with pytest.raises(
        ConfigError, match=r"split\.kcore\.usrs: unknown key \(did you mean split\.kcore\.user\?\)"
    ):
        parse({"method": "random", "kcore": {"usrs": 1}}, SplitConfig, "split")
    with pytest.raises(
        ConfigError, match=r"split\.ratio: unknown key \(did you mean split\.ratios"
    ):
        parse({"method": "random", "ratio": [0.6, 0.2, 0.2]}, SplitConfig, "split")
    # `ratios` exists only under method: random, so a temporal split cannot suggest it
    with pytest.raises(ConfigError) as err:
        parse({"method": "temporal", "ratio": [0.6, 0.2, 0.2]}, SplitConfig, "split")
    assert "ratios" not in str(err.value)


def test_a_key_like_no_valid_one_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as err:
        parse({"method": "temporal", "zzz": 1}, SplitConfig, "split")
    message = str(err.value)
    assert message.startswith("params.yaml: split.zzz: unknown key (valid keys: split.kcore, ")
    assert "split.n_test" in message and "did you mean" not in message


def test_a_params_file_that_is_not_yaml_is_named_with_its_line(tmp_path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("split:\n  method: [random, \n  seed: 3\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not valid YAML") as info:
        read_params(bad)
    assert f'in "{bad}", line 2, column 11' in str(info.value)  # where the list opens


def test_params_are_read_again_when_the_file_changes_and_each_read_is_a_copy(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nsplit: {method: random}\n")
    first = read_params(path)
    first["seed"] = 99  # the caller's copy, nested blocks too: the next read does not see it
    first["split"]["method"] = "temporal"
    assert read_params(path) == {"seed": 1, "split": {"method": "random"}}
    path.write_text("seed: 2\nsplit: {method: random}\n")  # same size, maybe same mtime
    assert read_params(path)["seed"] == 2
    assert load_params("seed", int, path) == 2
