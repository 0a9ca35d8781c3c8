"""What a job makes: its items, every output file (a unit) in a fixed order, and the calls."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from ganserve.errors import UsageError
from ganserve.latents import parse_seed_ranges

from .settings import BatchSettings


@dataclass(frozen=True)
class JobItem:
    """One line of a job: a model, seeds, and (conditional models) the classes to make each seed in."""

    model: str
    seeds: tuple[int, ...]
    classes: tuple[int | None, ...] = (None,)


@dataclass
class JobSpec:
    items: list[JobItem]
    settings: BatchSettings

    @property
    def out(self) -> Path:
        return Path(self.settings.out)

    def definition(self) -> dict:
        """What decides the files the job makes (not how fast): equal definitions, equal plans."""
        return {
            "items": [
                {"model": i.model, "seeds": format_seed_ranges(i.seeds), "classes": list(i.classes)}
                for i in self.items
            ],
            "format": self.settings.format,
            "shard_size": self.settings.shard_size if self.settings.format == "npz" else None,
            "psi": self.settings.psi,
        }

    @classmethod
    def from_definition(cls, definition: dict) -> JobSpec:
        items = [
            JobItem(i["model"], tuple(parse_seed_ranges(i["seeds"])), tuple(i["classes"]))
            for i in definition["items"]
        ]
        settings = BatchSettings(format=definition["format"], psi=definition.get("psi"))
        if definition.get("shard_size"):
            settings.shard_size = definition["shard_size"]
        return cls(items, settings)


@dataclass(frozen=True)
class Unit:
    """What one manifest entry records: a PNG file, or an NPZ file of several images."""

    model: str
    label: int | None
    seeds: tuple[int, ...]
    file: str  # relative to the output folder


def parse_classes(value) -> tuple[int | None, ...]:
    if value is None or value == "":
        return (None,)
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(parse_seed_ranges(value))
    return tuple(int(v) for v in value)


def format_seed_ranges(seeds) -> str:
    """The inverse of :func:`parse_seed_ranges`: ``[0, 1, 2, 7]`` → ``"0-2,7"``."""
    parts: list[str] = []
    start = previous = None
    for seed in [*seeds, None]:
        if start is not None and seed == previous + 1:
            previous = seed
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = seed
    return ",".join(parts)


SETTINGS_IN_JOB_FILE = {"out", "format", "shard_size", "request_size", "concurrency", "retries"}


def load_job(path: Path) -> tuple[list[JobItem], dict]:
    """A YAML/JSON job: ``items`` of model/seeds/classes, and settings that override the flags."""
    try:
        data = yaml.safe_load(path.read_text())
        items = [
            JobItem(
                str(item["model"]),
                tuple(parse_seed_ranges(str(item["seeds"]))),
                parse_classes(item.get("classes")),
            )
            for item in data["items"]
        ]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"{path}: not a job file ({exc}); it needs items: [{{model, seeds, classes}}]"
        ) from exc
    unknown = set(data) - SETTINGS_IN_JOB_FILE - {"items"}
    if unknown:
        raise UsageError(f"{path}: unknown keys {sorted(unknown)}")
    return items, {k: v for k, v in data.items() if k != "items"}


def plan_units(spec: JobSpec) -> list[Unit]:
    """Every output file of the job, once, in a fixed order (the same on every run of the job)."""
    units: dict[str, Unit] = {}  # by file: overlapping seed ranges make each image once
    npz, shard_size = spec.settings.format == "npz", spec.settings.shard_size
    for item in spec.items:
        for label in item.classes:
            folder = item.model if label is None else f"{item.model}/class-{label:03d}"
            if npz:
                for start in range(0, len(item.seeds), shard_size):
                    seeds = item.seeds[start : start + shard_size]
                    name = f"{folder}/shard-{seeds[0]:010d}-{seeds[-1]:010d}.npz"
                    units.setdefault(name, Unit(item.model, label, seeds, name))
            else:
                for seed in item.seeds:
                    name = f"{folder}/{seed:010d}.png"
                    units.setdefault(name, Unit(item.model, label, (seed,), name))
    return list(units.values())


def group_units(units: list[Unit], request_size: int) -> Iterator[list[Unit]]:
    """Units that one worker makes together: one model and class, up to ``request_size`` images
    (an NPZ file is one group, made in calls of ``request_size``)."""
    group: list[Unit] = []
    for unit in units:
        if group and (
            sum(len(u.seeds) for u in group) + len(unit.seeds) > request_size
            or (unit.model, unit.label) != (group[0].model, group[0].label)
        ):
            yield group
            group = []
        group.append(unit)
    if group:
        yield group
