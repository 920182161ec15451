"""The MovieLens source: every variant's exact layout read from a folder and from a zip, bad
rows named by file/column/row, and the verified download. All data here is tiny and fake,
written in each release's format and encoding; the real files are never used."""

from __future__ import annotations

import hashlib
import io
import math
import re
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recpipe.config import parse
from recpipe.errors import ConfigError, DataError
from recpipe.schema import RawTables, finalize
from recpipe.sources.movielens import ratings as ml_ratings
from recpipe.sources.movielens.download import CHECKSUMS, Checksum
from recpipe.sources.movielens.items import GENRES_100K
from recpipe.sources.movielens.loader import MovieLensConfig, load_movielens, rating_range
from recpipe.sources.movielens.variants import LAYOUTS
from stages import ingest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["100k", "1m", "10m", "20m", "25m", "latest-small"]
INNER = {
    "100k": "ml-100k",
    "1m": "ml-1m",
    "10m": "ml-10M100K",
    "20m": "ml-20m",
    "25m": "ml-25m",
    "latest-small": "ml-latest-small",
}
FAMILY = {v: "100k" if v == "100k" else "dat" if v in ("1m", "10m") else "csv" for v in VARIANTS}
RATINGS_FILE = {"100k": "u.data", "dat": "ratings.dat", "csv": "ratings.csv"}
USER_COLUMN = {"100k": "user_id", "dat": "UserID", "csv": "userId"}
ITEM_COLUMN = {"100k": "item_id", "dat": "MovieID", "csv": "movieId"}
RATING_COLUMN = {"100k": "rating", "dat": "Rating", "csv": "rating"}
TIME_COLUMN = {"100k": "timestamp", "dat": "Timestamp", "csv": "timestamp"}

# (user, item, rating, timestamp); whole stars where the variant has only those.
RATINGS = {
    "whole": [
        ("1", "10", "5", "881250949"),
        ("1", "20", "3", "881250950"),
        ("2", "10", "4", "881250951"),
        ("3", "30", "1", "881250952"),
        ("3", "40", "2", "881250953"),
    ],
    "half": [
        ("1", "10", "5.0", "1112486027"),
        ("1", "20", "3.5", "1112484676"),
        ("2", "10", "4.0", "1112484819"),
        ("3", "30", "0.5", "1112484727"),
        ("3", "40", "2.5", "1112484580"),
    ],
}


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES_100K)


def ratings_text(variant: str, rows: list[tuple[str, ...]]) -> str:
    family = FAMILY[variant]
    if family == "100k":
        return "".join("\t".join(r) + "\n" for r in rows)
    if family == "dat":
        return "".join("::".join(r) + "\n" for r in rows)
    return "userId,movieId,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in rows)


