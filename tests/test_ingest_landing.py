"""Events flow back: ``data=files`` ingest reads the service's landing folder after the
interactions file and drops every interaction of the users on the deletion list; a bad
line stops ingest with the file and the line. The files are written by the service's own
writers (``recpipe.serving.events``), so the two sides agree on the format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recpipe.serving.events import DeletionList, EventLog, EventRecord
from stages import ingest

CSV = "user,item,kind,when\nA,x,purchase,100\nA,y,view,200\nB,x,click,300\nC,z,view,400\n"


def run(tmp_path: Path, **extra) -> tuple[int, Path]:
    (tmp_path / "inter.csv").write_text(CSV)
    (tmp_path / "users.csv").write_text("user_id,age\nA,30\nB,40\nC,50\n")
    cfg = {
        "source": "files",
        "dep": str(tmp_path),
        "interactions": str(tmp_path / "inter.csv"),
        "users": str(tmp_path / "users.csv"),
        "columns": {"user": "user", "item": "item", "event": "kind", "timestamp": "when"},
        "landing": str(tmp_path / "events"),
        "deletions": str(tmp_path / "deletions.jsonl"),
        **extra,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": cfg, "seed": 1}))
    out = tmp_path / "prepared"
    rc = ingest.main(
        [
            "--out",
            str(out),
            "--summary",
            str(tmp_path / "s.json"),
            "--params",
            str(tmp_path / "params.yaml"),
        ]
    )
    return rc, out


def test_no_landing_folder_and_no_deletion_list_change_nothing(tmp_path: Path) -> None:
    rc, out = run(tmp_path)
    assert rc == 0
    assert len(pd.read_parquet(out / "interactions.parquet")) == 4


def test_landed_events_come_after_the_file_in_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events", rotate_bytes=1024, fsync=False)
    for k in range(40):  # several rotated files
        log.append(EventRecord("D" if k % 2 else "A", f"n{k}", "view", 1_000 + k))
    log.append(EventRecord("A", "x", "purchase", 2_000, 4.5))
    log.close()
    assert len(list((tmp_path / "events").glob("events-*.jsonl"))) > 1
    rc, out = run(tmp_path)
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    assert len(inter) == 4 + 41
    # the ingest keeps the file's rows first, then the landed ones in the order written
    new = inter[inter["timestamp"] >= 1_000].sort_values("timestamp")
    assert new["item_id"].tolist()[:3] == ["n0", "n1", "n2"]
    last = inter[inter["timestamp"] == 2_000].iloc[0]
    assert last["event"] == "purchase" and last["weight"] == 8.0 and last["rating"] == 4.5
    users = pd.read_parquet(out / "users.parquet")
    assert "D" in set(users["user_id"])  # a user only the service saw


def test_erased_users_lose_every_interaction_and_their_row(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events", fsync=False)
    log.append(EventRecord("B", "y", "view", 500))
    log.append(EventRecord("C", "y", "view", 600))
    log.close()
    deletions = DeletionList(tmp_path / "deletions.jsonl", fsync=False)
    deletions.append("B")
    deletions.append("B")  # twice is the same
    rc, out = run(tmp_path)
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    users = pd.read_parquet(out / "users.parquet")
    assert "B" not in set(inter["user_id"]) and "B" not in set(users["user_id"])
    assert len(inter) == 4 - 1 + 1  # B's file row and landed row gone, C's landed row kept


def test_null_landing_and_deletions_read_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events", fsync=False)
    log.append(EventRecord("A", "q", "view", 900))
    log.close()
    DeletionList(tmp_path / "deletions.jsonl", fsync=False).append("A")
    rc, out = run(tmp_path, landing=None, deletions=None)
    assert rc == 0
    inter = pd.read_parquet(out / "interactions.parquet")
    assert len(inter) == 4 and "q" not in set(inter["item_id"])


BAD_LINES = [
    ("{not json}\n", r"events-1\.jsonl, line 2: not a JSON object"),
    (
        '{"user_id": "A", "item_id": "x", "event": "teleport", "timestamp": 5}\n',
        r"events-1\.jsonl, line 2, column 'event': unknown event type 'teleport'",
    ),
    (
        '{"user_id": "", "item_id": "x", "event": "view", "timestamp": 5}\n',
        r"line 2, column 'user_id': null or empty id",
    ),
    (
        '{"user_id": "A", "item_id": "x", "event": "view", "timestamp": "soon"}\n',
        r"line 2, column 'timestamp': timestamp 'soon' is not unix seconds",
    ),
    (
        '{"user_id": "A", "item_id": "x", "event": "view", "timestamp": 5, "rating": "ok"}\n',
        r"line 2, column 'rating': rating 'ok' is not a number",
    ),
    ('{"user_id": "A", "item_id": "x", "ev', r"line 2: not a JSON object: .*cut short"),
    ("[1, 2]\n", r"line 2: not a JSON object"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_a_bad_landed_line_names_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, line: str, message: str
) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    good = json.dumps({"user_id": "A", "item_id": "x", "event": "view", "timestamp": 5})
    (folder / "events-1.jsonl").write_text(good + "\n" + line)
    rc, out = run(tmp_path)
    assert rc == 2 and not out.exists()
    assert re.search(message, caplog.text), caplog.text


def test_a_bad_deletion_line_names_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "deletions.jsonl").write_text('{"user_id": "A"}\n{"user": "B"}\n')
    rc, _ = run(tmp_path)
    assert rc == 2
    assert "deletions.jsonl, line 2, column 'user_id': null or empty id" in caplog.text


def test_event_log_rotates_and_survives_an_archived_file(tmp_path: Path) -> None:
    log = EventLog(tmp_path, rotate_bytes=1024, fsync=True)
    log.append(EventRecord("u", "i", "view", 1))
    first = log.path
    first.rename(tmp_path / "archived.jsonl")  # an operator moves it away
    log.append(EventRecord("u", "j", "view", 2))
    assert log.path != first and log.path.read_text().count("\n") == 1
    log.close()


def test_check_warns_about_a_landing_folder_outside_dep(tmp_path: Path) -> None:
    from recpipe.sources.userfiles import FilesConfig, check_paths

    (tmp_path / "dep").mkdir()
    (tmp_path / "dep" / "i.csv").write_text(CSV)
    cfg = FilesConfig(
        dep=str(tmp_path / "dep"),
        interactions=str(tmp_path / "dep" / "i.csv"),
        landing=str(tmp_path / "elsewhere"),
        deletions=str(tmp_path / "dep" / "d.jsonl"),
    )
    warnings = check_paths(cfg)
    assert len(warnings) == 1 and "data.landing" in warnings[0]
