"""The dashboard on the tiny pipeline's real outputs (the bundle included): every page
through Streamlit's AppTest (no exception, its tables and charts, choices that change what is
shown, clear messages for missing outputs), then the real server in headless Chromium. One
tiny pipeline copy serves the whole file (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from recpipe.dashboard import data as dashboard_data
from recpipe.dashboard.app import PAGES
from tests.conftest import dvc, reset

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "recpipe" / "dashboard" / "app.py"

# page file -> (dataframes, charts) it shows on the tiny run with the bundle, at least
EXPECTED = {
    "overview.py": (3, 0),
    "experiments.py": (2, 2),
    "metrics.py": (0, 5),
    "embedding_map.py": (1, 1),
    "user_explorer.py": (2, 1),
    "item_explorer.py": (3, 1),
    "dataset.py": (1, 4),
}


@pytest.fixture
def project(tiny_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv(dashboard_data.PROJECT_ENV, str(tiny_repo))
    yield tiny_repo


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def frame(at: AppTest, column: str, nth: int = 0) -> pd.DataFrame:
    """The ``nth`` table of the page that has ``column`` (st.dataframe keeps no key)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) > nth, f"no table with column {column!r} (nth={nth})"
    return found[nth]


def test_e2e_every_page_renders_its_tables_and_charts(project: Path) -> None:
    assert [p[0] for p in PAGES] == list(EXPECTED)
    at = app()
    for page, (n_frames, n_charts) in EXPECTED.items():
        at.switch_page(f"pages/{page}")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.warning and not at.error, (page, [w.value for w in at.warning])
        assert not at.info, (page, [i.value for i in at.info])
        assert len(at.dataframe) >= n_frames, page
        assert len(charts(at)) >= n_charts, page
    # the overview's numbers are those of reports/metrics.json, best marked
    at.switch_page("pages/overview.py").run()
    metrics = json.loads((project / "reports/metrics.json").read_text())
    head = frame(at, "ndcg@10 CI")
    assert head.loc["ranker", "ndcg@10"] == metrics["ranker"]["ndcg@10"]
    assert list(head.index)[-2:] == ["blend", "ranker"]


def test_e2e_overview_against_a_base_revision_shows_the_review(project: Path) -> None:
    at = app("overview.py")
    at.selectbox(key="base").set_value("HEAD").run()
    assert not at.exception
    marks = frame(at, "ndcg@10 vs base")
    # the workspace is the committed baseline: every verdict is "identical"
    assert set(marks.stack()) == {"="}
    assert "ranker" in marks.index


def test_e2e_choosing_a_user_changes_the_lists_and_what_if_reranks(project: Path) -> None:
    at = app("user_explorer.py")
    picker = at.selectbox(key="user")
    first = frame(at, "ranker")
    history = charts(at)[0]
    assert list(first.columns)[-2:] == ["blend", "ranker"] and len(first) == 10
    served = frame(at, "reasons")
    assert len(served) == 10 and served["reasons"].str.len().gt(0).all()
    picker.set_value(picker.options[3]).run()
    assert not at.exception
    assert not frame(at, "ranker").equals(first)
    assert charts(at)[0] != history
    # a "what if" session: the fresh ranking differs from the precomputed one
    add = at.multiselect(key="added")
    add.select(add.options[0]).select(add.options[1]).run()
    assert not at.exception
    fresh = frame(at, "reasons", 1)
    assert len(fresh) > 0 and not fresh["title"].equals(frame(at, "reasons")["title"])
    # a search narrows the picker instead of listing every user
    at.text_input(key="user_query").input("u00").run()
    assert all("u00" in o for o in at.selectbox(key="user").options)


def test_e2e_choosing_an_item_changes_its_neighbours(project: Path) -> None:
    at = app("item_explorer.py")
    cf, content = frame(at, "similarity"), frame(at, "similarity", 1)
    assert len(cf) == 10 and len(content) == 10
    picker = at.selectbox(key="item")
    picker.set_value(picker.options[5]).run()
    assert not at.exception
    assert not frame(at, "similarity").equals(cf) and not frame(at, "similarity", 1).equals(content)
    at.radio(key="neighbour_source").set_value("serving bundle").run()
    assert not at.exception and not at.warning and not at.info
    assert len(frame(at, "similarity")) > 0 and len(frame(at, "similarity", 1)) > 0


def test_e2e_embedding_map_search_highlights_an_item(project: Path) -> None:
    at = app("embedding_map.py")
    names = {t.get("name") for t in charts(at)[0]["data"]}
    assert "selected item" not in names
    items = pd.read_parquet(project / "data/prepared/items.parquet")
    at.text_input(key="item_query").input(str(items["title"].iloc[0])).run()
    assert not at.exception
    names = [t.get("name") for t in charts(at)[0]["data"]]
    assert names[-2:] == ["neighbours", "selected item"]
    assert len(frame(at, "similarity")) == 10
    # filtering by a cluster keeps only that cluster's points
    cluster = at.multiselect(key="clusters")
    cluster.select(cluster.options[0]).run()
    marks = ("neighbours", "selected item")
    kept = [t for t in charts(at)[0]["data"] if t.get("name") not in marks]
    assert [t["name"] for t in kept] == [cluster.options[0]]