def fake_files(variant: str, rows: list[tuple[str, ...]] | None = None) -> dict[str, bytes]:
    """A tiny copy of ``variant`` in its exact file layout and encoding."""
    family = FAMILY[variant]
    if rows is None:
        rows = RATINGS["whole" if variant in ("100k", "1m") else "half"]
    files = {RATINGS_FILE[family]: ratings_text(variant, rows).encode("ascii")}
    if family == "100k":
        url = "http://us.imdb.com/M/title-exact?x"
        toy = _flags("Animation", "Children's", "Comedy")
        items = [
            f"10|Toy Story (1995)|01-Jan-1995||{url}|{toy}",
            f"20|Misérables, Les (1995)|01-Jan-1995||{url}|{_flags('Drama', 'Musical')}",
            f"30|unknown||||{_flags('unknown')}",
            f"40|Nameless|01-Jan-1997||{url}|{_flags('Drama')}",
            f"50|Never Rated (1990)|01-Jan-1990||{url}|{_flags('War')}",
        ]
        files["u.item"] = "".join(x + "\n" for x in items).encode("latin-1")
        genre = "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)) + "\n"
        files["u.genre"] = genre.encode("ascii")
        users = ["1|24|M|technician|85711", "2|53|F|other|94043", "3|23|M|writer|T8H1N"]
        files["u.user"] = "".join(x + "\n" for x in users).encode("ascii")
    elif variant == "1m":
        movies = [
            "10::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi",
            '20::"Great Performances" Cats (1998)::Musical',
            "30::Trailing Colon:::Comedy",  # "::" after a title ending in ":"
            "40::Toy Story (1995)::Animation|Children's|Comedy",
        ]
        files["movies.dat"] = "".join(x + "\n" for x in movies).encode("latin-1")
        users = ["1::F::1::10::48067", "2::M::56::16::70072", "3::M::25::15::55117"]
        files["users.dat"] = "".join(x + "\n" for x in users).encode("ascii")
    elif variant == "10m":
        movies = [
            "10::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance",
            "20::Toy Story (1995)::Adventure|Animation|IMAX",
            "30::Pull My Daisy (1958)::(no genres listed)",
            "40::Heat (1995)::Action|Crime|Thriller",
        ]
        files["movies.dat"] = "".join(x + "\n" for x in movies).encode("utf-8")
        tags = [
            "15::10::Paris::1215184630",
            "20::10::paris::1215184631",  # the same tag in other case: once in the text
            "20::10::quirky::1215184632",
            "21::20::pixar::1215184633",
            "22::40::   ::1215184634",  # blank tag: ignored
        ]
        files["tags.dat"] = "".join(x + "\n" for x in tags).encode("utf-8")
    else:
        movies = (
            "movieId,title,genres\n"
            '10,"American President, The (1995)",Comedy|Drama|Romance\n'
            "20,Toy Story (1995),Adventure|Animation\n"
            "30,Babylon 5,(no genres listed)\n"
            '40,"Fawlty Towers (1975-1979)",Comedy\n'
            "50,Señorita (2020) ,Drama\n"
        )
        files["movies.csv"] = movies.encode("utf-8")
        tags = (
            "userId,movieId,tag,timestamp\n"
            '15,10,"funny, smart",1445714994\n'
            '15,10,"Funny, Smart",1445714995\n'  # the same tag in other case: once in text
            "16,20,pixar,1445714996\n"
            "16,10,funny smart,1445714997\n"
        )
        files["tags.csv"] = tags.encode("utf-8")
    return files


def write_copy(tmp: Path, variant: str, files: dict[str, bytes], as_zip: bool) -> Path:
    """Write the files as the official zip (with its inner folder) or as that folder."""
    inner = INNER[variant]
    tmp.mkdir(parents=True, exist_ok=True)
    if as_zip:
        target = tmp / f"{LAYOUTS[variant].name}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{inner}/", "")
            for name, data in files.items():
                zf.writestr(f"{inner}/{name}", data)
        return target
    folder = tmp / inner
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def load(path: Path, variant: str, **cfg: object) -> RawTables:
    settings = {"check_rows": False, **cfg}  # the copies here are tiny
    return load_movielens(MovieLensConfig(variant=variant, path=str(path), **settings), path.parent)


def by_id(df: pd.DataFrame, key: str) -> dict[str, dict]:
    return {r[key]: r for r in df.to_dict("records")}


