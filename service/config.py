"""Configuration of ``ganserve serve``: every field is a flag and a GANSERVE_* environment variable."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeConfig:
    address: str = field(
        default="0.0.0.0:50051", metadata={"help": "gRPC listen address (port 0: any free)"}
    )
    backend: str = field(default="embedded", metadata={"help": "embedded (ONNX Runtime) or triton"})
    models: str = field(
        default="deploy/model_repository",
        metadata={
            "help": "embedded: a model repository (<name>/<version>/model.onnx) or one .onnx file"
        },
    )
    triton_url: str = field(
        default="127.0.0.1:8001", metadata={"help": "triton: Triton's gRPC address"}
    )
    metrics_port: int = field(
        default=9090, metadata={"help": "Prometheus /metrics HTTP port (-1: off)"}
    )
    http_port: int = field(
        default=8080,
        metadata={
            "help": "HTTP/JSON API and the explorer page at / (-1: off; 0: any free port); "
            "same TLS and bearer token as gRPC"
        },
    )
    http_cors_origins: str = field(
        default="",
        metadata={
            "help": "origins other sites' pages may call the HTTP API from, comma-separated, "
            "or * (empty: no CORS)"
        },
    )
    max_message_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata={"help": "largest response message (a bigger one is refused before it is built)"},
    )
    max_request_bytes: int = field(
        default=4 * 1024 * 1024,
        metadata={
            "help": "largest request message (the largest legal one, 1024 latents of 200 values, "
            "is under 1 MB); bigger ones are refused by gRPC"
        },
    )
    max_concurrent_rpcs: int = field(
        default=256,
        metadata={
            "help": "generation calls beyond this get RESOURCE_EXHAUSTED before their request "
            "is read (health and reflection are not counted)"
        },
    )
    batching: bool = field(default=True, metadata={"help": "embedded: merge concurrent requests"})
    max_batch_size: int = field(default=64, metadata={"help": "embedded: largest merged batch"})
    max_queue_delay_ms: float = field(
        default=0.0,
        metadata={
            "help": "embedded: longest wait to fill a batch while an instance is free "
            "(0: start at once; calls that arrive while every instance is busy still merge)"
        },
    )
    max_queued_images: int = field(
        default=8192, metadata={"help": "bounded queue per model, in images"}
    )
    instances: int = field(
        default=0,
        metadata={
            "help": "embedded: concurrent inferences per model (0: one per core on CPU, one on GPU)"
        },
    )
    ort_threads: int = field(
        default=0,
        metadata={"help": "embedded: ONNX Runtime threads per inference (0: cores / instances)"},
    )
    max_images: int = field(
        default=1024, metadata={"help": "most images per Generate / activations call"}
    )
    max_steps: int = field(default=1000, metadata={"help": "most Interpolate frames"})
    max_grid: int = field(
        default=256,
        metadata={
            "help": "largest ClassMap resolution (cells per side); 256² takes ~12 s on 2 cores, "
            "within the SDK's 30 s default deadline; raise it together with clients' deadlines"
        },
    )
    classmap_cache_entries: int = field(
        default=64, metadata={"help": "ClassMap results kept for reuse"}
    )
    grace_period_s: float = field(
        default=10.0, metadata={"help": "SIGTERM: time for in-flight calls"}
    )
    tls_cert: str = field(default="", metadata={"help": "server certificate (PEM); enables TLS"})
    tls_key: str = field(default="", metadata={"help": "server private key (PEM)"})
    tls_client_ca: str = field(
        default="", metadata={"help": "CA for client certificates; enables mutual TLS"}
    )
    metrics_tls_cert: str = field(
        default="",
        metadata={"help": "/metrics over HTTPS with this certificate (default: --tls-cert)"},
    )
    metrics_tls_key: str = field(
        default="", metadata={"help": "private key for --metrics-tls-cert (default: --tls-key)"}
    )
    metrics_tls_client_ca: str = field(
        default="",
        metadata={
            "help": "/metrics requires client certificates from this CA (default: --tls-client-ca)"
        },
    )
    metrics_plaintext: bool = field(
        default=False,
        metadata={"help": "serve /metrics over plain HTTP even when gRPC uses TLS"},
    )
    auth_token_file: str = field(
        default="", metadata={"help": "file holding the bearer token clients must send"}
    )
    auth_token_env: str = field(
        default="", metadata={"help": "environment variable holding the bearer token"}
    )
    event_loop: str = field(
        default="auto",
        metadata={
            "help": "asyncio event loop: uvloop (less CPU per call), asyncio, or auto (uvloop when "
            "installed)"
        },
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "service processes sharing the port (SO_REUSEPORT), each with its own "
            "instances and event loop; metrics merged on --metrics-port"
        },
    )
