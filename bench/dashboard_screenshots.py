"""Screenshots of every dashboard page for the README (docs/dashboard/*.png).

    python bench/dashboard_screenshots.py --project /path/to/a/run [--out docs/dashboard]

Starts the dashboard on a free port over ``--project`` (a copy where the pipeline ran),
opens every page in Debian's headless Chromium (selenium and chromedriver; no downloaded
browser), waits for the page's script and charts, and saves a PNG reduced to 256 colours
(a few hundred KB at most).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recpipe.dashboard.app import PAGES  # noqa: E402
from tests.test_dashboard import settle  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard")
    ap.add_argument("--size", default="1400,1700", help="window width,height")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "recpipe.dashboard", "--project", str(args.project)]
        + ["--port", str(port), "--address", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.add_argument(f"--window-size={args.size}")
    driver = None
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
        wait = WebDriverWait(driver, 300)
        heading = (By.TAG_NAME, "h1")
        for file, title, _ in PAGES:
            slug = "" if file == PAGES[0][0] else file.removesuffix(".py")
            driver.get(f"http://127.0.0.1:{port}/{slug}")
            wait.until(lambda d, t=title: t in "".join(h.text for h in d.find_elements(*heading)))
            settle(driver, timeout=300)
            time.sleep(1.0)  # let Plotly finish drawing
            png = args.out / f"{file.removesuffix('.py')}.png"
            driver.save_screenshot(str(png))
            Image.open(png).convert("RGB").quantize(256).save(png, optimize=True)
            print(f"{png}: {png.stat().st_size / 1024:.0f} KiB")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