# --------------------------------------------------------------------------- every variant


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_layout_is_read_exactly(tmp_path: Path, variant: str, as_zip: bool) -> None:
    path = write_copy(tmp_path, variant, fake_files(variant), as_zip)
    raw = load(path, variant)
    inter = raw.interactions
    rows = RATINGS["whole" if variant in ("100k", "1m") else "half"]

    assert list(inter.columns) == ["user_id", "item_id", "rating", "event", "weight", "timestamp"]
    assert len(inter) == 5
    assert inter["user_id"].tolist() == [r[0] for r in rows]
    assert inter["item_id"].tolist() == [r[1] for r in rows]
    assert inter["rating"].tolist() == [float(r[2]) for r in rows]
    assert inter["timestamp"].tolist() == [int(r[3]) for r in rows]
    assert inter["timestamp"].dtype == "int64"
    assert set(inter["event"]) == {"rating"} and set(inter["weight"]) == {1.0}
    assert all(isinstance(x, str) for x in inter["user_id"])
    assert INNER[variant] + "/" + RATINGS_FILE[FAMILY[variant]] in raw.interactions_file

    items = by_id(raw.items, "item_id")
    users = by_id(raw.users, "user_id") if raw.users is not None else None
    if variant == "100k":
        assert set(items) == {"10", "20", "30", "40", "50"}  # unrated items are kept
        assert items["10"]["categories"] == ["Animation", "Children's", "Comedy"]
        assert items["10"]["text"] == "Toy Story (1995) Animation Children's Comedy"
        assert items["20"]["title"] == "Misérables, Les (1995)"  # latin-1 decoded
        assert items["30"]["categories"] == [] and math.isnan(items["30"]["year"])
        assert items["40"]["year"] == 1997.0  # from the release date: no year in the title
        assert items["10"]["year"] == 1995.0
        assert users is not None and set(users) == {"1", "2", "3"}
        assert users["3"] == {
            "user_id": "3", "age": 23, "gender": "M", "occupation": "writer", "zip": "T8H1N"
        }  # fmt: skip
    elif variant == "1m":
        assert items["10"]["title"] == "Cité des enfants perdus, La (1995)"
        assert items["10"]["categories"] == ["Adventure", "Sci-Fi"]
        assert items["20"]["title"] == '"Great Performances" Cats (1998)'
        assert items["30"]["title"] == "Trailing Colon:"
        assert items["30"]["categories"] == ["Comedy"] and math.isnan(items["30"]["year"])
        assert users is not None
        assert users["1"] == {
            "user_id": "1", "age": 1, "gender": "F", "occupation": "K-12 student", "zip": "48067"
        }  # fmt: skip
        assert users["2"]["occupation"] == "self-employed" and users["2"]["age"] == 56
    elif variant == "10m":
        assert items["10"]["title"].startswith("Amélie")  # UTF-8 decoded
        assert items["10"]["year"] == 2001.0
        assert items["10"]["text"].endswith("Comedy Romance Paris, quirky")
        assert items["20"]["categories"] == ["Adventure", "Animation", "IMAX"]
        assert items["20"]["text"] == "Toy Story (1995) Adventure Animation IMAX pixar"
        assert items["30"]["categories"] == []  # "(no genres listed)" is no category
        assert items["40"]["text"] == "Heat (1995) Action Crime Thriller"
        assert users is None
    else:
        assert items["10"]["title"] == "American President, The (1995)"
        assert items["10"]["text"] == (
            "American President, The (1995) Comedy Drama Romance funny, smart, funny smart"
        )
        assert items["20"]["text"] == "Toy Story (1995) Adventure Animation pixar"
        assert items["30"]["categories"] == [] and math.isnan(items["30"]["year"])
        assert items["40"]["year"] == 1975.0
        assert items["50"]["title"] == "Señorita (2020)" and items["50"]["year"] == 2020.0
        assert users is None

    # The tables go through the canonical contract without complaint.
    inter_c, items_c, users_c, warnings = finalize(
        raw.interactions, raw.items, raw.users, file=raw.interactions_file
    )
    assert warnings == [] and len(inter_c) == 5 and len(users_c) == 3


@pytest.mark.parametrize("variant", ["100k", "10m", "20m"])
def test_parent_folder_and_folder_holding_the_zip_are_accepted(
    tmp_path: Path, variant: str
) -> None:
    write_copy(tmp_path / "a", variant, fake_files(variant), as_zip=False)
    assert len(load(tmp_path / "a", variant).interactions) == 5  # parent of ml-*/
    write_copy(tmp_path / "b", variant, fake_files(variant), as_zip=True)
    assert len(load(tmp_path / "b", variant).interactions) == 5  # folder holding ml-*.zip


