"""How ``ganserve serve`` runs: the event loop, and one process or ``--workers N`` on one port.

uvloop (libuv) runs the same grpc.aio server with less CPU per call than asyncio's own loop
(benchmarks/serve_throughput.py measures the fixed-response floor server on both).

One Python process is bound by its GIL to about one core of gRPC and request handling. With
``--workers N`` a supervisor reserves the port and starts N service processes (spawned, never
forked: grpc must not be forked once started) that each bind it with ``SO_REUSEPORT``, as grpc's
own multiprocessing example does; the kernel spreads connections over them. Each worker has its
own backend, batcher and instances (the cores divided between the workers). Their metrics go
through prometheus-client's multiprocess mode (one file per process in a shared folder), and the
supervisor serves them merged on ``--metrics-port``: one scrape target, counters and histograms
summed, in-flight gauges summed over live workers, so dashboards and alerts stay as they are.
SIGTERM/SIGINT to the supervisor is passed to every worker, each drains as a single server does
(health NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within the grace period); a
worker that dies is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path

from .config import ServeConfig
from .metrics import MULTIPROCESS_ENV

log = logging.getLogger(__name__)
EVENT_LOOPS = ("auto", "uvloop", "asyncio")

START_TIMEOUT_S = 300.0  # a worker loads every model before it is ready
STOP_MARGIN_S = 15.0  # beyond the grace period, before a worker that does not end is killed
POLL_S = 0.2


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``name`` stands for (None: asyncio's default)."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event_loop must be one of {EVENT_LOOPS}, got {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def run_loop(main: Coroutine, event_loop: str = "auto") -> None:
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main)


def run(config: ServeConfig) -> None:
    """Serve until SIGTERM/SIGINT, then drain: in this process, or in ``config.workers``."""
    if config.workers < 1:
        raise ValueError(f"workers must be at least 1, got {config.workers}")
    if config.workers == 1:
        from .server import serve

        run_loop(serve(config), config.event_loop)
    else:
        Supervisor(config).run()


@contextlib.contextmanager
def reserved_port(address: str) -> Iterator[str]:
    """``address`` with its port resolved (port 0: a free one), held by a bound SO_REUSEPORT
    socket until the workers are gone, so nothing else takes it meanwhile."""
    host, _, port = address.rpartition(":")
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host.strip("[]") or None, int(port), 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
        yield f"{host}:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _drain_when_orphaned(lifeline: Connection) -> None:
    """In a thread of each worker: the supervisor holds the other end of ``lifeline``; when it
    is gone (even killed with SIGKILL) the read ends, and the worker drains as on SIGTERM rather
    than serve on without a supervisor."""
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(
    config: ServeConfig, index: int, ready: Connection, lifeline: Connection, log_level: int
) -> None:
    """One worker process: the service on the shared port, metrics into the shared folder."""
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s %(levelname)s worker {index} %(name)s: %(message)s"
    )
    threading.Thread(target=_drain_when_orphaned, args=(lifeline,), daemon=True).start()
    from .server import serve

    def started(service) -> None:
        ready.send((os.getpid(), service.port))
        ready.close()

    run_loop(serve(config, started=started), config.event_loop)


@dataclasses.dataclass
class _Worker:
    index: int
    process: multiprocessing.Process
    ready: Connection | None  # until the worker said it serves
    lifeline: Connection  # open while this supervisor lives (the worker watches it)
    started: float = dataclasses.field(default_factory=time.monotonic)


class Supervisor:
    """Starts ``config.workers`` service processes on one port, serves their merged metrics,
    passes SIGTERM/SIGINT on and waits for every worker to drain."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._stopping = False

    def run(self) -> None:
        own_dir = MULTIPROCESS_ENV not in os.environ
        metrics_dir = Path(os.environ.get(MULTIPROCESS_ENV) or tempfile.mkdtemp(prefix="ganserve-"))
        for stale in metrics_dir.glob("*.db"):  # prometheus-client: wipe between runs
            stale.unlink()
        os.environ[MULTIPROCESS_ENV] = str(metrics_dir)  # the spawned workers inherit it
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        host = self.config.address.rpartition(":")[0]
        http = self.config.http_port >= 0
        try:
            with (
                reserved_port(self.config.address) as address,
                reserved_port(f"{host}:{self.config.http_port if http else 0}") as http_address,
            ):
                worker_config = dataclasses.replace(
                    self.config,
                    address=address,
                    http_port=int(http_address.rpartition(":")[2]) if http else -1,
                    metrics_port=-1,
                )
                for index in range(self.config.workers):
                    self._start(index, worker_config)
                self._wait_until_ready()
                metrics_http = self._serve_metrics(metrics_dir)
                metrics_port = None if metrics_http is None else metrics_http.server_port
                http_port = worker_config.http_port if http else None
                print(f"ganserve: gRPC on port {address.rpartition(':')[2]}, HTTP/JSON and the explorer on "
                      f"port {http_port}, metrics on port {metrics_port} ({self.config.workers} workers)",
                      flush=True)  # fmt: skip
                self._supervise(worker_config, metrics_dir)
                if metrics_http is not None:
                    metrics_http.shutdown()
                    metrics_http.server_close()
        finally:
            self._stop_all()
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)

    def _stop(self, signum, frame) -> None:
        self._stopping = True

    def _start(self, index: int, config: ServeConfig) -> None:
        receive, send = self._context.Pipe(duplex=False)
        lifeline, held = self._context.Pipe(duplex=False)  # this process keeps `held` open
        process = self._context.Process(
            target=_worker_main,
            args=(config, index, send, lifeline, logging.getLogger().getEffectiveLevel()),
            name=f"ganserve-worker-{index}",
        )
        process.start()
        send.close()
        lifeline.close()
        self._workers[index] = _Worker(index, process, receive, held)

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while any(w.ready is not None for w in self._workers.values()):
            if self._stopping:
                raise SystemExit(0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not serving after {START_TIMEOUT_S:.0f} s")
            self._poll()
            for worker in self._workers.values():
                if not worker.process.is_alive() and worker.ready is not None:
                    raise RuntimeError(
                        f"worker {worker.index} exited with {worker.process.exitcode} before "
                        "it served (see its log above)"
                    )

    def _poll(self) -> None:
        """Wait a little for a worker's ready message or exit; take ready messages."""
        waiting = {w.ready: w for w in self._workers.values() if w.ready is not None}
        sentinels = [w.process.sentinel for w in self._workers.values()]
        for ready in wait([*waiting, *sentinels], timeout=POLL_S):
            worker = waiting.get(ready)
            if worker is None:
                continue
            with contextlib.suppress(EOFError, OSError):
                pid, port = ready.recv()
                log.info("worker %d (pid %d) serves on port %d", worker.index, pid, port)
            ready.close()
            worker.ready = None

    def _serve_metrics(self, metrics_dir: Path):
        if self.config.metrics_port < 0:
            return None
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        from .server import metrics_tls

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))
        host = self.config.address.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
        server, _thread = start_http_server(
            self.config.metrics_port, addr=host, registry=registry, **metrics_tls(self.config)
        )  # the same TLS as one process's /metrics
        return server

    def _supervise(self, config: ServeConfig, metrics_dir: Path) -> None:
        """Until a stop signal: replace a worker that died."""
        from prometheus_client.multiprocess import mark_process_dead

        while not self._stopping:
            self._poll()
            for index, worker in list(self._workers.items()):
                if worker.process.is_alive() or self._stopping:
                    continue
                if worker.ready is not None:  # a replacement that never served: do not loop
                    raise RuntimeError(
                        f"worker {index} exited with {worker.process.exitcode} before it served"
                    )
                log.error(
                    "worker %d (pid %d) exited with %s; starting another",
                    index, worker.process.pid, worker.process.exitcode,
                )  # fmt: skip
                mark_process_dead(worker.process.pid, str(metrics_dir))
                self._start(index, config)

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains), then wait; kill what outlives the grace."""
        for worker in self._workers.values():
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace_period_s + STOP_MARGIN_S
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.warning("worker %d did not end in time; killing it", worker.index)
                worker.process.kill()
                worker.process.join()
