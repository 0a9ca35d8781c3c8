"""``ganserve batch``: generate large image sets through the service, resumably and losslessly.

The manifest (``manifest.jsonl``) is the single record of what is done: an entry is appended (one
``write`` of one line, flushed and fsynced) only after its file was written atomically (temp file +
rename). A restart drops a torn last line, deletes stray temp files, and regenerates every unit
that has no manifest entry, so killing the job at any moment, even with SIGKILL, and running the
same command again ends with no missing, duplicate or corrupt file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from ganserve.client import Client, GanserveClientError, InvalidArgumentError, ModelNotFoundError
from ganserve.latents import parse_seed_ranges

MANIFEST = "manifest.jsonl"
PERMANENT_ERRORS = (InvalidArgumentError, ModelNotFoundError)  # retrying cannot help


@dataclass(frozen=True)
class JobItem:
    """One line of a job: a model, seeds, and (conditional models) the classes to make each seed in."""

    model: str
    seeds: tuple[int, ...]
    classes: tuple[int | None, ...] = (None,)


@dataclass
class JobSpec:
    items: list[JobItem]
    out: Path
    image_format: str = "png"  # png files, or npz shards
    request_size: int = 64  # images per Generate call (png) / per shard (npz: shard_size)
    shard_size: int = 1000
    concurrency: int = 8
    retries: int = 5


@dataclass(frozen=True)
class Unit:
    """What one manifest entry records: a PNG file, or an NPZ shard of several images."""

    model: str
    label: int | None
    seeds: tuple[int, ...]
    file: str  # relative to the output folder


@dataclass
class Report:
    generated: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "generated": self.generated,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "images_per_s": round(self.generated / self.seconds, 1) if self.seconds else 0.0,
            "failures": self.failures[:20],
        }


def parse_classes(value) -> tuple[int | None, ...]:
    if value is None or value == "":
        return (None,)
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(parse_seed_ranges(value))
    return tuple(int(v) for v in value)


def load_job(path: Path, **defaults) -> JobSpec:
    """A YAML/JSON job: ``out``, ``format``, ``concurrency``, and ``items`` of model/seeds/classes."""
    data = yaml.safe_load(path.read_text())
    items = [
        JobItem(
            item["model"],
            tuple(parse_seed_ranges(str(item["seeds"]))),
            parse_classes(item.get("classes")),
        )
        for item in data["items"]
    ]
    settings = {
        k: v
        for k, v in data.items()
        if k in {"image_format", "request_size", "shard_size", "concurrency", "retries"}
    }
    if "format" in data:
        settings["image_format"] = data["format"]
    out = Path(data.get("out", defaults.pop("out", "batch-out")))
    return JobSpec(items=items, out=out, **{**defaults, **settings})


def plan_units(spec: JobSpec) -> list[Unit]:
    """Every output file of the job, in a fixed order (the same on every run of the same job)."""
    units = []
    for item in spec.items:
        for label in item.classes:
            folder = item.model if label is None else f"{item.model}/class-{label:03d}"
            if spec.image_format == "npz":
                for start in range(0, len(item.seeds), spec.shard_size):
                    seeds = item.seeds[start : start + spec.shard_size]
                    units.append(
                        Unit(
                            item.model,
                            label,
                            seeds,
                            f"{folder}/shard-{seeds[0]:010d}-{seeds[-1]:010d}.npz",
                        )
                    )
            else:
                units.extend(
                    Unit(item.model, label, (seed,), f"{folder}/{seed:010d}.png")
                    for seed in item.seeds
                )
    return units


def _write_atomic(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


class Manifest:
    """Append-only JSONL; on open, a torn last line (from a kill mid-write) is cut off."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.done: set[str] = set()
        if path.exists():
            raw = path.read_bytes()
            keep = raw[: raw.rfind(b"\n") + 1]
            if len(keep) != len(raw):
                with open(path, "r+b") as f:
                    f.truncate(len(keep))
            for line in keep.decode().splitlines():
                if line.strip():
                    self.done.add(json.loads(line)["file"])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()

    def append(self, entries: list[dict]) -> None:
        payload = b"".join((json.dumps(e, sort_keys=True) + "\n").encode() for e in entries)
        with self._lock:
            self._file.write(payload)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.done.update(e["file"] for e in entries)

    def close(self) -> None:
        self._file.close()