def test_e2e_experiments_review_two_runs(project: Path) -> None:
    """A saved experiment whose ranker lost every hit is reviewed as worse than the
    baseline; the workspace, back at the baseline, as identical, and as worse once its
    reports change."""
    try:
        per_user = pd.read_parquet(project / "reports/per_user.parquet")
        per_user.loc[per_user["model"] == "ranker", "ndcg@10"] = 0.0
        per_user.to_parquet(project / "reports/per_user.parquet")
        dvc(project, "exp", "save", "-n", "worse")
        reset(project)  # the workspace: the baseline's files again
        at = app("experiments.py")
        runs = frame(at, "kind")
        assert {"workspace", "worse"} <= set(runs["run"])
        named = ("workspace", "worse")
        base = [o for o in at.selectbox(key="exp_base").options if o not in named][0]
        at.selectbox(key="exp_base").set_value(base)
        at.selectbox(key="exp_head").set_value("worse").run()
        assert not at.exception
        verdicts = frame(at, "verdict").set_index(["model", "metric"])["verdict"]
        assert verdicts[("ranker", "ndcg@10")] == "worse"
        assert verdicts[("als", "ndcg@10")] == "no change (identical)"
        at.selectbox(key="exp_head").set_value("workspace").run()
        assert set(frame(at, "verdict")["verdict"]) == {"no change (identical)"}
        # the workspace's reports rewritten by a run: reviewed again, not served from cache
        per_user.to_parquet(project / "reports/per_user.parquet")
        at.run()
        verdicts = frame(at, "verdict").set_index(["model", "metric"])["verdict"]
        assert verdicts[("ranker", "ndcg@10")] == "worse"
    finally:
        reset(project)
        dvc(project, "exp", "remove", "--all-commits")


def test_e2e_missing_outputs_give_a_message_not_a_traceback(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(dashboard_data.PROJECT_ENV, str(empty))
    at = app()
    for page, *_ in PAGES:
        at.switch_page(f"pages/{page}").run()
        assert not at.exception, page
        texts = " ".join(i.value for i in at.info)
        assert "not found" in texts or "failed" in texts, (page, texts)
    at.switch_page("pages/overview.py").run()
    assert any("run `dvc repro` first" in i.value for i in at.info)

    # the pipeline's outputs without a bundle: the explorers say what they need
    monkeypatch.setenv(dashboard_data.PROJECT_ENV, str(project))
    hidden = project / "models" / "bundle.hidden"
    (project / "models" / "bundle").rename(hidden)
    try:
        at = app("user_explorer.py")
        texts = [i.value for i in at.info]
        assert any("no bundle: the explorer pages need `models/bundle`" in t for t in texts)
        assert len(frame(at, "ranker")) == 10  # the pipeline's lists still shown
    finally:
        hidden.rename(project / "models" / "bundle")


# --------------------------------------------------------------------------- real browser

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BUSY = "[data-testid='stStatusWidget'], [data-testid='stSpinner'], [data-testid='stSkeleton']"
"""What Streamlit shows while a script runs or a cached loader works."""


def settle(driver, timeout: float = 120.0, quiet: float = 1.5) -> None:
    """Wait until the page has shown nothing busy for ``quiet`` seconds: Streamlit shows its
    running indicator only after a short delay, so one idle look is not enough."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < deadline:
        if driver.find_elements(By.CSS_SELECTOR, BUSY):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= quiet:
            return
        time.sleep(0.2)
    raise AssertionError(f"the page still runs after {timeout:.0f} s")


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)
def test_e2e_real_browser_renders_every_page(project: Path, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "recpipe.dashboard", "--project", str(project)]
        + ["--port", str(port), "--address", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.add_argument("--disable-dev-shm-usage")
    driver = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.3)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        wait = WebDriverWait(driver, 60)
        for file, title, _ in PAGES:
            slug = "" if file == PAGES[0][0] else file.removesuffix(".py")
            driver.get(f"http://127.0.0.1:{port}/{slug}")
            wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
            wait.until(lambda d, t=title: t in d.find_element(By.TAG_NAME, "h1").text)
            settle(driver)
            if EXPECTED[file][1]:
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg"))
            shot = tmp_path / f"{file.removesuffix('.py')}.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000, file
            errors = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stException']")
            assert not errors, (file, [e.text for e in errors])
            plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
            assert len(plots) >= EXPECTED[file][1], file
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
        log.close()
