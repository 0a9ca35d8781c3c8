"""``ganserve batch``: generate large image sets through the service, resumably and losslessly.

One module per job: ``plan`` (what files a job makes), ``sharding`` (which of them this machine
makes), ``lock`` (one writer per folder), ``files`` and ``manifest`` (what is written and how it is
recorded), ``retry`` (what is retried, when to give up), ``runner`` (the calls), ``merge`` (joining
shards), ``errors`` (why a job stops, with its exit code).
"""

from .errors import BatchError, MergeError, OutputLocked, RequestRefused, ServerGone, StorageError
from .manifest import MANIFEST, Manifest
from .merge import merge
from .plan import JobItem, JobSpec, Unit, load_job, parse_classes, plan_units
from .runner import BatchJob, Report
from .settings import BatchSettings
from .sharding import Shard

__all__ = [
    "MANIFEST",
    "BatchError",
    "BatchJob",
    "BatchSettings",
    "JobItem",
    "JobSpec",
    "Manifest",
    "MergeError",
    "OutputLocked",
    "Report",
    "RequestRefused",
    "ServerGone",
    "Shard",
    "StorageError",
    "Unit",
    "load_job",
    "merge",
    "parse_classes",
    "plan_units",
]
