"""Output files written atomically, and nothing half-written or unrecorded left behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

PARTIAL = ".partial"  # temp files live here until renamed into place, so cleanup is one folder


def fsync_dir(folder: Path) -> None:
    """Make renames and new names in ``folder`` survive a power loss, not only a kill."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, partial: Path) -> str:
    """Write ``data`` to a temp file in ``partial``, fsync it, rename it to ``path``; its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=partial, prefix=path.name + ".")
    try:
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return hashlib.sha256(data).hexdigest()


def write_files(folder: Path, files: list[tuple[str, bytes]]) -> list[str]:
    """Write each (relative name, bytes) atomically, then fsync their folders once; their sha256s.

    If any write fails, the files this call already wrote are removed before the error goes on.
    """
    digests, written = [], []
    try:
        for name, data in files:
            digests.append(write_atomic(folder / name, data, folder / PARTIAL))
            written.append(name)
        for parent in {(folder / name).parent for name in written}:
            fsync_dir(parent)
    except BaseException:
        remove_files(folder, written)
        raise
    return digests


def remove_files(folder: Path, names: Iterable[str]) -> None:
    """Best effort: a file that cannot be removed now is found and replaced by the next run."""
    for name in names:
        with contextlib.suppress(OSError):
            (folder / name).unlink(missing_ok=True)


def remove_present(folder: Path, names: Iterable[str]) -> None:
    """Remove whichever of ``names`` exist: one directory listing per folder instead of one
    failing ``unlink`` per name, since after an early stop most of a large job was never written."""
    by_parent: dict[str, set[str]] = {}
    for name in names:
        parent, _, base = name.rpartition("/")
        by_parent.setdefault(parent, set()).add(base)
    for parent, bases in by_parent.items():
        try:
            present = [e.name for e in os.scandir(folder / parent) if e.name in bases]
        except OSError:
            continue
        remove_files(folder, (f"{parent}/{base}" if parent else base for base in present))


def remove_partial(folder: Path) -> None:
    """Temp files of a run that was killed mid-write."""
    shutil.rmtree(folder / PARTIAL, ignore_errors=True)