@pytest.mark.parametrize("variant", ["100k", "1m", "20m"])
def test_fast_and_checked_readers_agree(
    tmp_path: Path, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunked text reader (used to locate errors) gives exactly the fast reader's table,
    whether a chunk converts directly or goes through the schema helpers ("5.0" ids)."""
    path = write_copy(tmp_path, variant, fake_files(variant), as_zip=False)
    fast = load(path, variant).interactions
    monkeypatch.setattr(ml_ratings, "_ratings_fast", lambda *a: None)
    monkeypatch.setattr(ml_ratings, "_CHUNK_ROWS", 2)
    pd.testing.assert_frame_equal(fast, load(path, variant).interactions)
    rows = [
        (u, i + ".0", r, t)
        for u, i, r, t in RATINGS["whole" if variant in ("100k", "1m") else "half"]
    ]
    path = write_copy(tmp_path / "float-ids", variant, fake_files(variant, rows), as_zip=False)
    pd.testing.assert_frame_equal(fast, load(path, variant).interactions)


def test_weight_rating_and_rating_range_override(tmp_path: Path) -> None:
    path = write_copy(tmp_path, "20m", fake_files("20m"), as_zip=False)
    raw = load(path, "20m", weight="rating")
    assert raw.interactions["weight"].tolist() == raw.interactions["rating"].tolist()
    with pytest.raises(DataError, match=r"column 'rating', row 1: rating 5.0 outside"):
        load(path, "20m", max_rating=4.5)


# --------------------------------------------------------------------------- bad inputs


def _bad_rows(variant: str, row: int, column: int, value: str) -> list[tuple[str, ...]]:
    rows = [list(r) for r in RATINGS["whole" if variant in ("100k", "1m") else "half"]]
    rows[row - 1][column] = value
    return [tuple(r) for r in rows]


# (row, field, value, message, column names): an empty field is a null cell.
BAD_CASES = {
    "null user id": (2, 0, "", "null or empty id", USER_COLUMN),
    "null item id": (3, 1, "", "null or empty id", ITEM_COLUMN),
    "null rating": (4, 2, "", "missing rating", RATING_COLUMN),
    "missing timestamp": (5, 3, "", "missing timestamp", TIME_COLUMN),
    "non-numeric rating": (2, 2, "good", "rating is not a number: 'good'", RATING_COLUMN),
    "rating out of range": (3, 2, "7", "outside the allowed range", RATING_COLUMN),
    "unparsable timestamp": (4, 3, "yesterday", "unparsable timestamp 'yesterday'", TIME_COLUMN),
}


@pytest.mark.parametrize(
    ("as_zip", "chunk_rows"),
    [(False, None), (True, None), (False, 2)],
    ids=["folder", "zip", "chunked"],
)
@pytest.mark.parametrize("case", list(BAD_CASES))
@pytest.mark.parametrize("variant", VARIANTS)
def test_bad_rating_rows_are_named(
    tmp_path: Path,
    variant: str,
    case: str,
    as_zip: bool,
    chunk_rows: int | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Row numbers are the file's own (data rows, header not counted), also when the text is
    checked in chunks."""
    if chunk_rows:
        monkeypatch.setattr(ml_ratings, "_CHUNK_ROWS", chunk_rows)
    row, column, value, message, columns = BAD_CASES[case]
    files = fake_files(variant, _bad_rows(variant, row, column, value))
    path = write_copy(tmp_path, variant, files, as_zip)
    with pytest.raises(DataError) as err:
        load(path, variant)
    text = str(err.value)
    assert f"{INNER[variant]}/{RATINGS_FILE[FAMILY[variant]]}" in text
    assert f"column '{columns[FAMILY[variant]]}'" in text
    assert f"row {row}:" in text and message in text


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_ratings_file_is_named(tmp_path: Path, variant: str, as_zip: bool) -> None:
    """No bytes at all, and the file with nothing but its header (CSV) or a blank line."""
    family = FAMILY[variant]
    ratings = RATINGS_FILE[family]
    for index, text in enumerate(("", ratings_text(variant, []) or "\n")):
        files = fake_files(variant)
        files[ratings] = text.encode("ascii")
        path = write_copy(tmp_path / str(index), variant, files, as_zip)
        with pytest.raises(DataError) as err:
            load(path, variant)
        assert str(err.value).endswith(f"{INNER[variant]}/{ratings}: input is empty: no data rows")


BAD_1M_RATINGS = [
    ("null item id", _bad_rows("1m", 3, 1, ""), "column 'MovieID', row 3: null or empty id"),
    ("null rating", _bad_rows("1m", 4, 2, ""), "column 'Rating', row 4: missing rating"),
    ("empty ratings file", [], "ratings.dat: input is empty: no data rows"),
]


@pytest.mark.parametrize(
    ("case", "rows", "message"), BAD_1M_RATINGS, ids=[c[0] for c in BAD_1M_RATINGS]
)
def test_bad_ratings_leave_earlier_ingest_outputs_untouched(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    rows: list[tuple[str, ...]],
    message: str,
) -> None:
    def run(path: Path) -> int:
        data = {"source": "movielens", "variant": "1m", "path": str(path), "check_rows": False}
        params = {"data": data, "seed": 1}
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        args = ["--out", str(tmp_path / "prepared"), "--summary", str(tmp_path / "ingest.json")]
        return ingest.main([*args, "--params", str(tmp_path / "params.yaml")])

    assert run(write_copy(tmp_path / "good", "1m", fake_files("1m"), as_zip=False)) == 0
    outputs = [*sorted((tmp_path / "prepared").iterdir()), tmp_path / "ingest.json"]
    before = [p.read_bytes() for p in outputs]
    assert run(write_copy(tmp_path / "bad", "1m", fake_files("1m", rows), as_zip=False)) == 2
    text = caplog.text
    assert f"file {tmp_path / 'bad'}/ml-1m/ratings.dat" in text and message in text, text
    assert [p.read_bytes() for p in outputs] == before
    assert sorted((tmp_path / "prepared").iterdir()) == outputs[:-1]


@pytest.mark.parametrize("variant", ["100k", "1m", "20m"])
def test_null_ids_in_items_and_users_files_are_named(tmp_path: Path, variant: str) -> None:
    """The first field of the second line of the items (and users) file left empty."""
    family = FAMILY[variant]
    movies = {"100k": "u.item", "dat": "movies.dat", "csv": "movies.csv"}[family]
    column = {"100k": "movie id", "dat": "MovieID", "csv": "movieId"}[family]
    targets = [(movies, column)]
    if variant != "20m":
        targets.append(("u.user", "user id") if family == "100k" else ("users.dat", "UserID"))
    for name, col in targets:
        files = fake_files(variant)
        encoding = "utf-8" if family == "csv" else "latin-1"
        lines = files[name].decode(encoding).splitlines()
        index = 2 if family == "csv" else 1  # the second data row, after any header
        lines[index] = re.sub(r"^\d+", "", lines[index])
        files[name] = ("\n".join(lines) + "\n").encode(encoding)
        path = write_copy(tmp_path / name, variant, files, as_zip=False)
        with pytest.raises(DataError) as err:
            load(path, variant)
        assert f"{INNER[variant]}/{name}, column '{col}', row 2: null or empty id" in str(err.value)


@pytest.mark.parametrize("variant", ["100k", "1m", "25m"])
def test_bad_ids_and_short_rows_are_named(tmp_path: Path, variant: str) -> None:
    path = write_copy(tmp_path, variant, fake_files(variant, _bad_rows(variant, 2, 1, "x7")), False)
    with pytest.raises(DataError, match=r"row 2: id is not an integer: 'x7'"):
        load(path, variant)
    rows = RATINGS["whole" if variant in ("100k", "1m") else "half"]
    files = fake_files(variant)
    family = FAMILY[variant]
    sep = {"100k": "\t", "dat": "::", "csv": ","}[family]
    lines = ratings_text(variant, rows).splitlines()
    lines[3 if family == "csv" else 2] = sep.join(rows[2][:3])  # third rating loses its time
    files[RATINGS_FILE[family]] = ("\n".join(lines) + "\n").encode()
    path = write_copy(tmp_path / "short", variant, files, False)
    with pytest.raises(DataError, match="row 3") as err:
        load(path, variant)
    assert RATINGS_FILE[family] in str(err.value)
    # A row with one field too many, first or later in the file.
    for index in (0, 3):
        lines = ratings_text(variant, rows).splitlines()
        row = index + 1
        lines[index + (family == "csv")] += sep + "99"
        files[RATINGS_FILE[family]] = ("\n".join(lines) + "\n").encode()
        path = write_copy(tmp_path / f"long{index}", variant, files, False)
        with pytest.raises(DataError, match=f"row {row}: expected 4 fields .*found 5"):
            load(path, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_missing_files_are_named(tmp_path: Path, variant: str) -> None:
    files = fake_files(variant)
    movies = (
        "u.item"
        if variant == "100k"
        else "movies." + ("dat" if FAMILY[variant] == "dat" else "csv")
    )
    del files[movies]
    for as_zip in (False, True):
        path = write_copy(tmp_path / str(as_zip), variant, files, as_zip)
        with pytest.raises(DataError, match="file not found") as err:
            load(path, variant)
        assert f"{INNER[variant]}/{movies}" in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=RATINGS_FILE[FAMILY[variant]]):
        load(empty, variant)
    with pytest.raises(DataError, match="no such file or folder"):
        load(tmp_path / "nowhere", variant)


def test_bad_item_rows_are_named(tmp_path: Path) -> None:
    files = fake_files("100k")
    lines = files["u.item"].decode("latin-1").splitlines()
    lines[1] = lines[1][:-1] + "x"  # last genre flag of the second item
    files["u.item"] = ("\n".join(lines) + "\n").encode("latin-1")
    path = write_copy(tmp_path, "100k", files, as_zip=True)
    with pytest.raises(DataError, match=r"ml-100k/u.item, column 'Western', row 2: genre flag"):
        load(path, "100k")
    files = fake_files("1m")
    files["movies.dat"] += b"50::No Genres Field\n"
    path = write_copy(tmp_path, "1m", files, as_zip=False)
    with pytest.raises(DataError, match=r"ml-1m/movies.dat, row 5: expected 3 fields"):
        load(path, "1m")


def test_not_a_zip_is_an_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ml-100k.zip"
    bogus.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load(bogus, "100k")


# --------------------------------------------------------------------------- download


def _zip_bytes(variant: str = "100k") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in fake_files(variant).items():
            zf.writestr(f"{INNER[variant]}/{name}", data)
    return buf.getvalue()


def _pin(monkeypatch: pytest.MonkeyPatch, data: bytes, md5: str | None = None) -> None:
    checksum = Checksum(
        len(data), md5 or hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    )
    monkeypatch.setitem(CHECKSUMS, "100k", checksum)


def _serve(monkeypatch: pytest.MonkeyPatch, data: bytes) -> list[str]:
    calls: list[str] = []

    def fake_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(data)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def test_download_is_verified_then_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip_bytes()
    _pin(monkeypatch, data)
    calls = _serve(monkeypatch, data)
    raw_dir = tmp_path / "raw"
    raw = load_movielens(MovieLensConfig(check_rows=False), raw_dir)
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert len(raw.interactions) == 5 and "ml-100k.zip:ml-100k/u.data" in raw.interactions_file
    assert [p.name for p in raw_dir.iterdir()] == ["ml-100k.zip"]
    assert (raw_dir / "ml-100k.zip").read_bytes() == data
    # A second run uses (and re-verifies) the kept zip without downloading.
    load_movielens(MovieLensConfig(check_rows=False), raw_dir)
    assert len(calls) == 1


def test_wrong_checksum_raises_and_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _zip_bytes()
    _pin(monkeypatch, data, md5="0" * 32)
    _serve(monkeypatch, data)
    raw_dir = tmp_path / "raw"
    with pytest.raises(DataError) as err:
        load_movielens(MovieLensConfig(check_rows=False), raw_dir)
    text = str(err.value)
    assert "ml-100k.zip" in text and "checksum mismatch" in text
    assert f"md5 expected {'0' * 32}, actual {hashlib.md5(data).hexdigest()}" in text
    assert list(raw_dir.iterdir()) == []


def test_corrupt_kept_zip_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip_bytes()
    _pin(monkeypatch, data)
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (raw_dir / "ml-100k.zip").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"raw/ml-100k.zip.*checksum mismatch.*delete it"):
        load_movielens(MovieLensConfig(check_rows=False), raw_dir)


