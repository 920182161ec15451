"""Saved objects without pickle: what round-trips, and the errors a bad file gets."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_models_contract import block_data

from recpipe.artifacts import load_model, load_optional_model, save_model
from recpipe.config import Config
from recpipe.models.popularity import Popularity, PopularityConfig
from recpipe.persist import FORMAT_VERSION, ArtifactError, Persistent, load, register, save


class Inner(Config):
    size: int = 3
    name: str = "x"


@register
@dataclass
class Leaf:
    weights: np.ndarray
    label: str


class Holder(Persistent):
    transient = ("cache",)

    def __init__(self) -> None:
        self.dense = np.arange(12, dtype=np.float32).reshape(3, 4)
        self.scalar = np.float64(2.5)
        self.plain = 0.1 + 0.2
        self.nan = float("nan")
        self.flag = True
        self.count = 7
        self.none = None
        self.csr = sp.csr_matrix(np.eye(4, dtype=np.float32))
        self.csr_array = sp.csr_array(np.eye(2))
        self.vocab = {"b": 1, "a": 0}
        self.pair = (np.int64(4), "four")
        self.items = [Leaf(np.ones(2), "leaf")]
        self.config = Inner(size=5)
        self.table = pd.DataFrame({"id": ["a", "b"], "cats": [["x", "y"], []]})
        self.cache = object()


def test_round_trip_keeps_values_and_types(tmp_path: Path) -> None:
    obj = Holder()
    save(obj, tmp_path / "h", "test")
    got = load(tmp_path / "h", "test")
    assert type(got) is Holder and got.cache is None  # transient: not saved
    np.testing.assert_array_equal(got.dense, obj.dense)
    assert got.dense.dtype == np.float32
    assert type(got.scalar) is np.float64 and got.scalar == 2.5
    assert got.plain == obj.plain and np.isnan(got.nan)
    assert got.flag is True and got.count == 7 and got.none is None
    assert type(got.csr) is sp.csr_matrix and (got.csr != obj.csr).nnz == 0
    assert type(got.csr_array) is sp.csr_array
    assert got.vocab == obj.vocab and list(got.vocab) == ["b", "a"]
    assert got.pair == (4, "four") and type(got.pair[0]) is np.int64
    assert isinstance(got.items[0], Leaf) and got.items[0].label == "leaf"
    assert got.config == Inner(size=5)
    pd.testing.assert_frame_equal(got.table, obj.table)


def test_same_state_same_bytes(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "a", "test")
    save(Holder(), tmp_path / "b", "test")
    for suffix in (".npz", ".table.parquet"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    # the manifests differ only in the names of their files
    a = (tmp_path / "a.json").read_text().replace('"a.', '"b.')
    assert a == (tmp_path / "b.json").read_text()


def test_a_manifest_is_never_read_with_another_saves_data(tmp_path: Path) -> None:
    """A save killed after its arrays but before its manifest (or a reader racing a
    writer) would pair an old manifest with new arrays of the same shapes: refused."""
    old = Holder()
    save(old, tmp_path / "h", "test")
    manifest = (tmp_path / "h.json").read_bytes()
    new = Holder()
    new.dense = new.dense + 1
    save(new, tmp_path / "h", "test")
    (tmp_path / "h.json").write_bytes(manifest)
    with pytest.raises(ArtifactError, match=r"h\.npz is not the file this manifest was saved"):
        load(tmp_path / "h", "test")


def test_a_stem_with_dots_keeps_its_own_files(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "model.v1", "test")
    save(Holder(), tmp_path / "model.v2", "test")
    assert (tmp_path / "model.v1.json").is_file() and (tmp_path / "model.v2.json").is_file()
    assert load(tmp_path / "model.v1", "test").count == 7


def test_no_pickle_anywhere(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "h", "test")
    with zipfile.ZipFile(tmp_path / "h.npz") as zf:
        for name in zf.namelist():
            header = zf.read(name)[:128]
            assert b"'descr': '|O'" not in header, name  # no object arrays
    with pytest.raises(TypeError, match="object arrays"):
        holder = Holder()
        holder.dense = np.array([{"a": 1}], dtype=object)
        save(holder, tmp_path / "bad", "test")


def test_an_undeclared_type_cannot_be_saved(tmp_path: Path) -> None:
    holder = Holder()
    holder.items = [object()]
    with pytest.raises(TypeError, match=r"root\.items\.0: cannot save a builtins:object"):
        save(holder, tmp_path / "h", "test")


def _manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "h", "test")
    m = _manifest(tmp_path / "h.json")
    m["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "h.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"h\.json: format version \d+.*rerun the stage"):
        load(tmp_path / "h", "test")


def test_a_shape_or_dtype_mismatch_names_the_file_and_key(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "h", "test")
    m = _manifest(tmp_path / "h.json")
    m["root"]["state"]["dense"]["shape"] = [4, 3]
    (tmp_path / "h.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"h\.json: key root\.dense: array of shape \[3, 4\]"):
        load(tmp_path / "h", "test")


def test_missing_parts_name_what_is_missing(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "h", "test")
    (tmp_path / "h.table.parquet").unlink()
    with pytest.raises(ArtifactError, match=r"h\.json: file .*h\.table\.parquet missing"):
        load(tmp_path / "h", "test")
    (tmp_path / "h.npz").unlink()
    with pytest.raises(ArtifactError, match=r"h\.json: file .*h\.npz missing"):
        load(tmp_path / "h", "test")
    with pytest.raises(ArtifactError, match=r"nothing\.json: saved model not found"):
        load(tmp_path / "nothing")


def _rewrite(path: Path, edit) -> None:
    """Change a saved manifest and keep it consistent with its files (as an attacker or a
    hand edit could)."""
    m = _manifest(path)
    edit(m)
    path.write_text(json.dumps(m))


def test_a_sparse_matrix_with_indices_out_of_its_shape_is_refused(tmp_path: Path) -> None:
    """Regression (review): scipy read or wrote out of bounds for a crafted shape."""
    save(Holder(), tmp_path / "h", "test")
    _rewrite(tmp_path / "h.json", lambda m: m["root"]["state"]["csr"].update(shape=[4, 1]))
    with pytest.raises(ArtifactError, match=r"key root\.csr: inconsistent sparse matrix"):
        load(tmp_path / "h", "test")


def test_sparse_families_and_index_dtypes_survive(tmp_path: Path) -> None:
    holder = Holder()
    holder.coo = sp.coo_array(np.eye(3))
    holder.wide = sp.csr_matrix(np.eye(3))
    holder.wide.indices = holder.wide.indices.astype(np.int64)
    holder.wide.indptr = holder.wide.indptr.astype(np.int64)
    save(holder, tmp_path / "h", "test")
    got = load(tmp_path / "h", "test")
    assert type(got.coo) is sp.csr_array  # an array stays an array
    assert got.wide.indices.dtype == np.int64 and got.wide.indptr.dtype == np.int64


def test_names_that_collide_are_refused(tmp_path: Path) -> None:
    holder = Holder()
    holder.vocab = {"a.b": np.ones(1), "a": {"b": np.zeros(1)}}
    with pytest.raises(TypeError, match=r"root\.vocab\.a\.b: two parts of the state"):
        save(holder, tmp_path / "h", "test")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["root"]["state"]["plain"].update(float="abc"),
        lambda m: m["root"]["state"]["dense"].pop("shape"),
        lambda m: m["root"].update(state=[]),
        lambda m: m["root"]["state"]["config"].update(value={"size": "big"}),
    ],
    ids=["bad float", "array without shape", "state not a mapping", "invalid config"],
)
def test_a_malformed_manifest_names_file_and_key(tmp_path: Path, edit) -> None:
    save(Holder(), tmp_path / "h", "test")
    _rewrite(tmp_path / "h.json", edit)
    with pytest.raises(ArtifactError, match=r"h\.json: key root"):
        load(tmp_path / "h", "test")


def test_a_type_the_file_names_is_never_imported(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "h", "test")
    m = _manifest(tmp_path / "h.json")
    m["root"]["object"] = "os:system"
    (tmp_path / "h.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="unknown type 'os:system'"):
        load(tmp_path / "h", "test")


def test_kind_and_garbage_are_refused(tmp_path: Path) -> None:
    save(Holder(), tmp_path / "h", "test")
    with pytest.raises(ArtifactError, match="holds 'test', expected 'model:als'"):
        load(tmp_path / "h", "model:als")
    (tmp_path / "g.json").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ArtifactError, match=r"g\.json: not a readable manifest"):
        load(tmp_path / "g")


def test_model_state_is_checked_after_loading(tmp_path: Path) -> None:
    model = Popularity(PopularityConfig(), seed=0).fit(block_data())
    save_model(model, tmp_path)
    m = _manifest(tmp_path / "model.json")
    assert m["kind"] == "model:popularity"
    m["root"]["state"]["n_users"] = 3
    (tmp_path / "model.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="seen matrix of shape"):
        load_model(tmp_path)
    m["kind"] = "model:nosuch"
    (tmp_path / "model.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="unknown model 'nosuch'"):
        load_model(tmp_path)


def test_optional_model_needs_its_meta_to_say_disabled(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="model file not found"):
        load_optional_model(tmp_path)
    (tmp_path / "meta.json").write_text('{"enabled": false}')
    assert load_optional_model(tmp_path) is None


def test_a_model_file_must_hold_the_class_its_kind_names(tmp_path: Path) -> None:
    model = Popularity(PopularityConfig(), seed=0).fit(block_data())
    save_model(model, tmp_path)
    _rewrite(tmp_path / "model.json", lambda m: m.update(kind="model:ease"))
    with pytest.raises(ArtifactError, match="holds a Popularity, its kind 'model:ease' says EASE"):
        load_model(tmp_path)
