"""Run a job through the service: the calls, their retries, and when the whole job must stop.

A group of units is generated, its files written atomically, then its manifest entries appended;
only then is it done. A permanent error (a refused request, a storage error, a server gone for
``--give-up-after-s``) stops the job at once: nothing new is sent, calls in flight finish or are
dropped, and files that did not make it into the manifest are removed before the run ends.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from tqdm import tqdm

from ganserve.client import Client, GanserveClientError

from .errors import EXIT_DONE, EXIT_INCOMPLETE, BatchError, Interrupted, StorageError
from .files import (
    PARTIAL,
    remove_files,
    remove_partial,
    remove_present,
    write_atomic,
    write_files,
)
from .formats import ENCODERS, identity
from .lock import FolderLock
from .manifest import MANIFEST, Manifest
from .plan import JobSpec, Unit, format_seed_ranges, group_units, plan_units
from .retry import Outage, refused, unreachable
from .sharding import Shard

JOB_FILE = "job.json"  # what this folder's job makes; `ganserve batch merge` checks shards by it


class UnitFailed(Exception):
    """A call kept failing while the server answered others: counted, and the job goes on."""


def images(units: list[Unit]) -> int:
    return sum(len(u.seeds) for u in units)


@dataclass
class Report:
    shard: str = "0/1"
    generated: int = 0
    skipped: int = 0
    failed: int = 0
    left: int = 0  # not made (failed, or not reached before a stop): the next run makes them
    failures: list[str] = field(default_factory=list)
    manifest_repaired: dict[str, int] = field(default_factory=dict)
    error: BatchError | None = None
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return EXIT_INCOMPLETE if self.left else EXIT_DONE

    def as_dict(self) -> dict:
        return {
            "shard": self.shard,
            "generated": self.generated,
            "skipped": self.skipped,
            "failed": self.failed,
            "left": self.left,
            "seconds": round(self.seconds, 2),
            "images_per_s": round(self.generated / self.seconds, 1) if self.seconds else 0.0,
            "manifest_repaired": self.manifest_repaired,
            "failures": self.failures[:20],
            "stopped": None if self.error is None else str(self.error),
            "exit_code": self.exit_code,
        }


class BatchJob:
    def __init__(self, spec: JobSpec, client: Client):
        spec.settings.check()
        self.spec, self.client, self.settings = spec, client, spec.settings
        self.shard = Shard(*spec.settings.shard())
        self.folder = self.shard.folder(spec.out)
        self._encode = ENCODERS[spec.settings.format]
        self._stop = threading.Event()

    def run(self) -> Report:
        started = time.perf_counter()
        with FolderLock(self.folder):
            try:
                remove_partial(self.folder)
                manifest = Manifest(self.folder / MANIFEST)
                self._record_job()
            except OSError as exc:
                raise StorageError.from_os_error(exc, f"cannot prepare {self.folder}") from exc
            units = self.shard.select(plan_units(self.spec))
            todo = [u for u in units if u.file not in manifest]
            report = Report(
                shard=f"{self.shard.index}/{self.shard.count}",
                skipped=images(units) - images(todo),
                manifest_repaired=dict(manifest.repaired),
            )
            try:
                self._make(todo, manifest, report)
            finally:
                left = [u for u in todo if u.file not in manifest]
                remove_present(self.folder, (u.file for u in left))  # written, never recorded
                remove_partial(self.folder)
                manifest.close()
        report.left = images(left)
        report.seconds = time.perf_counter() - started
        return report

    def _record_job(self) -> None:
        record = {
            "job": self.spec.definition(),
            "shard": {"index": self.shard.index, "count": self.shard.count},
        }
        data = (json.dumps(record, indent=1) + "\n").encode()
        path = self.folder / JOB_FILE
        if not path.exists() or path.read_bytes() != data:
            write_atomic(path, data, self.folder / PARTIAL)

    def _make(self, todo: list[Unit], manifest: Manifest, report: Report) -> None:
        groups = list(group_units(todo, self.settings.request_size))
        if not groups:
            return
        # The largest call goes first, alone: a request the server refuses (too many images, an
        # unknown model) stops the job before anything else is sent.
        first = max(range(len(groups)), key=lambda i: images(groups[i]))
        groups = [groups[first], *groups[:first], *groups[first + 1 :]]
        outage = Outage(self.settings.give_up_after_s, self.settings.address)
        bar = tqdm(total=images(todo), unit="img", disable=not self.settings.progress,
                   smoothing=0.1, dynamic_ncols=True)  # fmt: skip
        pending: dict[Future, list[Unit]] = {}

        def settle(done) -> None:
            for future in done:
                self._settle(future, pending.pop(future), report, bar)
            if self._stop.is_set():
                for future in pending:
                    future.cancel()

        try:
            with ThreadPoolExecutor(self.settings.concurrency) as pool:
                try:
                    for n, group in enumerate(groups):
                        if self._stop.is_set():
                            break
                        pending[pool.submit(self._make_group, group, manifest, outage)] = group
                        while pending and (n == 0 or len(pending) >= 2 * self.settings.concurrency):
                            settle(wait(pending, return_when=FIRST_COMPLETED).done)
                    settle(wait(pending).done)
                except KeyboardInterrupt:  # SIGINT, or SIGTERM turned into it by the CLI
                    report.error = report.error or Interrupted(
                        "interrupted: run the same command again to finish"
                    )
                    self._stop.set()
                    settle(wait(pending).done)
        finally:
            bar.close()

    def _settle(self, future: Future, group: list[Unit], report: Report, bar) -> None:
        try:
            count = future.result()
        except CancelledError:
            return
        except UnitFailed as exc:
            report.failed += images(group)
            report.failures.append(str(exc))
        except BatchError as exc:
            report.error = report.error or exc
            self._stop.set()
        else:
            report.generated += count
            bar.update(count)

    def _call(self, group: list[Unit], outage: Outage) -> list:
        """Generate a group's images, retrying what may pass later; raises what stops the job."""
        model, label = group[0].model, group[0].label
        seeds = [s for u in group for s in u.seeds]
        size, tries, counted = self.settings.request_size, 0, 0
        while True:
            if self._stop.is_set():
                raise CancelledError
            outage.check()
            timeout_s = outage.call_timeout_s(self.settings.timeout_s)
            try:
                generated = [
                    image
                    for start in range(0, len(seeds), size)
                    for image in self.client.generate(
                        model,
                        seeds=seeds[start : start + size],
                        labels=label,
                        psi=self.settings.psi,
                        timeout_s=timeout_s,
                    )
                ]
            except GanserveClientError as exc:
                what = f"{model} seeds {format_seed_ranges(seeds)}"
                permanent = refused(exc, what)
                if permanent is not None:
                    raise permanent from None
                outage.failed(exc)
                outage.check()  # a deadline cut short by the give-up clock ends here, uncounted
                if not unreachable(exc):  # the server answered: the call's own retries count
                    counted += 1
                    if counted > self.settings.retries:
                        raise UnitFailed(f"{what}: {exc}") from None
                tries += 1
                self._stop.wait(outage.backoff_s(tries))
                continue
            outage.succeeded()
            return generated

    def _make_group(self, group: list[Unit], manifest: Manifest, outage: Outage) -> int:
        generated = self._call(group, outage)
        files, entries, offset = [], [], 0
        for unit in group:
            data, extra = self._encode(unit, generated[offset : offset + len(unit.seeds)])
            offset += len(unit.seeds)
            files.append((unit.file, data))
            entries.append({**identity(unit), **extra})
        try:
            for entry, digest in zip(entries, write_files(self.folder, files), strict=True):
                entry["sha256"] = digest
            try:
                manifest.append(entries)
            except BaseException:
                remove_files(self.folder, (u.file for u in group))
                raise
        except OSError as exc:
            raise StorageError.from_os_error(exc, f"cannot write {group[0].file}") from exc
        return images(group)
