"""Many machines per job: shard I of N makes a fixed contiguous slice of the plan in its own folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .plan import Unit

FOLDER = re.compile(r"shard-(\d+)-of-(\d+)")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def folder(self, out: Path) -> Path:
        """A single machine writes into ``out`` itself; shard I of N into ``out/shard-I-of-N``."""
        if self.count == 1:
            return out
        return out / f"shard-{self.index:03d}-of-{self.count:03d}"

    def select(self, units: list[Unit]) -> list[Unit]:
        """A contiguous, balanced slice: the same units on every run with the same plan."""
        start = self.index * len(units) // self.count
        stop = (self.index + 1) * len(units) // self.count
        return units[start:stop]


def find_shards(out: Path) -> dict[Shard, Path]:
    """The shard folders found in ``out`` (of any count, so that a mix can be refused)."""
    found = {}
    for path in sorted(out.iterdir()) if out.is_dir() else []:
        match = FOLDER.fullmatch(path.name)
        if match and path.is_dir():
            found[Shard(int(match[1]), int(match[2]))] = path
    return found
