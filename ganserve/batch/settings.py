"""How a batch job runs: every field is a ``ganserve batch`` flag and a GANSERVE_* variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ganserve.errors import UsageError

# Kubernetes sets this in every pod of an Indexed Job; it has no variable for the completions
# count, so deploy/k8s/batch-job.yaml sets GANSERVE_SHARD_COUNT beside `completions`.
INDEX_ENV = "JOB_COMPLETION_INDEX"
FORMATS = ("png", "npz")


@dataclass
class BatchSettings:
    out: str = field(
        default="batch-out",
        metadata={"help": "output folder; shard I of N writes its own subfolder shard-I-of-N"},
    )
    format: str = field(default="png", metadata={"help": "png files or npz shards"})
    shard_size: int = field(default=1000, metadata={"help": "images per NPZ file"})
    request_size: int = field(
        default=64,
        metadata={"help": "images per Generate call; at most the server's --max-images"},
    )
    concurrency: int = field(default=8, metadata={"help": "calls in flight"})
    retries: int = field(
        default=5, metadata={"help": "retries of a call that fails while the server answers others"}
    )
    give_up_after_s: float = field(
        default=60.0,
        metadata={"help": "stop (exit 5) when no call has succeeded for this long"},
    )
    timeout_s: float = field(default=60.0, metadata={"help": "deadline per call"})
    psi: float | None = field(
        default=None,
        metadata={
            "help": "truncation in (0, 1]: latents pulled toward the prior's centre (the manifest "
            "records the latent used); give the same value when resuming"
        },
    )
    address: str = field(default="localhost:50051", metadata={"help": "service address"})
    token: str = field(default="", metadata={"help": "bearer token"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    shard_index: int | None = field(
        default=None,
        metadata={"help": f"this machine's shard, 0-based (unset: ${INDEX_ENV}, else 0)"},
    )
    shard_count: int | None = field(
        default=None,
        metadata={"help": "machines sharing the job (unset: 1); in an Indexed Job its completions"},
    )

    def shard(self) -> tuple[int, int]:
        """(index, count), the index defaulting to Kubernetes' ``JOB_COMPLETION_INDEX``."""
        count = 1 if self.shard_count is None else self.shard_count
        index = self.shard_index
        source = "--shard-index"
        if index is None and os.environ.get(INDEX_ENV, "") != "":
            source = f"${INDEX_ENV}"
            try:
                index = int(os.environ[INDEX_ENV])
            except ValueError:
                raise UsageError(f"{source}={os.environ[INDEX_ENV]!r} is not a number") from None
        index = 0 if index is None else index
        if count < 1:
            raise UsageError(f"--shard-count must be at least 1, got {count}")
        if not 0 <= index < count:
            raise UsageError(
                f"{source} {index} is outside [0, {count - 1}] for --shard-count {count} "
                "(in an Indexed Job set GANSERVE_SHARD_COUNT to its completions)"
            )
        return index, count

    def check(self) -> None:
        """Refuse impossible settings up front, naming the flag and what it allows."""
        if self.format not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        for name, allowed in LIMITS.items():
            value = getattr(self, name)
            if not allowed(value):
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be {allowed.__doc__}, got {value}")
        if self.psi is not None and not 0 < self.psi <= 1:
            raise UsageError(f"--psi must be in (0, 1], got {self.psi}")
        self.shard()


def _at_least(low: float):
    def allowed(value: float) -> bool:
        return value >= low

    allowed.__doc__ = f"at least {low}"
    return allowed


def _positive(value: float) -> bool:
    """more than 0"""
    return value > 0


LIMITS = {
    "concurrency": _at_least(1),
    "request_size": _at_least(1),
    "shard_size": _at_least(1),
    "retries": _at_least(0),
    "give_up_after_s": _positive,
    "timeout_s": _positive,
}
