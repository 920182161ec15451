"""End to end: `recpipe serve` as a real process on a free port over the tiny pipeline's
bundle, called over HTTP: a user's list, an event that takes the item out of it at once, a
second bundle (built by the real bundle stage with other settings) swapped in under
concurrent requests with none failing, and a clean stop."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import e2e_env
from tests.serving_helpers import copy_bundle, free_port, tiny_bundle

pytestmark = pytest.mark.e2e


def build_second_bundle(repo: Path, dst: Path, tmp: Path) -> str:
    """The bundle stage's own command (from dvc.yaml) with serve.cache_n=50, into ``dst``."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["serve"]["cache_n"] = 50
    (tmp / "params2.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["bundle"]["cmd"]
    argv = shlex.split(cmd.replace("--out models/bundle", f"--out {dst}"))
    argv[0] = sys.executable
    argv += ["--params", str(tmp / "params2.yaml")]
    subprocess.run(argv, cwd=repo, env=e2e_env(), check=True, capture_output=True)
    return yaml.safe_load((dst / "manifest.json").read_text())["bundle_id"]


def test_e2e_serve_events_and_reload_under_load(serving_repo: Path, tmp_path: Path) -> None:
    live = copy_bundle(tiny_bundle(serving_repo), tmp_path / "live")
    second_id = build_second_bundle(serving_repo, tmp_path / "second", tmp_path)
    port = free_port()
    env = e2e_env() | {"RECPIPE_API_KEY": "k", "PYTHONPATH": str(Path.cwd())}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "recpipe.cli",
            "serve",
            "--bundle",
            str(live),
            "--port",
            str(port),
            "--landing",
            str(tmp_path / "landing"),
            "--deletions",
            str(tmp_path / "del.jsonl"),
            "--reload-interval",
            "0.2",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None, (tmp_path / "server.log").read_text()
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.2)
            first_id = c.get("/v1/version").json()["bundle_id"]
            assert first_id != second_id

            users = pd.read_parquet(live / "users.parquet")["user_id"].tolist()
            user = users[0]
            page = c.get(f"/v1/users/{user}/recommendations", params={"n": 5}).json()
            top = page["items"][0]["item_id"]
            r = c.post(
                "/v1/events",
                json={"user_id": user, "item_id": top, "event": "purchase"},
                headers={"X-API-Key": "k"},
            )
            assert r.status_code == 202, r.text
            after = c.get(f"/v1/users/{user}/recommendations", params={"n": 5}).json()
            assert top not in [i["item_id"] for i in after["items"]] and after["fresh"]
            assert list((tmp_path / "landing").glob("events-*.jsonl"))

            # concurrent clients while the second bundle replaces the first on disk
            failures: list[str] = []
            seen_ids: set[str] = set()
            stop = threading.Event()

            def hammer(k: int) -> None:
                paths = [
                    f"/v1/users/{users[k % len(users)]}/recommendations",
                    "/v1/popular",
                    f"/v1/users/stranger-{k}/recommendations",
                ]
                with httpx.Client(base_url=base, timeout=30) as hc:
                    j = 0
                    while not stop.is_set():
                        resp = hc.get(paths[j % len(paths)])
                        j += 1
                        if resp.status_code != 200:
                            failures.append(f"{resp.status_code} {resp.text[:200]}")
                        else:
                            seen_ids.add(resp.json()["bundle_id"])

            threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            live.rename(tmp_path / "old")
            (tmp_path / "second").rename(live)
            deadline = time.monotonic() + 60
            while c.get("/readyz").json()["bundle_id"] != second_id:
                assert time.monotonic() < deadline, "the second bundle was not swapped in"
                time.sleep(0.1)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join()
            assert not failures, failures[:5]
            assert {first_id, second_id} <= seen_ids
            metrics = c.get("/metrics").text
            assert f'recpipe_bundle_info{{bundle_id="{second_id}"}} 1.0' in metrics
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
            log.close()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    text = (tmp_path / "server.log").read_text()
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in text, text
    assert not (tmp_path / "del.jsonl").exists()
