"""Serving speed against the yardstick, all measured side by side in one run.

    python benchmarks/serve_throughput.py [--model fmnist-cgan] [--seconds 5] [--memory-requests 100000]
    python benchmarks/serve_throughput.py --repository R --model M --throughput-only --out F

The second form measures another model (e.g. the studies' full-width generator; README "Results"
shows how to make one) on the throughput rows alone.

The yardstick is raw ONNX Runtime in process at batch 64 on the same model (its default: one
inference over every core). For context, also measured: raw ONNX Runtime as the service runs it
(one single-threaded inference per core at once), and the floor of the Python gRPC stack (a server
that answers Generate with a ready-made response, the same load generator, 32 clients). Then, with
the service in its own process (embedded backend with its defaults unless said) and the load
generator on this machine:
bulk Generate (count 64), single-image Generate at concurrency 32 with batching on, off, and on the
Triton backend (the local tritonserver), single-image latency at concurrency 1, ClassMap at 100²
and 256², a batch job end to end, and the service's resident memory after 1,000 and 100,000
requests. Results: ``benchmarks/results/serve.json``; every speed also as a ratio to the yardstick.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import onnxruntime as ort

from ganserve.export.onnx_export import example_inputs
from ganserve.export.triton_local import LocalTriton, free_port
from ganserve.loadtest import LoadGenerator, LoadSpec
from ganserve.service.backends.embedded import find_onnx_models

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "model_repository"


def raw_ort(path: Path, seconds: float, threads: int, runs_at_once: int = 1) -> float:
    """Raw ONNX Runtime, batch 64, images/s: ``runs_at_once`` runs of one session at a time, each
    on ``threads`` threads. (1 run, all cores: the yardstick; one single-threaded run per core: how
    the service runs it.)"""
    from ganserve.export.onnx_export import read_description

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = example_inputs(read_description(path), 64)
    session.run(["image"], feeds)
    counts = [0] * runs_at_once
    stop = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < stop:
            session.run(["image"], feeds)
            counts[index] += 64

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(runs_at_once)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - started)


def _answer_with_a_fixed_response(ports) -> None:
    """A Python grpc.aio server whose Generate returns one ready-made image: the stack's floor."""
    import grpc

    from ganserve.v1 import generation_pb2 as pb
    from ganserve.v1 import generation_pb2_grpc as pb_grpc

    info = pb.ModelInfo(name="fmnist-cgan", kind=pb.CONDITIONAL_GENERATOR, latent_dim=100)
    image = pb.GeneratedImage(png=bytes(600), seed=1, label=0, latent=pb.Latent(values=[0.1] * 100))
    response = pb.GenerateResponse(model="fmnist-cgan", images=[image])

    class Fixed(pb_grpc.GenerationServiceServicer):
        async def GetModel(self, request, context):
            return info

        async def Generate(self, request, context):
            return response

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GenerationServiceServicer_to_server(Fixed(), server)
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def grpc_floor(seconds: float) -> dict:
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    server = context.Process(target=_answer_with_a_fixed_response, args=(ports,), daemon=True)
    server.start()
    try:
        return load(f"127.0.0.1:{ports.get(timeout=60)}", "fmnist-cgan", seconds, concurrency=(32,))
    finally:
        server.terminate()
        server.join()


class Service:
    """``ganserve serve`` in its own process on free ports."""

    def __init__(self, repository: Path, *flags: str):
        self.port, self.metrics_port = free_port(), free_port()
        command = [sys.executable, "-m", "ganserve.cli", "--log-level", "WARNING", "serve", "--models", str(repository),
                   "--address", f"127.0.0.1:{self.port}", "--metrics-port", str(self.metrics_port), "--http-port", "-1", *flags]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import grpc

        grpc.channel_ready_future(grpc.insecure_channel(self.address)).result(timeout=120)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def load(address: str, model: str, seconds: float, **kwargs) -> dict:
    spec = LoadSpec(address=address, model=model, duration_s=seconds, warmup_s=1.0, **kwargs)
    return asyncio.run(LoadGenerator(spec).run())["levels"][0]


def classmap_seconds(address: str, model: str, resolution: int) -> float:
    from ganserve.client import Client

    with Client(address, timeout_s=600) as client:
        started = time.perf_counter()
        client.class_map(model, resolution, value_range=(-1.0, 1.0 + resolution * 1e-6))
        return time.perf_counter() - started


