"""Received files on disk: write to a private incoming folder, fsync, and rename into the UID layout.

A file reaches its final name complete (every byte written), possibly while
its fsync still runs: the committer (daemon/dicom/committer.py) renames it and
commits its index row meanwhile, and answers only when file, folder and commit
are durable. A kill -9 leaves at most an unreferenced
temporary file in `.incoming`, removed on the next start, or a complete file
without an index row, which the sender's retry (it got no success status)
overwrites. A power loss can also leave a file at its final name that is short
or empty, with or without its index row: daemon/dicom/recovery.py removes the
rows, the sender's retry overwrites the file.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger("neurolabel.dicom.storage")

INCOMING_DIR = ".incoming"
TEMP_SUFFIX = ".part"
_FILE_MODE = 0o640
_DIR_MODE = 0o750
# Folders known to exist, remembered to skip stat calls; bounded (one entry per recent series).
_KNOWN_DIRS_LIMIT = 4096


class OutOfSpace(OSError):
    """Less free space than [storage] min_free_bytes, or the disk filled while writing."""


@dataclass(frozen=True)
class IncomingFile:
    """A complete, fsynced file in the incoming folder, not yet placed."""

    path: Path
    size: int


class Storage:
    """The folder of received instances (one per daemon). Thread-safe; every method may block on the disk."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.incoming = root / INCOMING_DIR
        self.min_free_bytes = min_free_bytes
        self._known_dirs: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()
        self._names = itertools.count()

    def prepare(self) -> int:
        """Create the folders and delete temporary files a crash left behind. Returns how many were deleted."""
        self.root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        created = not self.incoming.exists()
        self.incoming.mkdir(exist_ok=True, mode=_DIR_MODE)
        if created:
            sync_directory(self.root)
        removed = 0
        for leftover in self.incoming.iterdir():
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def check_room(self, size: int) -> None:
        """OutOfSpace unless `size` bytes fit with min_free_bytes to spare."""
        free = self.free_bytes()
        if free - size < self.min_free_bytes:
            raise OutOfSpace(errno.ENOSPC, f"{free} bytes free, {size} needed plus {self.min_free_bytes} reserved")

    def write_incoming(
        self, chunks: Sequence[bytes | memoryview], on_written: Callable[[IncomingFile], None] | None = None
    ) -> IncomingFile:
        """Write `chunks` to a new temporary file and fsync it. OutOfSpace when the disk is full.

        `on_written` gets the file once every byte is written, before the fsync (the committer may then
        rename it while this fsyncs it)."""
        path = self.incoming / f"{os.getpid()}-{next(self._names)}{TEMP_SUFFIX}"
        size = sum(len(chunk) for chunk in chunks)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        handed_on = False
        try:
            _write_all(descriptor, chunks)
            if on_written is not None:
                on_written(IncomingFile(path=path, size=size))
                handed_on = True
            os.fsync(descriptor)
        except OSError as exc:
            os.close(descriptor)
            if not handed_on:  # once handed on, the file is the committer's to place or discard
                path.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfSpace(exc.errno, "disk full while writing") from exc
            raise
        os.close(descriptor)
        return IncomingFile(path=path, size=size)

    def place(self, incoming: IncomingFile, relative: PurePosixPath) -> set[Path]:
        """Rename into `relative` (replacing a file there). Returns the folders to fsync to make it durable."""
        target = self.root.joinpath(*relative.parts)
        to_sync = self._ensure_directory(target.parent)
        try:
            os.replace(incoming.path, target)
        except FileNotFoundError:
            # A folder removed behind our back (e.g. by retention): forget the cache and try once more.
            with self._lock:
                self._known_dirs.clear()
            to_sync = self._ensure_directory(target.parent)
            os.replace(incoming.path, target)
        to_sync.add(target.parent)
        return to_sync

    def discard(self, incoming: IncomingFile) -> None:
        incoming.path.unlink(missing_ok=True)

    def remove(self, relative: PurePosixPath) -> None:
        self.root.joinpath(*relative.parts).unlink(missing_ok=True)

    def absolute(self, relative: str | PurePosixPath) -> Path:
        return self.root.joinpath(*PurePosixPath(relative).parts)

    def _ensure_directory(self, folder: Path) -> set[Path]:
        """Create `folder` and missing parents below the root; the parents of created folders need an fsync."""
        with self._lock:
            if folder in self._known_dirs:
                self._known_dirs.move_to_end(folder)
                return set()
        to_sync: set[Path] = set()
        missing: list[Path] = []
        current = folder
        while current != self.root and not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir(mode=_DIR_MODE)
                to_sync.add(path.parent)
            except FileExistsError:
                pass
        with self._lock:
            self._known_dirs[folder] = None
            if len(self._known_dirs) > _KNOWN_DIRS_LIMIT:
                self._known_dirs.popitem(last=False)
        return to_sync


def sync_directories(folders: Iterable[Path]) -> None:
    for folder in folders:
        sync_directory(folder)


def sync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, chunks: Sequence[bytes | memoryview]) -> None:
    pending = [memoryview(chunk).cast("B") for chunk in chunks if len(chunk)]
    while pending:
        written = os.writev(descriptor, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if pending and written:
            pending[0] = pending[0][written:]
