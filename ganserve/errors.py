"""The one exception hierarchy of ganserve; the CLI and the gRPC layer map it in one place each."""

from __future__ import annotations


class GanserveError(Exception):
    """Base of every error that is the caller's to fix (bad input, missing file, unknown model)."""


class DataError(GanserveError, ValueError):
    """A data set is missing or malformed; the message names the path and what was wrong."""


class CheckpointError(GanserveError, ValueError):
    """A checkpoint is missing, unreadable, or of the wrong kind."""


class UsageError(GanserveError, ValueError):
    """A command was given contradictory or missing options."""


class TrainingStopped(GanserveError):
    """A training run stopped itself because going on would waste its time (a class collapsed);
    the message says why and where its last checkpoint is."""

    exit_code = 3
