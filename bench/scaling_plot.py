"""Time against events on log-log axes, with the fitted slope, from measured timings.

    python bench/scaling_plot.py [--csv bench/scaling.csv] [--out docs/scaling.png]

The CSV holds one row per measured (events, stage group, seconds), copied from the tables
of ``bench/README.md`` (``bench/speed.py`` and ``bench/tradeoff.py`` print them). A slope
of 1 is time proportional to events; the fit is least squares on log10 of both.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def slope(events: np.ndarray, seconds: np.ndarray) -> float:
    """Least-squares slope of log10(seconds) on log10(events)."""
    return float(np.polyfit(np.log10(events), np.log10(seconds), 1)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "scaling.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling.png")
    args = ap.parse_args()
    df = pd.read_csv(args.csv, comment="#")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    print("| stages | sizes | slope |")
    print("|---|---|---:|")
    for group, part in df.groupby("group", sort=False):
        part = part.sort_values("events")
        b = slope(part["events"].to_numpy(float), part["seconds"].to_numpy(float))
        ax.plot(part["events"], part["seconds"], "o-", label=f"{group} (slope {b:.2f})")
        sizes = ", ".join(f"{e:,.0f}" for e in part["events"])
        print(f"| {group} | {sizes} | {b:.2f} |")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events")
    ax.set_ylabel("seconds")
    ax.set_title("recpipe: time against events (2 cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