def _remove_stray_temp_files(out: Path) -> None:
    for tmp in out.rglob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


class BatchJob:
    def __init__(self, spec: JobSpec, client: Client, progress: bool = True):
        self.spec, self.client, self.progress = spec, client, progress

    def _generate(self, units: list[Unit]) -> list[dict]:
        """One Generate call for units of one model and class; writes their files; returns manifest entries."""
        first = units[0]
        seeds = [s for u in units for s in u.seeds]
        images = self.client.generate(first.model, seeds=seeds, labels=first.label)
        entries, offset = [], 0
        for unit in units:
            chunk = images[offset : offset + len(unit.seeds)]
            offset += len(unit.seeds)
            if self.spec.image_format == "npz":
                arrays = np.stack([np.asarray(i.to_pil()) for i in chunk])
                buffer = io.BytesIO()
                np.savez_compressed(
                    buffer,
                    images=arrays,
                    seeds=np.array(unit.seeds, np.int64),
                    latents=np.stack([i.latent for i in chunk]),
                    labels=np.array([-1 if i.label is None else i.label for i in chunk], np.int64),
                )
                digest = _write_atomic(self.spec.out / unit.file, buffer.getvalue())
                entries.append(
                    {
                        "model": unit.model,
                        "class": unit.label,
                        "seeds": [unit.seeds[0], unit.seeds[-1]],
                        "count": len(chunk),
                        "file": unit.file,
                        "sha256": digest,
                    }
                )
            else:
                image = chunk[0]
                digest = _write_atomic(self.spec.out / unit.file, image.png)
                entries.append(
                    {
                        "model": unit.model,
                        "class": unit.label,
                        "seed": image.seed,
                        "latent": [round(float(v), 8) for v in image.latent],
                        "file": unit.file,
                        "sha256": digest,
                    }
                )
        return entries

    def _with_retries(self, units: list[Unit], manifest: Manifest) -> int:
        delay = 0.5
        for attempt in range(self.spec.retries + 1):
            try:
                manifest.append(self._generate(units))
                return sum(len(u.seeds) for u in units)
            except PERMANENT_ERRORS:
                raise
            except (GanserveClientError, OSError):
                if attempt == self.spec.retries:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        return 0

    def _requests(self, todo: list[Unit]) -> Iterator[list[Unit]]:
        """Group pending units into calls: same model and class, up to request_size images."""
        per_call = 1 if self.spec.image_format == "npz" else self.spec.request_size
        group: list[Unit] = []
        for unit in todo:
            if group and (
                len(group) == per_call
                or (unit.model, unit.label) != (group[0].model, group[0].label)
            ):
                yield group
                group = []
            group.append(unit)
        if group:
            yield group

    def run(self) -> Report:
        started = time.perf_counter()
        out = self.spec.out
        out.mkdir(parents=True, exist_ok=True)
        _remove_stray_temp_files(out)
        manifest = Manifest(out / MANIFEST)
        units = plan_units(self.spec)
        todo = [u for u in units if u.file not in manifest.done]
        report = Report(skipped=sum(len(u.seeds) for u in units if u.file in manifest.done))
        bar = tqdm(
            total=sum(len(u.seeds) for u in todo),
            unit="img",
            disable=not self.progress,
            smoothing=0.1,
            dynamic_ncols=True,
        )
        try:
            with ThreadPoolExecutor(self.spec.concurrency) as pool:
                pending: dict = {}
                for group in self._requests(todo):
                    while (
                        len(pending) >= 2 * self.spec.concurrency
                    ):  # bounded: never queue the whole job
                        self._collect(
                            wait(pending, return_when=FIRST_COMPLETED).done, pending, report, bar
                        )
                    pending[pool.submit(self._with_retries, group, manifest)] = group
                self._collect(wait(pending).done, pending, report, bar)
        finally:
            bar.close()
            manifest.close()
        report.seconds = time.perf_counter() - started
        return report

    @staticmethod
    def _collect(done, pending: dict, report: Report, bar) -> None:
        for future in done:
            group = pending.pop(future)
            try:
                count = future.result()
                report.generated += count
                bar.update(count)
            except Exception as exc:  # noqa: BLE001 - counted and reported; the job goes on
                report.failed += sum(len(u.seeds) for u in group)
                report.failures.append(f"{group[0].file}…: {exc}")
