"""``ganserve batch merge``: check every shard folder against the job and join their manifests.

Refuses (exit 6) unless every shard of one job is there and finished, every planned image is
recorded exactly once with the seeds it should have, and every file's sha256 matches its entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from .errors import MergeError
from .files import PARTIAL, fsync_dir, write_atomic
from .formats import identity
from .lock import FolderLock
from .manifest import MANIFEST, encode, parse_manifest
from .plan import JobSpec, plan_units
from .runner import JOB_FILE
from .sharding import Shard, find_shards

SHOWN = 10  # problems named in the message; the count says how many there were


def _shards_of_one_job(out: Path) -> dict[Shard, Path]:
    shards = find_shards(out)
    if not shards:
        raise MergeError(f"{out} has no shard-I-of-N folders to merge")
    counts = sorted({shard.count for shard in shards})
    if len(counts) != 1:
        raise MergeError(f"{out} mixes shard counts {counts}: merge needs the shards of one run")
    missing = sorted(set(range(counts[0])) - {shard.index for shard in shards})
    if missing:
        raise MergeError(
            f"shards {missing} of {counts[0]} have no folder in {out}: run them first "
            f"(--shard-index I --shard-count {counts[0]})"
        )
    return shards


def _job(shards: dict[Shard, Path]) -> JobSpec:
    definitions = set()
    for folder in shards.values():
        try:
            definitions.add(json.dumps(json.loads((folder / JOB_FILE).read_text())["job"]))
        except (OSError, ValueError, KeyError) as exc:
            raise MergeError(f"{folder / JOB_FILE} is missing or unreadable: {exc}") from exc
    if len(definitions) != 1:
        raise MergeError(
            "the shards were run with different jobs (models, seeds, classes, format or psi)"
        )
    return JobSpec.from_definition(json.loads(definitions.pop()))


def _check_shard(
    shard: Shard, folder: Path, units: list, verify: bool
) -> tuple[list[dict], list[str]]:
    """The shard's entries (paths made relative to the job's folder) and what is wrong with them."""
    path = folder / MANIFEST
    entries, dropped = parse_manifest(path.read_bytes() if path.exists() else b"")
    problems = [f"{folder.name}: {n} {kind} manifest line(s)" for kind, n in dropped.items()]
    expected = {unit.file: unit for unit in shard.select(units)}
    problems += [f"{folder.name}: {name} not made" for name in expected.keys() - entries.keys()]
    problems += [f"{folder.name}: {name} is not in the job" for name in entries.keys() - expected]
    for name, entry in entries.items():
        unit = expected.get(name)
        if unit is not None and any(entry.get(k) != v for k, v in identity(unit).items()):
            problems.append(f"{folder.name}: {name} records other seeds than planned")
        if verify:
            try:
                digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            except OSError as exc:
                digest = f"unreadable ({exc.strerror})"
            if digest != entry.get("sha256"):
                problems.append(f"{folder.name}: {name} sha256 {digest} != manifest's")
    return [{**e, "file": f"{folder.name}/{e['file']}"} for e in entries.values()], problems


def merge(out: Path, verify: bool = True) -> dict:
    """Write ``out/manifest.jsonl`` joining every shard's manifest, or raise :class:`MergeError`."""
    started = time.perf_counter()
    shards = _shards_of_one_job(out)
    with contextlib.ExitStack() as locks:  # a shard still running holds its lock: exit 3
        for folder in [out, *shards.values()]:
            locks.enter_context(FolderLock(folder, "ganserve batch merge"))
        units = plan_units(_job(shards))
        merged, problems = [], []
        for shard, folder in sorted(shards.items(), key=lambda kv: kv[0].index):
            entries, found = _check_shard(shard, folder, units, verify)
            merged += entries
            problems += found
        if problems:
            shown = "; ".join(problems[:SHOWN])
            raise MergeError(
                f"{len(problems)} problem(s), the merged manifest is not written: {shown}. "
                "Run the named shards again (the same command completes them), then merge"
            )
        write_atomic(out / MANIFEST, encode(merged), out / PARTIAL)
        fsync_dir(out)
    return {
        "manifest": str(out / MANIFEST),
        "shards": len(shards),
        "files": len(merged),
        "images": sum(e.get("count", 1) for e in merged),
        "sha256_verified": verify,
        "seconds": round(time.perf_counter() - started, 2),
    }
