"""Dashboard page times at MovieLens-1M size: each page's render after the first load.

    python bench/dashboard.py [--workdir /tmp/recpipe-bench-dashboard] [--reuse] [--repeats 5]

Builds the pipeline's outputs on the synthetic shop at MovieLens-1M shape (6,040 users x
3,706 items, 1M events, as `bench/speed.py --sizes 1m`) with one `dvc repro` in a scratch
copy (`--reuse` keeps a finished copy from an earlier run), then runs every page through
Streamlit's AppTest in this process, as the server would: a first load (caches empty: files
read, embedding computed), then `--repeats` reruns (the time a click or a page switch costs
once the caches are warm), and on the explorer pages a different user or item each rerun.
Prints a Markdown table of seconds per page. The issue's target: under 2 s after the first
load on 2 cores. AppTest times the script run on the server; the browser's drawing of the
Plotly figures comes on top (a fraction of a second on the reference machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import SIZES, composed_params, copy_project, machine  # noqa: E402

PICKERS = {"user_explorer.py": "user", "item_explorer.py": "item"}


def build(workdir: Path, reuse: bool) -> Path:
    done = workdir / ".bench-built"
    if reuse and done.exists():
        return workdir
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    n_events, n_users, n_items = SIZES["1m"]
    params = composed_params(
        f"data.n_events={n_events}", f"data.n_users={n_users}", f"data.n_items={n_items}"
    )
    copy_project(workdir, params=params)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    start = time.perf_counter()
    subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "repro"],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"pipeline at 1M: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    # the run committed, as a user's would be: the experiments page reviews the workspace
    # against the commit's reports
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run([*git, "add", "-A"], cwd=workdir, check=True)
    subprocess.run([*git, "commit", "-qm", "bench: 1M run"], cwd=workdir, check=True)
    done.touch()
    return workdir


def measure(project: Path, repeats: int) -> list[tuple[str, float, list[float]]]:
    os.environ["RECPIPE_PROJECT"] = str(project)
    from streamlit.testing.v1 import AppTest

    from recpipe.dashboard.app import PAGES

    at = AppTest.from_file(str(ROOT / "recpipe/dashboard/app.py"), default_timeout=600)
    rows = []
    for i, (file, title, _) in enumerate(PAGES):
        if i:  # the first page is the default one: the app's first run shows it
            at.switch_page(f"pages/{file}")
        start = time.perf_counter()
        at.run()
        first = time.perf_counter() - start
        if at.exception:
            raise RuntimeError(f"{file}: {[e.value for e in at.exception]}")
        # a page that only says an output is missing would be timed for nothing
        if at.info or at.warning:
            raise RuntimeError(f"{file}: {[m.value for m in [*at.info, *at.warning]]}")
        again = []
        for i in range(repeats):
            if file in PICKERS:
                picker = at.selectbox(key=PICKERS[file])
                picker.set_value(picker.options[(i + 1) * 7 % len(picker.options)])
            start = time.perf_counter()
            at.run()
            again.append(time.perf_counter() - start)
            if at.exception:
                raise RuntimeError(f"{file}: {[e.value for e in at.exception]}")
        rows.append((title, first, again))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/recpipe-bench-dashboard"))
    ap.add_argument("--reuse", action="store_true", help="keep a finished copy of a past run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    project = build(args.workdir, args.reuse)
    rows = measure(project, args.repeats)
    print(f"Dashboard pages at 1M events (6,040 users x 3,706 items); {machine()}\n")
    print("| page | first load s | after the first load: median s | max s |")
    print("|---|---:|---:|---:|")
    for title, first, again in rows:
        print(f"| {title} | {first:.2f} | {statistics.median(again):.2f} | {max(again):.2f} |")


if __name__ == "__main__":
    main()
