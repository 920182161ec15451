"""The `files` source and the ingest stage: canonical output, and every bad input named
precisely, with the previous outputs left untouched."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recpipe.errors import DataError
from recpipe.schema import finalize
from recpipe.sources.userfiles import read_table
from stages import ingest

GOOD = (
    "user,item,stars,kind,when\n"
    "A,x,5,purchase,2024-01-01T10:00:00Z\n"
    "A,y,3,view,1704103200\n"
    "B,x,4,click,1704106800\n"
)


def run_ingest(tmp_path: Path, data: dict, csv: str | None = None, name: str = "inter.csv"):
    """Write params + input into tmp_path and run the ingest stage there."""
    if csv is not None:
        (tmp_path / name).write_text(csv)
    cfg = {
        "source": "files",
        "dep": str(tmp_path),
        "interactions": str(tmp_path / name),
        "columns": {
            "user": "user",
            "item": "item",
            "rating": "stars",
            "event": "kind",
            "timestamp": "when",
        },
        "min_rating": 1,
        "max_rating": 5,
    }
    cfg.update(data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": cfg, "seed": 1}))
    out = tmp_path / "prepared"
    rc = ingest.main(
        [
            "--out",
            str(out),
            "--summary",
            str(tmp_path / "ingest.json"),
            "--params",
            str(tmp_path / "params.yaml"),
        ]
    )
    return rc, out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_good_file_gives_canonical_tables(tmp_path: Path) -> None:
    rc, out = run_ingest(tmp_path, {}, GOOD)
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    items = pd.read_parquet(out / "items.parquet")
    users = pd.read_parquet(out / "users.parquet")
    assert list(inter.columns[:6]) == [
        "user_id",
        "item_id",
        "rating",
        "event",
        "weight",
        "timestamp",
    ]
    assert len(inter) == 3 and set(inter["user_id"]) == {"A", "B"}
    # ISO and unix timestamps both end as int64 seconds.
    assert inter["timestamp"].tolist() == [1704103200, 1704103200, 1704106800]
    assert sorted(inter["weight"].tolist()) == [1.0, 2.0, 8.0]
    assert items["item_idx"].tolist() == [0, 1] and items["item_id"].tolist() == ["x", "y"]
    assert users["user_idx"].tolist() == [0, 1]
    summary = json.loads((tmp_path / "ingest.json").read_text())
    assert summary["interactions"] == 3 and summary["users"] == 2


def test_ids_stay_as_given(tmp_path: Path) -> None:
    csv = "user,item,stars,kind,when\n007,0042,5,view,1\n7,42,4,view,2\n"
    rc, out = run_ingest(tmp_path, {}, csv)
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    assert set(inter["user_id"]) == {"007", "7"} and set(inter["item_id"]) == {"0042", "42"}


def test_parquet_input_and_no_event_column(tmp_path: Path) -> None:
    df = pd.DataFrame({"user": ["a", "b"], "item": ["p", "q"], "stars": [4.0, 2.0], "when": [5, 6]})
    df.to_parquet(tmp_path / "in.parquet")
    rc, out = run_ingest(
        tmp_path,
        {
            "interactions": str(tmp_path / "in.parquet"),
            "rating_weight": "rating",
            "columns": {"user": "user", "item": "item", "rating": "stars", "timestamp": "when"},
        },
    )
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    assert inter["event"].astype(str).tolist() == ["interaction", "interaction"]
    assert inter["weight"].tolist() == [4.0, 2.0]


BAD_INPUTS = [
    (
        "missing column",
        "user,item,stars,kind\nA,x,5,view\n",
        r"column 'when': missing required column",
    ),
    (
        "null id",
        "user,item,stars,kind,when\nA,x,5,view,1\n,y,5,view,2\n",
        r"column 'user', row 2: null or empty id",
    ),
    (
        "non-numeric rating",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,good,view,2\n",
        r"column 'stars', row 2: rating is not a number: 'good'",
    ),
    (
        "rating out of range",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,2\nB,y,9,view,3\n",
        r"column 'stars', row 3: rating 9.0 outside the allowed range",
    ),
    (
        "null item id",
        "user,item,stars,kind,when\nA,x,5,view,1\nA, ,3,view,2\n",
        r"column 'item', row 2: null or empty id",
    ),
    (
        "missing timestamp",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,2\nB,x,4,view,\n",
        r"column 'when', row 3: missing timestamp",
    ),
    (
        "unparsable timestamp",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,yesterday\n",
        r"column 'when', row 2: unparsable timestamp 'yesterday'",
    ),
    (
        "timestamp overflowing int64",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,1e19\n",
        r"column 'when', row 2: timestamp '1e19' is outside 1900-2300 as auto time",
    ),
    (
        "timestamp of 20 digits",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,99999999999999999999\n",
        r"column 'when', row 2: timestamp '99999999999999999999' is outside 1900-2300",
    ),
    (
        "millisecond epoch read as seconds",
        "user,item,stars,kind,when\nA,x,5,view,1704103200000\n",
        r"row 1: timestamp '1704103200000' is outside 1900-2300 as auto time; it looks like "
        r"milliseconds: set timestamp_format: unix_ms",
    ),
    (
        "unknown event",
        "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,wishlist,2\n",
        r"column 'kind', row 2: unknown event type 'wishlist'",
    ),
    ("empty input", "user,item,stars,kind,when\n", r"input is empty"),
    ("empty file", "", r"input is empty"),
]


@pytest.mark.parametrize(("case", "csv", "message"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_named_and_earlier_outputs_survive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, csv: str, message: str
) -> None:
    rc, out = run_ingest(tmp_path, {}, GOOD)
    assert rc == 0
    before = snapshot(out)
    summary_before = (tmp_path / "ingest.json").read_bytes()
    rc, _ = run_ingest(tmp_path, {}, csv, name="bad.csv")
    assert rc == 2
    text = caplog.text
    assert "bad.csv" in text, text
    assert re.search(message, text), text
    assert snapshot(out) == before
    assert (tmp_path / "ingest.json").read_bytes() == summary_before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"


def assert_rejected_and_outputs_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, data: dict, file: str, message: str
) -> None:
    """A good run, then ``data`` fails naming ``file`` and ``message``; the outputs stay."""
    rc, out = run_ingest(tmp_path, {}, GOOD)
    assert rc == 0
    before = snapshot(out)
    summary_before = (tmp_path / "ingest.json").read_bytes()
    caplog.clear()
    rc, _ = run_ingest(tmp_path, data)
    assert rc == 2
    text = caplog.text
    assert f"file {tmp_path / file}" in text, text
    assert re.search(message, text), text
    assert snapshot(out) == before
    assert (tmp_path / "ingest.json").read_bytes() == summary_before
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"


ITEM_COLUMNS = {"item": "id", "title": "name"}

# (case, items or users, file text, message). The items file's id column is `id` and the
# users file's `uid`, so a message naming the canonical column instead would not match.
BAD_SIDE_FILES = [
    (
        "duplicate item id",
        "items",
        "id,name\nx,Ex\ny,Why\nx,Again\n",
        r"column 'id', row 3: duplicate item id 'x' \(first on row 1\)",
    ),
    ("null item id", "items", "id,name\nx,Ex\n,Why\n", r"column 'id', row 2: null or empty id"),
    ("missing item id column", "items", "name\nEx\n", r"column 'id': missing required column"),
    ("empty items", "items", "id,name\n", r"items.csv: input is empty: no data rows"),
    ("empty items file", "items", "", r"items.csv: input is empty"),
    (
        "duplicate user id",
        "users",
        "uid,age\nA,30\nB,40\nA,50\n",
        r"column 'uid', row 3: duplicate user id 'A' \(first on row 1\)",
    ),
    ("null user id", "users", "uid,age\nA,30\n ,40\n", r"column 'uid', row 2: null or empty id"),
    ("missing user id column", "users", "age\n30\n", r"column 'uid': missing required column"),
    ("empty users", "users", "uid,age\n", r"users.csv: input is empty: no data rows"),
    ("empty users file", "users", "", r"users.csv: input is empty"),
]


@pytest.mark.parametrize(
    ("case", "table", "text", "message"), BAD_SIDE_FILES, ids=[c[0] for c in BAD_SIDE_FILES]
)
def test_bad_items_or_users_file_is_named_and_earlier_outputs_survive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, table: str, text: str, message: str
) -> None:
    name = f"{table}.csv"
    (tmp_path / name).write_text(text)
    data = {table: str(tmp_path / name), "item_columns": ITEM_COLUMNS, "user_id_column": "uid"}
    assert_rejected_and_outputs_kept(tmp_path, caplog, data, name, message)


# (case, table, column values that replace the good ones, message). Parquet keeps real
# nulls (None), which CSV cannot hold; an empty string is a null id too.
BAD_PARQUET = [
    ("null user id", "interactions", {"user": ["A", None, "B"]}, r"column 'user', row 2: null"),
    ("null item id", "interactions", {"item": ["x", "y", None]}, r"column 'item', row 3: null"),
    ("empty item id", "interactions", {"item": ["", "y", "x"]}, r"column 'item', row 1: null"),
    ("null id in items", "items", {"id": ["x", None]}, r"column 'id', row 2: null or empty id"),
    ("null id in users", "users", {"uid": [None, "B"]}, r"column 'uid', row 1: null or empty id"),
]


@pytest.mark.parametrize(
    ("case", "table", "columns", "message"), BAD_PARQUET, ids=[c[0] for c in BAD_PARQUET]
)
def test_null_ids_in_parquet_are_named_and_earlier_outputs_survive(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    table: str,
    columns: dict[str, list[str | None]],
    message: str,
) -> None:
    good = {
        "interactions": pd.read_csv(io.StringIO(GOOD), dtype=str),
        "items": pd.DataFrame({"id": ["x", "y"], "name": ["Ex", "Why"]}),
        "users": pd.DataFrame({"uid": ["A", "B"]}),
    }
    frame = good[table].assign(**columns)
    name = f"{table}.parquet"
    frame.to_parquet(tmp_path / name)
    data = {table: str(tmp_path / name), "item_columns": ITEM_COLUMNS, "user_id_column": "uid"}
    assert_rejected_and_outputs_kept(tmp_path, caplog, data, name, message)


def test_finalize_names_the_file_of_a_duplicate_id() -> None:
    """Sources other than `files` leave the uniqueness check to finalize: it names the file."""
    inter = pd.DataFrame(
        {
            "user_id": ["A"],
            "item_id": ["x"],
            "rating": [1.0],
            "event": ["view"],
            "weight": [1.0],
            "timestamp": [1],
        }
    )
    items = pd.DataFrame({"item_id": ["x", "x"]})
    with pytest.raises(
        DataError, match=r"^file it.csv, column 'item_id', row 2: duplicate item id 'x'"
    ):
        finalize(inter, items, None, file="in.csv", items_file="it.csv")
    users = pd.DataFrame({"user_id": ["A", "B", "A"]})
    with pytest.raises(
        DataError,
        match=r"^file us.csv, column 'user_id', row 3: duplicate user id 'A' \(first on row 1\)",
    ):
        finalize(inter, None, users, file="in.csv", users_file="us.csv")


def test_missing_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rc, _ = run_ingest(tmp_path, {"interactions": str(tmp_path / "nope.csv")})
    assert rc == 2 and "nope.csv: file not found" in caplog.text


def write_items(tmp_path: Path) -> str:
    (tmp_path / "items.csv").write_text("id,name,genres,price\nx,Ex,a|b,9.5\n")
    return str(tmp_path / "items.csv")


@pytest.mark.parametrize("policy", ["add", "drop", "error"])
def test_items_missing_from_items_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    items = write_items(tmp_path)
    if policy == "error":
        rc, out = run_ingest(tmp_path, {}, GOOD)
        assert rc == 0
        before = snapshot(out)
        summary_before = (tmp_path / "ingest.json").read_bytes()
    rc, out = run_ingest(
        tmp_path,
        {
            "items": items,
            "missing_items": policy,
            "item_columns": {"item": "id", "title": "name", "categories": "genres"},
        },
        GOOD,
    )
    if policy == "error":
        assert rc == 2
        text = caplog.text
        assert f"1 item ids used in {tmp_path / 'inter.csv'} are missing from {items}" in text
        assert "first: 'y'" in text
        assert f"file {tmp_path / 'inter.csv'}, column 'item_id', row 2" in text
        assert snapshot(out) == before
        assert (tmp_path / "ingest.json").read_bytes() == summary_before
        return
    assert rc == 0
    assert "1 item ids used in" in caplog.text and "(1 interactions" in caplog.text
    inter = pd.read_parquet(out / "interactions.parquet")
    it = pd.read_parquet(out / "items.parquet")
    if policy == "add":
        assert len(inter) == 3 and it["item_id"].tolist() == ["x", "y"]
    else:
        assert len(inter) == 2 and it["item_id"].tolist() == ["x"]
    row = it[it["item_id"] == "x"].iloc[0]
    assert row["title"] == "Ex" and list(row["categories"]) == ["a", "b"] and row["price"] == 9.5
    summary = json.loads((tmp_path / "ingest.json").read_text())
    assert len(summary["warnings"]) == 1


@pytest.mark.parametrize(
    ("policy", "n_rows", "weight"),
    [("keep_all", 3, 3.0), ("keep_last", 1, 1.0), ("keep_first", 1, 1.0), ("sum", 1, 3.0)],
)
def test_duplicate_policy(tmp_path: Path, policy: str, n_rows: int, weight: float) -> None:
    csv = "user,item,stars,kind,when\nA,x,2,view,1\nA,x,3,view,5\nA,x,4,view,3\n"
    rc, out = run_ingest(tmp_path, {"duplicates": policy}, csv)
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    assert len(inter) == n_rows and inter["weight"].sum() == weight
    if policy in ("keep_last", "sum"):
        assert inter["rating"].tolist() == [3.0] and inter["timestamp"].tolist() == [5]
    if policy == "keep_first":
        assert inter["rating"].tolist() == [2.0]


def test_unknown_config_key_fails_with_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rc, _ = run_ingest(tmp_path, {"colums": {}}, GOOD)
    assert rc == 2 and "data.colums: unknown key" in caplog.text


@pytest.mark.parametrize("fmt", ["unix", "unix_ms"])
def test_huge_timestamps_are_refused_in_unix_modes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fmt: str
) -> None:
    """Regression: 1e19 became -9223372036854775808 and the run went on."""
    csv = "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,99999999999999999999\n"
    rc, _ = run_ingest(tmp_path, {"timestamp_format": fmt}, csv)
    assert rc == 2
    assert re.search(
        rf"row 2: timestamp '99999999999999999999' is outside 1900-2300 as {fmt}", caplog.text
    )


@pytest.mark.parametrize(
    "dtype", ["datetime64[ns, UTC]", "datetime64[us, UTC]", "datetime64[ns]", "datetime64[ms]"]
)
def test_parquet_datetime_columns_are_read_as_dates(tmp_path: Path, dtype: str) -> None:
    """Regression: in auto mode a Parquet timestamp column was read as raw ticks (2023-01-01
    became 1672533100000000000 "seconds"); naive datetimes are taken as UTC."""
    when = pd.Series(pd.to_datetime(["2023-01-01 00:00:00", "2023-01-02 12:30:05"]))
    when = when.dt.tz_localize("UTC") if "UTC" in dtype else when
    df = pd.DataFrame({"user": ["a", "b"], "item": ["p", "q"], "stars": [4.0, 2.0]})
    df["when"] = when.astype(dtype)
    df.to_parquet(tmp_path / "in.parquet")
    rc, out = run_ingest(
        tmp_path,
        {
            "interactions": str(tmp_path / "in.parquet"),
            "columns": {"user": "user", "item": "item", "rating": "stars", "timestamp": "when"},
        },
    )
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet").sort_values("user_id")
    assert inter["timestamp"].tolist() == [1672531200, 1672662605]


def test_drop_of_every_interaction_says_the_ids_do_not_match(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: missing_items=drop with no matching id failed with "input is empty: no
    data rows" about a file full of rows; the real cause was never said."""
    (tmp_path / "items.csv").write_text("id,name\nP1,Ex\nP2,Why\n")
    rc, _ = run_ingest(
        tmp_path,
        {
            "items": str(tmp_path / "items.csv"),
            "missing_items": "drop",
            "item_columns": {"item": "id", "title": "name"},
        },
        GOOD,
    )
    assert rc == 2
    assert (
        f"file {tmp_path / 'inter.csv'}, column 'item_id': none of the 3 interactions has an "
        f"item id of {tmp_path / 'items.csv'} (first: 'x')"
    ) in caplog.text
    assert "input is empty" not in caplog.text