def test_offline_download_says_how_to_give_a_local_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float | None = None) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    raw_dir = tmp_path / "raw"
    with pytest.raises(DataError) as err:
        load_movielens(MovieLensConfig(variant="10m", check_rows=False), raw_dir)
    text = str(err.value)
    assert "could not download https://files.grouplens.org/datasets/movielens/ml-10m.zip" in text
    assert "name resolution" in text
    assert "-S data.path=/path/to/ml-10M100K" in text and "ml-10m.zip" in text
    assert list(raw_dir.iterdir()) == []


# --------------------------------------------------------------------------- config


def test_conf_file_holds_the_config_defaults() -> None:
    conf = yaml.safe_load((ROOT / "conf/data/movielens.yaml").read_text())
    assert parse(conf, MovieLensConfig, "data") == MovieLensConfig()
    assert set(conf) == set(MovieLensConfig.model_fields)
    for name, field in MovieLensConfig.model_fields.items():
        assert field.description, f"{name} is undocumented"


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="data.varient: unknown key"):
        parse({"source": "movielens", "varient": "1m"}, MovieLensConfig, "data")
    with pytest.raises(ConfigError, match="data.variant"):
        parse({"variant": "50k"}, MovieLensConfig, "data")
    with pytest.raises(ConfigError, match="min_rating 4.0 is above max_rating 2.0"):
        parse({"min_rating": 4, "max_rating": 2}, MovieLensConfig, "data")
    assert rating_range(MovieLensConfig(variant="1m")) == (1.0, 5.0)
    assert rating_range(MovieLensConfig(variant="25m")) == (0.5, 5.0)
    assert rating_range(MovieLensConfig(min_rating=0)) == (0.0, 5.0)


def test_a_truncated_copy_is_refused_unless_told(tmp_path: Path) -> None:
    """Regression: a u.data cut in half ingested as 50,001 ratings without a word."""
    path = write_copy(tmp_path, "100k", fake_files("100k"), as_zip=False)
    n = len(load(path, "100k").interactions)  # check_rows false: read as it is
    with pytest.raises(
        DataError, match=rf"u\.data: {n} ratings, but the MovieLens 100k release has 100,000"
    ):
        load(path, "100k", check_rows=True)
