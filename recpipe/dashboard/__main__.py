"""``python -m recpipe.dashboard [--project DIR] [--port P] [--address A]``: start the
dashboard (``streamlit run`` on ``app.py``) over the project in DIR.

``recpipe dashboard ...`` calls :func:`main` with the same arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from recpipe.dashboard.data import PROJECT_ENV

APP = Path(__file__).resolve().parent / "app.py"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="recpipe dashboard",
        description="Explore a recpipe project's runs, experiments, users and items in the "
        "browser (Streamlit). Reads the pipeline's outputs; never retrains.",
    )
    ap.add_argument("--project", default=".", help="project folder (default: current folder)")
    ap.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    ap.add_argument(
        "--address",
        default="localhost",
        help="address to bind (default localhost; 0.0.0.0 to serve other machines)",
    )
    return ap


def command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and environment for parsed arguments."""
    project = Path(args.project).resolve()
    env = dict(os.environ)
    env[PROJECT_ENV] = str(project)
    # the child imports the same recpipe as this process (a worktree's, say), not whichever
    # the interpreter would find first
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(args.port),
        "--server.address",
        args.address,
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        # a bare string in a page would be printed on it; pages call st.* explicitly
        "--runner.magicEnabled",
        "false",
        "--browser.gatherUsageStats",
        "false",
    ]
    return cmd, env


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and replace this process with the Streamlit server (returns only on a
    bad argument, with exit code 2)."""
    args = parser().parse_args(argv)
    project = Path(args.project)
    if not (project / "dvc.yaml").is_file() and not (project / "params.yaml").is_file():
        print(
            f"recpipe dashboard: {project.resolve()} is not a recpipe project (no dvc.yaml "
            "or params.yaml): give --project DIR",
            file=sys.stderr,
        )
        return 2
    cmd, env = command(args)
    print(f"recpipe dashboard: http://{args.address}:{args.port} (project {project.resolve()})")
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