def test_a_date_out_of_range_gets_no_milliseconds_hint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    csv = "user,item,stars,kind,when\nA,x,5,view,1\nA,y,3,view,1850-01-01\n"
    rc, _ = run_ingest(tmp_path, {}, csv)
    assert rc == 2
    assert "row 2: timestamp '1850-01-01' is outside 1900-2300 as a date" in caplog.text
    assert "unix_ms" not in caplog.text


def test_a_parquet_file_with_a_stored_index_names_the_row_by_position(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression (review): a stored index [0, 5, 9] turned the row lookup into an
    IndexError traceback."""
    df = pd.DataFrame(
        {"user": ["a", "b", "c"], "item": ["p", "q", "r"], "stars": [4.0, 2.0, 3.0]},
        index=[0, 5, 9],
    )
    df["when"] = [5, 6, 1704103200000]
    df.to_parquet(tmp_path / "in.parquet")  # keeps the index
    rc, _ = run_ingest(
        tmp_path,
        {
            "interactions": str(tmp_path / "in.parquet"),
            "columns": {"user": "user", "item": "item", "rating": "stars", "timestamp": "when"},
        },
    )
    assert rc == 2
    assert "row 3: timestamp 1704103200000 is outside 1900-2300 as auto time" in caplog.text


def test_the_file_type_is_recognised_in_any_case(tmp_path: Path) -> None:
    """Regression: events.CSV was refused as an unsupported type."""
    rc, out = run_ingest(tmp_path, {}, GOOD, name="events.CSV")
    assert rc == 0
    assert len(pd.read_parquet(out / "interactions.parquet")) == 3


def test_spaces_around_ids_are_removed_and_nothing_else(tmp_path: Path) -> None:
    csv = "user,item,stars,kind,when\n 7 ,x,5,view,1\n7,y,3,view,2\n007,x,4,view,3\n"
    rc, out = run_ingest(tmp_path, {}, csv)
    assert rc == 0
    users = pd.read_parquet(out / "users.parquet")["user_id"].tolist()
    assert sorted(users) == ["007", "7"]


LATIN1 = [
    # (case, file bytes, column, data row, line of the byte)
    ("one line per row", b"user,item,stars,kind,when\nA,x,5,view,1\nA,caf\xe9,3,view,2\n", 2, 3),
    (
        "a quoted field over two lines before it",
        b'user,item,stars,kind,when\nA,"x\ny",5,view,1\nB,x,4,view,2\nB,\xe9t\xe9,3,view,3\n',
        3,
        5,
    ),
]


@pytest.mark.parametrize(("case", "data", "row", "line"), LATIN1, ids=[c[0] for c in LATIN1])
def test_a_latin1_byte_is_named_by_column_row_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, data: bytes, row: int, line: int
) -> None:
    """Regression: a latin-1 file failed with "'utf-8' codec can't decode byte 0xe9 in
    position 3", an offset inside one of pandas' read buffers that finds nothing."""
    rc, out = run_ingest(tmp_path, {}, GOOD)
    assert rc == 0
    before = snapshot(out)
    summary_before = (tmp_path / "ingest.json").read_bytes()
    (tmp_path / "bad.csv").write_bytes(data)
    caplog.clear()
    rc, _ = run_ingest(tmp_path, {}, name="bad.csv")
    assert rc == 2
    assert (
        f"file {tmp_path / 'bad.csv'}, column 'item', row {row}: not UTF-8 text: byte 0xe9 on "
        f"line {line}; save the file as UTF-8"
    ) in caplog.text, caplog.text
    assert "position" not in caplog.text
    assert snapshot(out) == before
    assert (tmp_path / "ingest.json").read_bytes() == summary_before


def test_a_latin1_header_or_tsv_gz_is_named(tmp_path: Path) -> None:
    head = tmp_path / "head.csv"
    head.write_bytes(b"user,it\xe9m,when\nA,x,1\n")
    with pytest.raises(DataError, match=r"head.csv: header: not UTF-8 text: byte 0xe9 on line 1"):
        read_table(head)
    packed = tmp_path / "events.tsv.gz"
    packed.write_bytes(gzip.compress(b"user\titem\twhen\nA\tx\t1\nB\ty\t2\nC\t\xfc\t3\n"))
    with pytest.raises(
        DataError, match=r"column 'item', row 3: not UTF-8 text: byte 0xfc on line 4"
    ):
        read_table(packed)
