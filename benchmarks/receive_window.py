"""The service's fixed 1 MiB HTTP/2 receive window against gRPC's BDP-grown one, side by side.

    python benchmarks/receive_window.py [--seconds 8] [--rounds 3]

Two services on the shipped models, one as shipped (``grpc.http2.bdp_probe`` 0, lookahead
1 MiB: see service/server.py) and one with those two options taken out (gRPC's default: BDP
probing grows each connection's receive window), measured in turn, round by round, so the
machine's other load falls on both alike:

- what a refused body costs: 16 clients without the token each send a 60 MB Generate at once,
  three times on the same connections; the server's RSS sampled every millisecond (peak growth);
- what the window could cost served calls: single-image Generate under 32 closed-loop clients
  (calls/s, server CPU per call) and bulk Generate of 256 raw images (0.9 MB responses; median
  latency of one client).

Results: ``benchmarks/results/receive_window.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import SHIPPED, Service, load

MODEL = "fmnist-cgan"
TOKEN_ENV = "RECEIVE_WINDOW_BENCH_TOKEN"
WINDOW_OPTIONS = ("grpc.http2.bdp_probe", "grpc.http2.lookahead_bytes")


def _serve_with_grown_windows(argv: list[str]) -> int:
    """``ganserve serve`` without the service's receive-window options (gRPC's defaults)."""
    import grpc.aio

    from ganserve.cli import main

    make_server = grpc.aio.server

    def server(*args, options=(), **kwargs):
        options = [option for option in options if option[0] not in WINDOW_OPTIONS]
        return make_server(*args, options=options, **kwargs)

    grpc.aio.server = server
    return main(argv)


ENTRIES = {
    "fixed_1mib": ("-m", "ganserve.cli"),
    "bdp_grown": ("-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                  "from receive_window import _serve_with_grown_windows as s; sys.exit(s(sys.argv[1:]))"),
}  # fmt: skip


def refused_uploads_peak_mb(service: Service) -> float:
    """Peak RSS growth while 16 unauthenticated 60 MB Generates are refused, three rounds."""
    import grpc

    channels = [
        grpc.insecure_channel(service.address, options=[("grpc.max_send_message_length", -1)])
        for _ in range(16)
    ]
    body = b"\x0a" + b"\xff" * (60 << 20)
    baseline = service.rss_mb()
    samples = [baseline]
    sampling = threading.Event()
    sampling.set()

    def sample():
        while sampling.is_set():
            samples.append(service.rss_mb())
            time.sleep(0.001)

    def send(channel) -> None:
        try:
            channel.unary_unary("/ganserve.v1.GenerationService/Generate")(body, timeout=60)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        else:
            raise AssertionError("an unauthenticated call was answered")

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            for _ in range(3):
                list(pool.map(send, channels))
    finally:  # an answered call ends the run instead of leaving the sampler looping
        sampling.clear()
        sampler.join()
        for channel in channels:
            channel.close()
    return max(samples) - baseline


def bulk_latency_ms(service: Service, calls: int = 20) -> float:
    """One client's median latency of Generate(count 256, raw float32): 0.9 MB responses."""
    import grpc

    from ganserve.v1 import generation_pb2 as pb
    from ganserve.v1 import generation_pb2_grpc as pb_grpc

    token = (("authorization", f"Bearer {os.environ[TOKEN_ENV]}"),)
    request = pb.GenerateRequest(model=MODEL, count=256, labels=[3], format=pb.RAW_FLOAT32)
    with grpc.insecure_channel(service.address) as channel:
        stub = pb_grpc.GenerationServiceStub(channel)
        stub.Generate(request, metadata=token, timeout=60)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            stub.Generate(request, metadata=token, timeout=60)
            times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "receive_window.json"
    )
    args = parser.parse_args()
    os.environ[TOKEN_ENV] = "receive-window-benchmark"
    flags = ("--auth-token-env", TOKEN_ENV)
    results: dict[str, dict[str, list]] = {variant: {} for variant in ENTRIES}
    for round_ in range(args.rounds):
        for variant, entry in ENTRIES.items():
            with Service(SHIPPED, *flags, entry=entry) as service:
                row = results[variant]
                row.setdefault("refused_uploads_peak_mb", []).append(
                    round(refused_uploads_peak_mb(service), 1)
                )
                level = load(
                    service.address,
                    MODEL,
                    args.seconds,
                    service.pid,
                    concurrency=(32,),
                    token=os.environ[TOKEN_ENV],
                )
                row.setdefault("single_image_calls_per_s", []).append(round(level["rpc_per_s"], 1))
                row.setdefault("server_cpu_us_per_call", []).append(level["server_cpu_us_per_call"])
                row.setdefault("bulk_256_raw_ms", []).append(round(bulk_latency_ms(service), 1))
            print(
                f"round {round_ + 1} {variant}: "
                + ", ".join(f"{k} {v[-1]}" for k, v in row.items()),
                flush=True,
            )
    fixed, grown = results["fixed_1mib"], results["bdp_grown"]
    results["ratios_fixed_to_grown"] = {
        key: round(statistics.median(fixed[key]) / statistics.median(grown[key]), 3)
        for key in fixed
        if key != "refused_uploads_peak_mb"
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["ratios_fixed_to_grown"]))


if __name__ == "__main__":
    main()
