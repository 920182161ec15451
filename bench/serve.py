"""Serving benchmark (issue 15, part 3): latency and throughput of `recpipe serve` per
endpoint at several concurrencies, the bundle's load time and the server's memory.

Builds a bundle from the synthetic shop at MovieLens-1M shape (6,040 users, 3,706 items,
1M events: `dvc repro bundle` in a scratch copy of the project), starts the real server in
its own process (`python -m recpipe.cli serve`, uvicorn), and drives it from this process
with an async HTTP client (aiohttp), or with `wrk` (`--driver wrk`, a C load generator whose
own CPU takes less of the cores the server runs on): for each endpoint and concurrency,
that many connections send requests back to back for `--seconds`. Prints a Markdown table.

    .venv/bin/python bench/serve.py                       # build, then measure
    .venv/bin/python bench/serve.py --reuse               # measure an already built bundle
    .venv/bin/python bench/serve.py --size 100k --seconds 5 --concurrency 1 16

Latency is judged at concurrency 1 (the load generator shares the machine's cores, so at
higher concurrency queueing dominates it), throughput at 16 and 64.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SIZES, composed_params, copy_project, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    e = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(ROOT))
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def build(size: str, workdir: Path) -> Path:
    """A scratch project at ``workdir`` with the synthetic shop at ``size``; runs the DAG up
    to the bundle stage and returns the bundle folder."""
    n_events, n_users, n_items = SIZES[size]
    params = composed_params(
        f"data.n_events={n_events}", f"data.n_users={n_users}", f"data.n_items={n_items}"
    )
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    copy_project(workdir, params=params)
    start = time.perf_counter()
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = subprocess.run(
        [dvc, "repro", "bundle"], cwd=workdir, env=env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro bundle failed:\n{proc.stdout}\n{proc.stderr}")
    print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return workdir / "models" / "bundle"


def load_time(bundle: Path) -> tuple[float, float]:
    """(load seconds, warm seconds) of the bundle in a fresh process."""
    code = (
        "import time, json, sys; from recpipe.serving.bundle import Bundle\n"
        "from recpipe.serving.settings import Settings\n"
        "tables = Settings().similarity_tables_bytes  # as the service loads it\n"
        "t = time.perf_counter(); b = Bundle.load(sys.argv[1], tables)\n"
        "l = time.perf_counter() - t\n"
        "t = time.perf_counter(); b.warm(); w = time.perf_counter() - t\n"
        "print(json.dumps([l, w]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(bundle)],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    load, warm = json.loads(out.stdout.strip().splitlines()[-1])
    return load, warm


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (uvicorn's workers)."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    bundle: Path, port: int, workers: int, tmp: Path, redis_url: str | None
) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "recpipe.cli", "serve", "--bundle", str(bundle),
        "--port", str(port), "--workers", str(workers), "--landing", str(tmp / "landing"),
        "--deletions", str(tmp / "deletions.jsonl"), "--reload-interval", "0",
    ]  # fmt: skip
    if redis_url:  # several workers share events and erasures through Redis only
        cmd += ["--store", "redis", "--redis-url", redis_url]
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (the server's lifetime)
    # in this checkout: `python -m` puts the working folder first on sys.path, before
    # PYTHONPATH, so from another checkout the server would run that one's code
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(base: str, timeout: float = 120) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("server not ready")


async def drive(base: str, make_request, concurrency: int, seconds: float) -> dict:
    """``concurrency`` connections sending back to back for ``seconds``."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    rng = random.Random(0)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def one() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                method, path, body = make_request(rng)
                t = time.perf_counter()
                async with s.request(method, base + path, json=body) as r:
                    await r.read()
                    if r.status >= 400:
                        errors += 1
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50": q(0.50),
        "p95": q(0.95),
        "p99": q(0.99),
        "mean": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }


WRK_REQUESTS = 5000  # distinct requests per cell, cycled through


def drive_wrk(base: str, make_request, concurrency: int, seconds: float, tmp: Path) -> dict:
    """:func:`drive` with ``wrk`` (C, one thread) as the load generator: the same requests
    (drawn from the same seeded maker, cycled), so the server is measured, not the client's
    CPU. Percentiles come from wrk's own histogram."""
    from urllib.parse import quote

    rng = random.Random(0)
    rows = []
    for _ in range(WRK_REQUESTS):
        method, path, body = make_request(rng)
        path = quote(path, safe="/?&=:-_.~%")
        payload = "nil" if body is None else f"[==[{json.dumps(body)}]==]"
        rows.append(f'{{"{method}", [==[{path}]==], {payload}}}')
    script = tmp / "wrk.lua"
    script.write_text(
        "local reqs = {\n" + ",\n".join(rows) + "\n}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #reqs + 1\n"
        "  local r = reqs[i]\n"
        "  if r[3] then\n"
        '    return wrk.format(r[1], r[2], {["Content-Type"] = "application/json"}, r[3])\n'
        "  end\n"
        "  return wrk.format(r[1], r[2])\n"
        "end\n"
        "done = function(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("RESULT %d %d %f %f %f %f %d %d %d\\n", summary.requests,\n'
        "    summary.duration, latency:percentile(50), latency:percentile(95),\n"
        "    latency:percentile(99), latency.mean, e.status,\n"
        "    e.connect + e.read + e.write, e.timeout))\n"
        "end\n"
    )
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(script), base]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    n, duration_us, p50, p95, p99, mean, status, failed, timeouts = line.split()[1:]
    return {
        "requests": int(n),
        "rps": int(n) / (int(duration_us) / 1e6),
        "p50": float(p50) / 1000,
        "p95": float(p95) / 1000,
        "p99": float(p99) / 1000,
        "mean": float(mean) / 1000,
        "errors": int(status) + int(failed),
        # wrk gives up on a request after 2 s: queueing, not an error answer
        "timeouts": int(timeouts),
    }


