"""The files of a local MovieLens copy, in a folder or in a zip: found, opened and decoded.

Text files are decoded as UTF-8 and, failing that, as latin-1: 100k and 1m are latin-1, the
CSV releases UTF-8, and the 10m README names no encoding.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from recpipe.errors import DataError
from recpipe.sources.movielens.variants import _Layout


class _Files:
    """The files of one copy of a variant, in a folder or in a zip, with names for messages."""

    def __init__(self, layout: _Layout, folder: Path | None, archive: Path | None) -> None:
        self.layout = layout
        self.folder = folder
        self.archive = archive
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, str] = {}
        if archive is not None:
            try:
                self._zip = zipfile.ZipFile(archive)
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"not a readable zip file: {exc}", file=str(archive)) from None
            self._index_members(self._zip.namelist())

    def _index_members(self, names: list[str]) -> None:
        # Prefer the official inner folder, then the zip's stem, then the top level, then any
        # other folder (shallowest first): re-zipped copies still work.
        preferred = (self.layout.inner, self.layout.name, "")

        def rank(member: str) -> tuple[int, int]:
            folder = member.rpartition("/")[0]
            first = preferred.index(folder) if folder in preferred else len(preferred)
            return first, member.count("/")

        for member in sorted(names, key=rank):
            base = member.rpartition("/")[2]
            if base and base not in self._members:
                self._members[base] = member

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def has(self, name: str) -> bool:
        if self._zip is not None:
            return name in self._members
        assert self.folder is not None
        return (self.folder / name).is_file()

    def label(self, name: str) -> str:
        """How messages name the file: its path, or ``zip:member``."""
        if self._zip is not None:
            member = self._members.get(name, f"{self.layout.inner}/{name}")
            return f"{self.archive}:{member}"
        assert self.folder is not None
        return str(self.folder / name)

    def open(self, name: str) -> IO[bytes]:
        if not self.has(name):
            raise DataError(
                f"file not found: MovieLens {self.layout.name} needs {name}", file=self.label(name)
            )
        if self._zip is not None:
            return self._zip.open(self._members[name])
        assert self.folder is not None
        return (self.folder / name).open("rb")

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.open(name) as fh:
                return fh.read()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"cannot read file: {exc}", file=self.label(name)) from None

    def read_text(self, name: str) -> str:
        return _decode(self.read_bytes(name))


@contextmanager
def _open_copy(location: Path, layout: _Layout) -> Iterator[_Files]:
    """Open a local copy: a zip, the folder holding the files, or a parent of that folder."""
    how = f"give the unzipped {layout.inner} folder or the official {layout.name}.zip"
    if location.is_file():
        files = _Files(layout, None, location)
    elif location.is_dir():
        folder = next(
            (
                d
                for d in (location, location / layout.inner, location / layout.name)
                if (d / layout.ratings).is_file()
            ),
            None,
        )
        if folder is not None:
            files = _Files(layout, folder, None)
        elif (location / f"{layout.name}.zip").is_file():
            files = _Files(layout, None, location / f"{layout.name}.zip")
        else:
            raise DataError(
                f"file not found: MovieLens {layout.name} needs {layout.ratings} in this "
                f"folder or in {layout.inner}/ below it ({how})",
                file=str(location / layout.ratings),
            )
    else:
        raise DataError(f"no such file or folder ({how})", file=str(location))
    try:
        yield files
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        # A damaged member shows up only when read (bad CRC, truncated deflate stream).
        raise DataError(f"cannot read the zip, damaged? ({exc})", file=str(location)) from None
    finally:
        files.close()


def _decode(data: bytes) -> str:
    """Text of a MovieLens file: UTF-8 (newer releases), else latin-1 (100k and 1m).

    A latin-1 accent is invalid UTF-8, so trying UTF-8 first also reads copies someone
    re-encoded to UTF-8 correctly.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")
