"""The ``recpipe`` command: ``recpipe serve`` (the recommendation API over a bundle) and
``recpipe dashboard`` (the Streamlit dashboard). The pipeline itself runs through DVC."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile

from pydantic import ValidationError

# option -> settings variable (recpipe.serving.settings.Settings); the options are set as
# variables so that every uvicorn worker builds the same settings
SERVE_OPTIONS = {
    "bundle": "RECPIPE_BUNDLE",
    "store": "RECPIPE_STORE",
    "redis_url": "RECPIPE_REDIS_URL",
    "landing": "RECPIPE_LANDING",
    "deletions": "RECPIPE_DELETIONS",
    "reload_interval": "RECPIPE_RELOAD_INTERVAL",
}


def serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve recommendations over HTTP from a bundle (models/bundle)",
        description="Serve the bundle the pipeline wrote (dvc repro bundle) over HTTP. "
        "Every setting is also a RECPIPE_* environment variable (README, 'Serving'); "
        "the options below override them. The API key is read from RECPIPE_API_KEY only.",
    )
    p.add_argument("--bundle", help="bundle folder (default models/bundle)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes; more than one needs --store redis (events and "
        "erasures must reach every worker)",
    )
    p.add_argument("--store", choices=["memory", "redis"], help="shared state (default memory)")
    p.add_argument("--redis-url", help="Redis URL for --store redis")
    p.add_argument("--landing", help="folder the events are appended to")
    p.add_argument("--deletions", help="the erased users' list")
    p.add_argument("--reload-interval", type=float, help="seconds between bundle checks")
    p.add_argument("--log-level", default="info")
    p.add_argument("--access-log", action="store_true", help="log every request")


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from recpipe.serving.settings import Settings

    for option, variable in SERVE_OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            os.environ[variable] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "RECPIPE_" + "_".join(str(p) for p in err["loc"]).upper()
        print(f"recpipe serve: {name}: {err['msg']}", file=sys.stderr)
        return 2
    if not (settings.bundle / "manifest.json").is_file():
        print(
            f"recpipe serve: {settings.bundle}/manifest.json not found: build a bundle with "
            "`dvc repro bundle` or point --bundle at one",
            file=sys.stderr,
        )
        return 2
    if args.workers < 1:
        print("recpipe serve: --workers must be 1 or more", file=sys.stderr)
        return 2
    if args.workers > 1 and settings.store == "memory":
        # each worker would keep its own recent events and erased users: an erasure or an
        # event would reach one worker and the others would go on serving without it
        print(
            f"recpipe serve: --workers {args.workers} with the memory store: each worker would "
            "see only its own events and erasures; use --store redis (with --redis-url)",
            file=sys.stderr,
        )
        return 2
    common = dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    if args.workers == 1:
        from recpipe.serving.app import create_app

        uvicorn.run(create_app(settings), **common)
        return 0
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # the workers' metrics are summed from files here (recpipe.serving.metrics)
        folder = tempfile.mkdtemp(prefix="recpipe-metrics-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    uvicorn.run("recpipe.serving.app:app_from_env", factory=True, workers=args.workers, **common)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["dashboard"]:
        # the dashboard has its own options; it is imported only when asked for
        try:
            from recpipe.dashboard.__main__ import main as dashboard_main
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("recpipe.dashboard"):
                raise
            print("recpipe dashboard: this checkout has no recpipe.dashboard", file=sys.stderr)
            return 2
        return dashboard_main(argv[1:])
    ap = argparse.ArgumentParser(prog="recpipe", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    serve_parser(sub)
    sub.add_parser("dashboard", help="explore runs, models and recommendations (Streamlit)")
    args = ap.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2  # pragma: no cover (argparse handles the rest)


if __name__ == "__main__":
    sys.exit(main())
