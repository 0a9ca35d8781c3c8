"""Assembles and runs the service: backend, servicer, health, reflection, metrics, TLS, auth,
and the HTTP/JSON face with the explorer page.

``create_server(config)`` returns a started :class:`Service` whose ``port`` is the bound port, so
tests bind port 0. ``serve(config)`` runs until SIGTERM/SIGINT and drains gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ganserve.v1 import generation_pb2 as pb

from .auth import BearerToken, load_token
from .backends.base import Backend
from .calls import CallGate
from .config import ServeConfig
from .http_face import HttpFace, start_http_face
from .metrics import ServiceMetrics
from .operations import Operations
from .servicer import GenerationServicer

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"]
SERVICE_NAME = SERVICE.full_name
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_PROBE_S = 0.5
REQUEST_WINDOW_BYTES = 1 << 20  # the HTTP/2 receive window of each call (see create_server)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """Only the API's and health's proto files and what they import: the default pool also holds
    whatever else this process loaded (Triton's protos), which reflection would hand out."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file) -> None:
        if file.name in added:
            return
        for dependency in file.dependencies:  # a file is added after the files it imports
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
        added.add(file.name)

    add(pb.DESCRIPTOR)
    add(health_pb2.DESCRIPTOR)
    return pool


def build_backend(config: ServeConfig, metrics: ServiceMetrics) -> Backend:
    if config.backend == "embedded":
        from .backends.embedded import EmbeddedBackend, EmbeddedSettings

        settings = EmbeddedSettings(
            repository=Path(config.models),
            max_batch_size=config.max_batch_size,
            max_queue_delay_ms=config.max_queue_delay_ms,
            max_queued_images=config.max_queued_images,
            batching=config.batching,
            instances=config.instances,
            intra_op_threads=config.ort_threads,
            workers=config.workers,
        )
        return EmbeddedBackend(settings, observer=metrics)
    if config.backend == "triton":
        from .backends.triton import TritonBackend

        return TritonBackend(config.triton_url, observer=metrics)
    raise ValueError(f"backend must be embedded or triton, got {config.backend!r}")


def _credentials(config: ServeConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert:
        return None
    key = Path(config.tls_key).read_bytes()
    cert = Path(config.tls_cert).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def metrics_tls(config: ServeConfig) -> dict[str, str | bool]:
    """prometheus-client's TLS arguments for /metrics: by default the gRPC port's certificate and
    client CA, so turning TLS on never leaves the metrics in plain HTTP by accident."""
    cert = config.metrics_tls_cert or config.tls_cert
    if config.metrics_plaintext or not cert:
        return {}
    client_ca = config.metrics_tls_client_ca or config.tls_client_ca
    tls: dict[str, str | bool] = {
        "certfile": cert,
        "keyfile": config.metrics_tls_key or config.tls_key,
    }
    if client_ca:
        tls.update(client_cafile=client_ca, client_auth_required=True)
    return tls


@dataclass
class Service:
    config: ServeConfig
    server: grpc.aio.Server
    backend: Backend
    metrics: ServiceMetrics
    health: health.aio.HealthServicer
    port: int
    calls: CallGate | None = None
    metrics_http: object | None = None
    http: HttpFace | None = None
    _watch: asyncio.Task | None = field(default=None, repr=False)
    _serving: bool = True

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_http is None else self.metrics_http.server_port

    async def _set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _publish(self, ready: bool) -> None:
        """Health, the backend-ready gauge and (when ready) the served models' info metric."""
        await self._set_health(ready)
        self.metrics.backend_ready.labels(self.backend.name).set(1 if ready else 0)
        if ready:
            self.metrics.describe_models(self.backend.models(), self.backend.name)

    async def _watch_backend(self, last: bool) -> None:
        """Health follows the backend (Triton down → NOT_SERVING, back → SERVING)."""
        while self._serving:
            await asyncio.sleep(HEALTH_PROBE_S)
            ready = self.backend.is_ready()
            if ready != last:
                await self._publish(ready)
                last = ready

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful: health NOT_SERVING, new calls UNAVAILABLE, in-flight calls finish within grace."""
        grace = self.config.grace_period_s if grace_s is None else grace_s
        self._serving = False
        if self._watch is not None:
            self._watch.cancel()
        await self._set_health(False)
        ends = asyncio.get_running_loop().time() + grace
        if self.calls is not None and not await self.calls.drain(grace):
            log.warning(
                "grace period of %.1fs over with %d calls still running",
                grace,
                self.calls.in_flight,
            )
        # Handlers have returned, but a stream's last messages and status may still be on their
        # way to a slow reader: the rest of the grace period is theirs (grpc ends sooner when
        # every call is done), then grpc cancels what is left.
        await self.server.stop(max(0.5, ends - asyncio.get_running_loop().time()))
        if self.http is not None:
            await self.http.close()
        await self.backend.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


async def create_server(config: ServeConfig, backend: Backend | None = None) -> Service:
    metrics = ServiceMetrics()
    backend = backend or build_backend(config, metrics)
    await backend.start()
    token = load_token(config.auth_token_file, config.auth_token_env)
    # The call limit is the gate's, not grpc's `maximum_concurrent_rpcs`: grpc's counts every
    # call, health checks included, so a busy server would fail its liveness probes.
    calls = CallGate(metrics, BearerToken(token) if token else None, config.max_concurrent_rpcs)
    options = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_request_bytes),
        # A fixed receive window instead of one grown by BDP probing: the window is what gRPC
        # buffers of a body the gate has not asked for. Grown, it reached ~9 MB a connection
        # (16 unauthenticated 60 MB uploads: +141 MB RSS on CI). 1 MiB holds every legal
        # request (< 1 MB), so none waits on a window update; responses use the client's window.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", REQUEST_WINDOW_BYTES),
        ("grpc.so_reuseport", 1 if config.workers > 1 else 0),  # workers share the port
    ]
    server = grpc.aio.server(options=options)
    operations = Operations(backend, config)
    handlers = calls.handlers(GenerationServicer(operations), SERVICE)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, HEALTH_NAME), server, reflection_pool())
    credentials = _credentials(config)
    port = (
        server.add_secure_port(config.address, credentials)
        if credentials
        else server.add_insecure_port(config.address)
    )
    if port == 0:
        raise OSError(f"cannot listen on {config.address}")
    await server.start()
    service = Service(config, server, backend, metrics, health_servicer, port, calls)
    host = config.address.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
    if config.http_port >= 0:  # the same operations and call gate, labelled transport="http"
        service.http = await start_http_face(
            GenerationServicer(operations, calls, transport="http"), config, host
        )
    if config.metrics_port >= 0:
        service.metrics_http = metrics.serve_http(config.metrics_port, host, metrics_tls(config))
    ready = backend.is_ready()
    await service._publish(ready)
    service._watch = asyncio.get_running_loop().create_task(service._watch_backend(ready))
    log.info(
        "serving %s on port %d (%s backend, models: %s; HTTP on %s; metrics on %s)",
        SERVICE_NAME, port, backend.name, ", ".join(sorted(backend.models())) or "none yet",
        service.http_port, service.metrics_port,
    )  # fmt: skip
    return service


def _announce(service: Service) -> None:
    print(
        f"ganserve: gRPC on port {service.port}, HTTP/JSON and the explorer on port "
        f"{service.http_port}, metrics on port {service.metrics_port}",
        flush=True,
    )


async def serve(config: ServeConfig, started: Callable[[Service], None] = _announce) -> None:
    """Serve until SIGTERM/SIGINT, then drain; ``started`` is told once the server listens."""
    service = await create_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started(service)
    await stop.wait()
    log.info("shutting down: draining in-flight calls for up to %.1fs", config.grace_period_s)
    await service.stop()
