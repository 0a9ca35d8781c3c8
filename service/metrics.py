"""Prometheus metrics, recorded by the call gate (per RPC, calls.py) and one observer (per batch)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ganserve.description import ModelDescription

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set for the workers of --workers N (workers.py)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}  # see child()
        # transport: "grpc" or "http" (the HTTP/JSON face passes the same call gate).
        self.requests = Counter(
            "ganserve_requests",
            "RPCs by method, status code and transport",
            ["method", "code", "transport"],
            registry=r,
        )
        self.latency = Histogram(
            "ganserve_request_latency_seconds",
            "RPC latency by method and transport",
            ["method", "transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Gauges say how the workers of `--workers N` merge (prometheus-client multiprocess
        # mode; ignored in one process): in flight summed, ready only when every worker is.
        self.in_flight = Gauge(
            "ganserve_in_flight_requests", "RPCs being served", ["method"], registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.images = Counter(
            "ganserve_images_generated", "images returned to clients", ["model"], registry=r
        )
        self.batch_size = Histogram(
            "ganserve_batch_size",
            "images per inference",
            ["backend", "model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "ganserve_queue_seconds", "time requests waited for a batch", ["backend", "model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_time = Histogram(
            "ganserve_inference_seconds", "inference time per batch", ["backend", "model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.model_info = Gauge(
            "ganserve_model_info",
            "served models",
            ["model", "kind", "backend", "latent_dim", "dataset"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self._described: set[tuple[str, ...]] = set()
        self.backend_ready = Gauge(
            "ganserve_backend_ready", "1 while the backend can serve", ["backend"], registry=r,
            multiprocess_mode="livemin",
        )  # fmt: skip

    def child(self, metric, *labels: str):
        """``metric.labels(*labels)``, made once per metric and labels: prometheus-client's own
        lookup costs more than a dict's, and the call gate and the batcher ask on every call."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    # InferenceObserver
    def batch_done(
        self, backend: str, model: str, batch_size: int, queue_s: float, inference_s: float
    ) -> None:
        self.child(self.batch_size, backend, model).observe(batch_size)
        self.child(self.queue_time, backend, model).observe(queue_s)
        self.child(self.inference_time, backend, model).observe(inference_s)

    def describe_models(self, models: dict[str, ModelDescription], backend: str) -> None:
        described = {
            (m.name, m.kind.value, backend, str(m.latent_dim), m.dataset) for m in models.values()
        }
        if MULTIPROCESS_ENV in os.environ:  # --workers: the shared files keep every label set
            for labels in self._described - described:
                self.model_info.labels(*labels).set(0)
        else:
            self.model_info.clear()
        for labels in described:
            self.model_info.labels(*labels).set(1)
        self._described = described

    def serve_http(self, port: int, address: str = "0.0.0.0", tls: dict | None = None):
        """Start ``/metrics``; returns the HTTP server (``server_port`` is the bound port).
        ``tls``: prometheus-client's ``certfile``, ``keyfile``, ``client_cafile`` and
        ``client_auth_required`` for HTTPS, with client certificates when a CA is given."""
        server, _thread = start_http_server(
            port, addr=address, registry=self.registry, **(tls or {})
        )
        return server
