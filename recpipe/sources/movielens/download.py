"""The official MovieLens zips: downloaded once into the raw-data folder, verified every time.

:func:`ensure_zip` checks a zip's size, md5 and sha256 against the pins of
:data:`CHECKSUMS`, both after a download and when an earlier download is reused.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from recpipe.errors import DataError
from recpipe.io import atomic_path
from recpipe.log import get_logger
from recpipe.sources.movielens.variants import LAYOUTS

BASE_URL = "https://files.grouplens.org/datasets/movielens"
DOWNLOAD_TIMEOUT_SECONDS = 60
_CHUNK = 1 << 20  # bytes per read while downloading or hashing

log = get_logger("movielens")


@dataclass(frozen=True)
class Checksum:
    """What the official zip of a variant must match; ``None`` means not pinned."""

    size: int | None
    md5: str | None
    sha256: str | None


# md5: GroupLens' own sidecar files (<url>.md5, "MD5 (ml-100k.zip) = ..."), as quoted in
# several public repositories. size and sha256: TensorFlow Datasets' url_checksums/movielens.txt
# (ml-10m, which TFDS lacks: projects that pinned the download beside the same official md5).
# GroupLens publishes no md5 we could find for ml-latest-small, which it may regenerate; its
# pin is the 2018-09-26 release that TFDS and many projects record.
CHECKSUMS: dict[str, Checksum] = {
    "100k": Checksum(
        4_924_029,
        "0e33842e24a9c977be4e0107933c0723",
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    ),
    "1m": Checksum(
        5_917_549,
        "c4d9eecfca2ab87c1945afe126590906",
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    ),
    "10m": Checksum(
        65_566_137,
        "ce571fd55effeba0271552578f2648bd",
        "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
    ),
    "20m": Checksum(
        198_702_078,
        "cd245b17a1ae2cc31bb14903e1204af3",
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    ),
    "25m": Checksum(
        261_978_986,
        "6b51fb2759a8657d3bfcbfc42b592ada",
        "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
    ),
    "latest-small": Checksum(
        978_202,
        None,
        "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
    ),
}


def ensure_zip(variant: str, raw_dir: str | Path) -> Path:
    """Return the verified official zip of ``variant`` in ``raw_dir``, downloading it if absent.

    The download goes to a temporary file that is renamed only once its size and checksums
    match the pinned :data:`CHECKSUMS`, so ``raw_dir`` never holds a partial or wrong zip.
    """
    layout = LAYOUTS[variant]
    target = Path(raw_dir) / f"{layout.name}.zip"
    url = f"{BASE_URL}/{layout.name}.zip"
    if target.is_file():
        hint = "delete it to download it again, or give a local copy with -S data.path=..."
        with target.open("rb") as fh:
            _verify(_hash_stream(fh), variant, str(target), hint)
        return target
    log.info("downloading %s to %s", url, target)
    with atomic_path(target) as tmp:
        try:
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response,
                tmp.open("wb") as out,
            ):
                digests = _hash_stream(response, out)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DataError(
                f"could not download {url} ({reason}). Without network access, give a local "
                f"copy of MovieLens {variant}: `-S data.path=/path/to/{layout.inner}` (the "
                f"unzipped folder) or `-S data.path=/path/to/{layout.name}.zip`"
            ) from None
        _verify(digests, variant, target.name, f"downloaded from {url}; nothing was kept")
    return target


def _hash_stream(src: IO[bytes], out: IO[bytes] | None = None) -> tuple[int, str, str]:
    """(size, md5, sha256) of everything read from ``src``, copied into ``out`` if given."""
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    size = 0
    while chunk := src.read(_CHUNK):
        md5.update(chunk)
        sha.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return size, md5.hexdigest(), sha.hexdigest()


def _verify(digests: tuple[int, str, str], variant: str, file: str, hint: str) -> None:
    """Raise naming the file and the expected and actual value of every pin that differs."""
    want = CHECKSUMS[variant]
    size, md5, sha = digests
    wrong = [
        f"{kind} expected {expected}, actual {actual}"
        for kind, expected, actual in (
            ("md5", want.md5, md5),
            ("sha256", want.sha256, sha),
            ("size", want.size, size),
        )
        if expected is not None and expected != actual
    ]
    if wrong:
        raise DataError(
            f"checksum mismatch for the MovieLens {variant} zip: {'; '.join(wrong)} ({hint})",
            file=file,
        )
