"""Why a batch job stopped, each with its own exit code (the README's exit-code table is this one)."""

from __future__ import annotations

import errno

from ganserve.errors import GanserveError, UsageError

EXIT_DONE = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_STORAGE = 4
EXIT_GAVE_UP = 5
EXIT_MERGE = 6
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_DONE: "done: every planned image is in the manifest (merge: the merged manifest is written)",
    EXIT_INCOMPLETE: "some calls kept failing while the server answered others; run again",
    EXIT_USAGE: "a bad option, or a request the server refuses (unknown model, too many images)",
    EXIT_LOCKED: "another run holds the output folder (or, for merge, a shard folder)",
    EXIT_STORAGE: "the output folder cannot be written (full, read-only, no permission)",
    EXIT_GAVE_UP: "no call succeeded for --give-up-after-s: the service is gone; run again later",
    EXIT_MERGE: "the shards do not add up: an image missing, twice, or not matching its sha256",
    EXIT_INTERRUPTED: "SIGINT or SIGTERM: calls in flight finished, the rest is left for the next run",
}


class BatchError(GanserveError):
    """A reason to stop the whole job at once; retrying it as if transient cannot help."""

    exit_code = EXIT_USAGE


class RequestRefused(BatchError, UsageError):
    """The server refused a request for a reason that every later request shares."""


class OutputLocked(BatchError):
    exit_code = EXIT_LOCKED


class StorageError(BatchError):
    exit_code = EXIT_STORAGE

    @classmethod
    def from_os_error(cls, exc: OSError, doing: str) -> StorageError:
        name = errno.errorcode.get(exc.errno or 0, "error")
        hint = {
            errno.ENOSPC: "free some space",
            errno.EDQUOT: "raise the quota or free some space",
            errno.EROFS: "choose a writable --out",
            errno.EACCES: "choose an --out this user may write",
            errno.EPERM: "choose an --out this user may write",
        }.get(exc.errno or 0, "fix the output folder")
        reason = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        return cls(
            f"{doing}: {reason} [{name}]{where}; {hint} and run the same command again "
            "(what is in the manifest is kept)"
        )


class ServerGone(BatchError):
    exit_code = EXIT_GAVE_UP


class MergeError(BatchError):
    exit_code = EXIT_MERGE


class Interrupted(BatchError):
    exit_code = EXIT_INTERRUPTED
