"""One writer per output folder: an exclusive ``flock`` the kernel drops when the holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from .errors import OutputLocked, StorageError

LOCK_FILE = ".ganserve-batch.lock"


class FolderLock:
    """``with FolderLock(folder):`` — or :class:`OutputLocked` at once if another process holds it.

    ``flock`` belongs to the open file, so SIGKILL, an OOM kill or a crashed node's restarted pod
    leaves no stale lock behind; the holder's pid, host and start time are written into the lock
    file only to name it in the message.
    """

    def __init__(self, folder: Path, purpose: str = "ganserve batch"):
        self.folder, self.purpose = folder, purpose
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        path = self.folder / LOCK_FILE
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError.from_os_error(exc, f"cannot open the lock in {self.folder}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputLocked(
                f"{self.folder} is in use by {holder}: one run per output folder; wait for it to "
                "finish (or stop it) and run the same command again"
            ) from None
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        holder = f"{self.purpose} (pid {os.getpid()} on {socket.gethostname()} since {started})"
        with contextlib.suppress(OSError):  # only a name for the message; a full disk may refuse it
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode() + b"\n", 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None