def endpoints(bundle: Path, base: str) -> dict:
    """Request makers per endpoint: random known users, items and categories."""
    import pandas as pd

    users = pd.read_parquet(bundle / "users.parquet")["user_id"].astype(str).tolist()
    items = pd.read_parquet(bundle / "items.parquet")
    item_ids = items["item_id"].astype(str).tolist()
    cats = sorted({c for cs in items["categories"] for c in cs})
    fresh_users = users[:200]
    now = int(time.time())
    return {
        "known user (cached)": lambda r: (
            "GET", f"/v1/users/{r.choice(users[200:])}/recommendations?n=10", None
        ),
        "known user, category filter": lambda r: (
            "GET",
            f"/v1/users/{r.choice(users[200:])}/recommendations?n=10&category={r.choice(cats)}",
            None,
        ),
        "user with new events (fresh)": lambda r: (
            "GET", f"/v1/users/{r.choice(fresh_users)}/recommendations?n=10", None
        ),
        "session (fresh)": lambda r: (
            "POST",
            "/v1/recommendations",
            {"items": [{"item_id": i, "timestamp": now - k} for k, i in
                       enumerate(r.sample(item_ids, 5))], "n": 10},
        ),
        "stranger (popular fallback)": lambda r: (
            "GET", f"/v1/users/new-{r.randrange(10**9)}/recommendations?n=10", None
        ),
        "similar items": lambda r: ("GET", f"/v1/items/{r.choice(item_ids)}/similar?n=10", None),
        "popular": lambda r: ("GET", f"/v1/popular?n=10&category={r.choice(cats)}", None),
    }, fresh_users, item_ids  # fmt: skip


async def post_events(base: str, fresh_users: list[str], item_ids: list[str]) -> None:
    """One new event for each of ``fresh_users``: their next requests are ranked fresh."""
    import aiohttp

    rng = random.Random(1)
    async with aiohttp.ClientSession() as s:
        for u in fresh_users:
            body = {"user_id": u, "item_id": rng.choice(item_ids), "event": "click"}
            async with s.post(f"{base}/v1/events", json=body) as r:
                assert r.status == 202, await r.text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="1m", choices=list(SIZES))
    ap.add_argument("--workdir", default="/tmp/recpipe-bench-serve")
    ap.add_argument("--reuse", action="store_true", help="use the workdir's bundle if built")
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=10.0, help="per endpoint and concurrency")
    ap.add_argument("--only", nargs="*", help="endpoints to measure (names in the table)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--driver",
        choices=["aiohttp", "wrk"],
        default="aiohttp",
        help="load generator: aiohttp (Python, in this process) or wrk (C, `apt-get install "
        "wrk`), whose own CPU takes less from the 2 cores the server shares with it",
    )
    args = ap.parse_args()

    workdir = Path(args.workdir).resolve()  # the server runs in ROOT
    bundle = workdir / "models" / "bundle"
    if not (args.reuse and (bundle / "manifest.json").is_file()):
        bundle = build(args.size, workdir)
    load, warm = load_time(bundle)
    print(f"bundle load {load:.2f} s, warm {warm:.2f} s", file=sys.stderr)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tmp = workdir / "serve-bench"
    tmp.mkdir(exist_ok=True)
    stack = contextlib.ExitStack()
    redis_url = None
    if args.workers > 1:
        from tests.serving_helpers import redis_server  # a real redis-server, as the tests

        (tmp / "redis").mkdir(exist_ok=True)
        redis_url = stack.enter_context(redis_server(tmp / "redis"))
    started = time.perf_counter()
    server = start_server(bundle, port, args.workers, tmp, redis_url)
    rows = []
    try:
        asyncio.run(wait_ready(base))
        ready_s = time.perf_counter() - started
        makers, fresh_users, item_ids = endpoints(bundle, base)
        asyncio.run(post_events(base, fresh_users, item_ids))
        rss_start = rss_mib(server.pid)
        for name, make in makers.items():
            if args.only and name not in args.only:
                continue
            for c in args.concurrency:
                # a short warm-up per cell, not counted
                asyncio.run(drive(base, make, c, min(1.0, args.seconds / 5)))
                if args.driver == "wrk":
                    got = drive_wrk(base, make, c, args.seconds, tmp)
                else:
                    got = asyncio.run(drive(base, make, c, args.seconds))
                rows.append({"endpoint": name, "concurrency": c, **got})
                print(f"{name} c={c}: {got}", file=sys.stderr)
        rss_end = rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        stack.close()
    store = "redis store" if redis_url else "memory store"
    print(
        f"\n{machine()}; server: {args.workers} uvicorn workers, {store}; "
        f"{args.seconds:.0f} s a cell; load generator {args.driver}\n"
    )
    print(
        f"- bundle load {load:.2f} s + warm {warm:.2f} s (one process); server ready "
        f"{ready_s:.1f} s after start"
    )
    print(
        f"- server RSS (all workers) {rss_start:.0f} MiB after start, {rss_end:.0f} MiB at "
        "the end\n"
    )
    print("| endpoint | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['endpoint']} | {r['concurrency']} | {r['requests']} | {r['rps']:.0f} | "
            f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['errors']}"
            + (f" ({r['timeouts']} timed out)" if r.get("timeouts") else "")
            + " |"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"load_s": load, "warm_s": warm, "rss_mib": rss_end, "rows": rows})
        )


if __name__ == "__main__":
    main()
