"""``ganserve serve --workers 2`` for real: both processes serve the one port, their metrics come
merged from one endpoint, health answers on every connection, and SIGTERM drains them all."""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

# Each channel its own connection: channels to one address otherwise share one (grpc's pool).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
# ... and for a stream that must stay in flight while it is not read, no window growth: with
# BDP probing the client's transport takes a whole stream (1,000 frames, 3 MB) unread, the worker's
# drain ends at once, and a call reaching it in grpc's own shutdown is CANCELLED, not refused.
UNREAD_STREAM = [*OWN_CONNECTION, ("grpc.http2.bdp_probe", 0)]
# Frames per drained stream: small enough that all 24 streams could land on one worker without
# passing a worker's admission bound (8,192 frames owed), large enough to stay in flight unread.
STREAM_FRAMES = 300
ANNOUNCED = re.compile(r"gRPC on port (\d+), .* metrics on port (\d+) \(2 workers\)")


def _sample(families, name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (others may be added)."""
    return sum(
        s.value
        for family in families
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def _per_worker(metrics_dir, scratch, name: str, **labels) -> dict[int, float]:
    """``name`` as each worker alone recorded it: its own files of the shared folder."""
    pids = {
        int(m.group(1)) for p in metrics_dir.iterdir() if (m := re.search(r"_(\d+)\.db$", p.name))
    }
    values = {}
    for pid in pids:
        own = scratch / f"{pid}-{time.monotonic_ns()}"
        own.mkdir()
        for path in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, own)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(own))
        values[pid] = _sample(registry.collect(), name, **labels)
    return values


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_share_the_port_merge_metrics_and_drain_on_sigterm(tiny_repo, tmp_path):
    metrics_dir, scratch = tmp_path / "metrics", tmp_path / "scratch"
    metrics_dir.mkdir()
    scratch.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    command = [sys.executable, "-m", "ganserve.cli", "serve", "--workers", "2", "--models", str(tiny_repo),
               "--address", "127.0.0.1:0", "--http-port", "0", "--metrics-port", "0", "--grace-period-s", "20"]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    announced = []
    reader = threading.Thread(
        target=lambda: announced.append(process.stdout.readline()), daemon=True
    )
    reader.start()
    reader.join(120)
    try:
        match = ANNOUNCED.search(announced[0] if announced else "")
        assert match, f"no start-up line: {announced} {(tmp_path / 'serve.log').read_text()}"
        address, metrics_port = f"127.0.0.1:{match.group(1)}", match.group(2)

        # Both serve: every new connection lands on one of them (the kernel spreads them).
        for i in range(16):
            with grpc.insecure_channel(address, OWN_CONNECTION) as channel:
                stub = pb_grpc.GenerationServiceStub(channel)
                for j in range(3):
                    assert (
                        len(
                            stub.Generate(
                                pb.GenerateRequest(model="gen2d", seeds=[i * 3 + j])
                            ).images
                        )
                        == 1
                    )
                status = (
                    health_pb2_grpc.HealthStub(channel)
                    .Check(health_pb2.HealthCheckRequest())
                    .status
                )
                assert status == health_pb2.HealthCheckResponse.SERVING
        counted = _per_worker(
            metrics_dir, scratch, "ganserve_requests_total", method="Generate", code="OK"
        )
        assert len(counted) == 2 and min(counted.values()) > 0, counted
        assert sum(counted.values()) == 48

        # ... and one endpoint serves their metrics merged.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            merged = list(text_string_to_metric_families(r.read().decode()))
        assert _sample(merged, "ganserve_requests_total", method="Generate", code="OK") == 48
        assert _sample(merged, "ganserve_request_latency_seconds_count", method="Generate") == 48
        assert _sample(merged, "ganserve_images_generated_total", model="gen2d") == 48
        assert _sample(merged, "ganserve_backend_ready", backend="embedded") == 1
        assert _sample(merged, "ganserve_model_info", model="gen2d") == 1

        # SIGTERM while each worker streams: both drain (refuse new calls, finish the streams).
        streams, channels = [], []
        keys = [pb.LatentSource(seed=1), pb.LatentSource(seed=2)]
        while len(channels) < 24:
            channel = grpc.insecure_channel(address, UNREAD_STREAM)
            stream = pb_grpc.GenerationServiceStub(channel).Interpolate(
                pb.InterpolateRequest(
                    model="gen2d", keys=keys, steps=STREAM_FRAMES, format=pb.RAW_FLOAT32
                )
            )
            streams.append([next(stream), stream])
            channels.append(channel)
            in_flight = _per_worker(
                metrics_dir, scratch, "ganserve_in_flight_requests", method="Interpolate"
            )
            if len(in_flight) == 2 and min(in_flight.values()) >= 1:
                break
        assert min(in_flight.values()) >= 1, f"no stream reached one worker: {in_flight}"
        process.send_signal(signal.SIGTERM)
        refused = set()
        deadline = time.monotonic() + 10
        while refused != {grpc.StatusCode.UNAVAILABLE} and time.monotonic() < deadline:
            with grpc.insecure_channel(address, OWN_CONNECTION) as channel:
                try:
                    pb_grpc.GenerationServiceStub(channel).Generate(
                        pb.GenerateRequest(model="gen2d", seeds=[1]), timeout=2
                    )
                    time.sleep(0.05)  # the signal may not have landed yet
                except grpc.RpcError as exc:
                    refused.add(exc.code())
        assert refused == {grpc.StatusCode.UNAVAILABLE}
        still = _per_worker(
            metrics_dir, scratch, "ganserve_in_flight_requests", method="Interpolate"
        )
        assert min(still.values()) >= 1, f"a worker's drain ended before the refusals: {still}"
        for first, rest in streams:  # every in-flight stream still completes
            frames = [first, *rest]
            assert len(frames) == STREAM_FRAMES and frames[-1].index == STREAM_FRAMES - 1
        assert process.wait(60) == 0, (tmp_path / "serve.log").read_text()
        assert not any(_running(pid) for pid in counted)  # both workers ended
    finally:
        if process.poll() is None:
            process.kill()
        for channel in locals().get("channels", []):
            channel.close()


def test_workers_drain_and_end_when_the_supervisor_is_killed(tiny_repo, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    command = [sys.executable, "-m", "ganserve.cli", "serve", "--workers", "2", "--models", str(tiny_repo),
               "--address", "127.0.0.1:0", "--http-port", "-1", "--metrics-port", "-1", "--grace-period-s", "1"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert b"(2 workers)" in process.stdout.readline()
        workers = {
            int(m.group(1))
            for p in metrics_dir.iterdir()
            if (m := re.search(r"_(\d+)\.db$", p.name))
        }
        assert len(workers) == 2
        process.kill()  # no chance to pass anything on
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers), "orphaned workers still serve"
    finally:
        if process.poll() is None:
            process.kill()
