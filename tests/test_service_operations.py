"""Running the service for real: overload, graceful SIGTERM drain, TLS/mTLS, bearer tokens, stubs."""

import filecmp
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.export.triton_local import free_port
from ganserve.protos import PROTO_ROOT, generate
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.conftest import RunningService, serve_config


def test_generated_stubs_match_the_proto(tmp_path):
    generate(tmp_path)
    generated = tmp_path / "ganserve" / "v1"
    committed = PROTO_ROOT / "ganserve" / "v1"
    names = ["generation_pb2.py", "generation_pb2.pyi", "generation_pb2_grpc.py"]
    match, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert match == names, (
        f"regenerate with `python -m ganserve.protos`: {mismatch + errors} differ"
    )


def test_a_full_queue_answers_resource_exhausted(tiny_repo):
    running = RunningService(
        serve_config(tiny_repo, max_queued_images=8, max_batch_size=4, max_queue_delay_ms=20)
    )
    try:
        stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(running.address))
        with pytest.raises(grpc.RpcError) as info:
            stub.Generate(pb.GenerateRequest(model="gen2d", count=16))
        assert (
            info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            and "queue full" in info.value.details()
        )
        # Under a burst, every call either succeeds or is refused with RESOURCE_EXHAUSTED: bounded memory.
        with ThreadPoolExecutor(24) as pool:
            futures = [
                pool.submit(stub.Generate, pb.GenerateRequest(model="cgan", count=4, labels=[1]))
                for _ in range(48)
            ]
        codes = []
        for future in futures:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert grpc.StatusCode.OK in codes
        assert "RESOURCE_EXHAUSTED" in running.metrics_text()
    finally:
        running.stop()


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 60) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    finally:
        channel.close()
    assert process.poll() is None


def test_sigterm_drains_in_flight_calls_and_refuses_new_ones(tiny_repo, tmp_path):
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "GANSERVE_MODELS": str(tiny_repo),
        "GANSERVE_METRICS_PORT": str(metrics_port),
        "GANSERVE_HTTP_PORT": "0",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ganserve.cli",
            "serve",
            "--address",
            f"127.0.0.1:{port}",
            "--grace-period-s",
            "20",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port, process)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.GenerationServiceStub(channel)
        keys = [pb.LatentSource(seed=1), pb.LatentSource(seed=2)]
        stream = stub.Interpolate(
            pb.InterpolateRequest(model="gen2d", keys=keys, steps=1000, format=pb.RAW_FLOAT32)
        )
        first = next(stream)  # the call is in flight
        process.send_signal(signal.SIGTERM)
        # While the stream drains, health turns NOT_SERVING and new calls are refused.
        health = health_pb2_grpc.HealthStub(channel)
        refused = None
        deadline = time.monotonic() + 10
        while refused is None and time.monotonic() < deadline:
            try:
                stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[1]), timeout=2)
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status in (
                    health_pb2.HealthCheckResponse.SERVING,  # the signal may not have landed yet
                    health_pb2.HealthCheckResponse.NOT_SERVING,
                )
                time.sleep(0.05)
            except grpc.RpcError as exc:
                refused = exc.code()
        assert refused == grpc.StatusCode.UNAVAILABLE
        frames = [first, *stream]  # the in-flight stream still completes
        assert len(frames) == 1000 and frames[-1].index == 999
        assert process.wait(30) == 0, process.stdout.read().decode()
    finally:
        if process.poll() is None:
            process.kill()


def _secure_stub(address, certs, client_cert: bool):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=(certs / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(certs / "client.pem").read_bytes() if client_cert else None,
    )
    return pb_grpc.GenerationServiceStub(grpc.secure_channel(address, credentials))


def test_tls_and_mutual_tls(tiny_repo, certificates):
    tls = dict(tls_cert=str(certificates / "server.pem"), tls_key=str(certificates / "server.key"))
    running = RunningService(serve_config(tiny_repo, **tls))
    try:
        assert (
            _secure_stub(running.address, certificates, False)
            .ListModels(pb.ListModelsRequest(), timeout=10)
            .models
        )
        plain = pb_grpc.GenerationServiceStub(grpc.insecure_channel(running.address))
        with pytest.raises(grpc.RpcError) as info:
            plain.ListModels(pb.ListModelsRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()
    mutual = RunningService(
        serve_config(tiny_repo, **tls, tls_client_ca=str(certificates / "ca.pem"))
    )
    try:
        assert (
            _secure_stub(mutual.address, certificates, True)
            .ListModels(pb.ListModelsRequest(), timeout=10)
            .models
        )
        with pytest.raises(grpc.RpcError) as info:
            _secure_stub(mutual.address, certificates, False).ListModels(
                pb.ListModelsRequest(), timeout=3
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        mutual.stop()


def test_bearer_token_guards_the_api_but_not_health(tiny_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_GANSERVE_TOKEN", "s3cret-token")
    for source in (
        {"auth_token_env": "TEST_GANSERVE_TOKEN"},
        {"auth_token_file": str(tmp_path / "token")},
    ):
        (tmp_path / "token").write_text("s3cret-token\n")
        running = RunningService(serve_config(tiny_repo, **source))
        try:
            channel = grpc.insecure_channel(running.address)
            stub = pb_grpc.GenerationServiceStub(channel)
            for metadata in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as info:
                    stub.ListModels(pb.ListModelsRequest(), metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Interpolate(pb.InterpolateRequest(model="gen2d", steps=3)))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", "Bearer s3cret-token"),)
            assert stub.ListModels(pb.ListModelsRequest(), metadata=good).models
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest()).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            assert 'code="UNAUTHENTICATED"' in running.metrics_text()
        finally:
            running.stop()