def classmap_and_batch_job(address: str, args: argparse.Namespace, results: dict) -> None:
    for resolution in (100, 256):
        seconds = classmap_seconds(address, args.map_model, resolution)
        results[f"classmap_{resolution}_seconds"] = seconds
        print(f"ClassMap {resolution}x{resolution}: {seconds:.2f} s ({resolution**2 / seconds:.0f} cells/s)",
              flush=True)  # fmt: skip
    out = Path(tempfile.mkdtemp(prefix="ganserve-batch-bench-"))
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ganserve.cli", "batch", "--address", address, "--model",
                    args.model, "--seeds", "0-9999", "--classes", "0", "--out", str(out), "--progress", "0"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    batch_rate = 10000 / (time.perf_counter() - started)
    results["batch_job_png_images_per_s"] = batch_rate
    print(f"batch job, 10,000 PNG files + manifest: {batch_rate:.0f} img/s", flush=True)
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="fmnist-cgan")
    parser.add_argument("--map-model", default="fmnist-2d")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (yardstick)")
    parser.add_argument("--memory-requests", type=int, default=100_000)
    parser.add_argument("--repository", default=str(SHIPPED), help="model repository to serve")
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the Generate rows (no ClassMap, batch job, Triton or memory)",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args()
    repo = Path(args.repository)
    onnx_path = find_onnx_models(repo)[args.model]
    results: dict = {"model": args.model, "threads": args.threads, "cpu_count": os.cpu_count()}

    results["yardstick_ort_batch64_images_per_s"] = base = raw_ort(
        onnx_path, args.seconds, args.threads
    )
    print(f"yardstick: raw ONNX Runtime batch 64: {base:.0f} img/s", flush=True)
    cores = len(os.sched_getaffinity(0))
    results["raw_ort_instances_batch64_images_per_s"] = raw = raw_ort(
        onnx_path, args.seconds, threads=1, runs_at_once=cores
    )
    print(f"raw ONNX Runtime, {cores} single-threaded runs at once, batch 64: {raw:.0f} img/s "
          f"({raw / base:.2f}x the yardstick)", flush=True)  # fmt: skip
    floor = results["grpc_floor_fixed_response_c32"] = grpc_floor(args.seconds)
    print(f"Python gRPC floor (fixed response, 32 clients): {floor['rpc_per_s']:.0f} RPC/s "
          f"= {floor['rpc_per_s'] / base:.2f}x the yardstick in single-image calls", flush=True)  # fmt: skip

    def record(name: str, level: dict) -> None:
        level["ratio_to_yardstick"] = round(level["images_per_s"] / base, 3)
        results[name] = level
        print(f"{name}: {level['images_per_s']:.0f} img/s ({level['ratio_to_yardstick']:.2f}x), "
              f"p50 {level['latency_ms']['p50']:.2f} ms, p99 {level['latency_ms']['p99']:.2f} ms, {level['codes']}", flush=True)  # fmt: skip

    def measure(service: Service, rows: dict[str, dict]) -> None:
        for name, shape in rows.items():
            record(name, load(service.address, args.model, args.seconds, **shape))

    bulk, single = dict(batch_size=64, concurrency=(1,)), dict(concurrency=(32,))
    with Service(repo) as service:
        measure(service, {"bulk_count64_c1": bulk,
                          "bulk_count64_c2": dict(batch_size=64, concurrency=(2,)),
                          "single_c32_batching": single,
                          "single_c1_latency": dict(concurrency=(1,))})  # fmt: skip
        if not args.throughput_only:
            classmap_and_batch_job(service.address, args, results)
    with Service(repo, "--instances", "1", "--ort-threads", str(args.threads)) as service:
        measure(service, {"bulk_count64_c1_one_instance": bulk, "single_c32_one_instance": single})
    with Service(repo, "--batching", "false") as service:
        measure(service, {"single_c32_no_batching": single})

    if not args.throughput_only:
        triton_and_memory(repo, args, results, record)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


def triton_and_memory(repo: Path, args: argparse.Namespace, results: dict, record) -> None:
    with (
        LocalTriton(repo, ort_threads=args.threads) as triton,
        Service(repo, "--backend", "triton", "--triton-url", triton.grpc_url) as on_triton,
    ):
        record(
            "single_c32_triton",
            load(on_triton.address, args.model, args.seconds, concurrency=(32,)),
        )

    with Service(repo) as memory:
        spec = dict(concurrency=(16,), warmup_s=0.0)
        asyncio.run(
            LoadGenerator(
                LoadSpec(address=memory.address, model=args.model, duration_s=1e9, **spec)
            ).run_requests(1000)
        )
        after_1k = memory.rss_mb()
        asyncio.run(
            LoadGenerator(
                LoadSpec(address=memory.address, model=args.model, duration_s=1e9, **spec)
            ).run_requests(args.memory_requests - 1000)
        )
        after_all = memory.rss_mb()
    results["memory_rss_mb"] = {"after_1000": after_1k, f"after_{args.memory_requests}": after_all,
                                "growth_ratio": after_all / after_1k}  # fmt: skip
    print(f"RSS: {after_1k:.1f} MB after 1,000 requests, {after_all:.1f} MB after {args.memory_requests:,} "
          f"({100 * (after_all / after_1k - 1):+.1f}%)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
