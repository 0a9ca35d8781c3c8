"""The manifest (``manifest.jsonl``): the single record of what is done, never left unreadable.

One JSON object per line, appended (one ``write``, fsynced) only after its files are in place.
Opening it repairs whatever a kill or a full disk left: a torn or fused line anywhere is dropped
(its images are made again), a file recorded twice keeps its last line, an entry whose file is
gone is dropped; the repaired manifest replaces the old one atomically. An append that fails is
cut back off (``ftruncate`` to the last good length), so a retry never writes after a fragment;
if even that fails, the manifest refuses every later append until it is reopened.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path

from .errors import StorageError
from .files import PARTIAL, fsync_dir, write_atomic

MANIFEST = "manifest.jsonl"


def _entry(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError from torn multi-byte text
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    return entry


def parse_manifest(raw: bytes) -> tuple[dict[str, dict], Counter]:
    """Entries by file, and what was dropped: ``torn`` lines and ``duplicate`` records."""
    entries: dict[str, dict] = {}
    dropped: Counter = Counter()
    *lines, tail = raw.split(b"\n")  # after the last newline: nothing, or a torn write
    if tail.strip():
        dropped["torn"] += 1
    for line in lines:
        if not line.strip():
            continue
        entry = _entry(line)
        if entry is None:
            dropped["torn"] += 1
            continue
        if entry["file"] in entries:
            dropped["duplicate"] += 1
        entries[entry["file"]] = entry  # the last record is of the file now on disk
    return entries, dropped


def encode(entries: list[dict]) -> bytes:
    return b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in entries)


class Manifest:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._broken: OSError | None = None
        raw = path.read_bytes() if path.exists() else b""
        self.entries, self.repaired = parse_manifest(raw)
        folder = path.parent
        missing = [name for name in self.entries if not (folder / name).is_file()]
        for name in missing:
            del self.entries[name]
        if missing:
            self.repaired["missing_file"] = len(missing)
        clean = encode(list(self.entries.values()))
        if clean != raw:
            write_atomic(path, clean, folder / PARTIAL)
            fsync_dir(folder)
        self._size = len(clean)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __contains__(self, file: str) -> bool:
        return file in self.entries

    def append(self, entries: list[dict]) -> None:
        payload = encode(entries)
        with self._lock:
            if self._broken is not None:
                raise StorageError.from_os_error(
                    self._broken, "the manifest could not be repaired after a failed append"
                )
            try:
                view = memoryview(payload)
                while view:  # a full disk may take part of a write before refusing the rest
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError:
                self._cut_back()
                raise
            self._size += len(payload)
            self.entries.update((e["file"], e) for e in entries)

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = exc  # the next open drops the fragment

    def close(self) -> None:
        os.close(self._fd)
