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

CPU per call: for every server row, the server's processes' CPU seconds (utime + stime from
/proc, all threads, worker processes included) over the measured calls; for raw ONNX Runtime,
this process's CPU seconds per image. Unlike a throughput ratio this does not move with the load
generator sharing the machine, and it is what a deployment pays for. The per-call target compares
the service under 32 single-image clients with the floor server's CPU per call plus raw batched
inference's CPU per image, all from this one run.
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


def raw_ort(
    path: Path, seconds: float, threads: int, runs_at_once: int = 1, sessions: int = 1
) -> dict:
    """Raw ONNX Runtime, batch 64: ``runs_at_once`` runs at a time, each on ``threads`` threads,
    sharing ``sessions`` sessions. (1 run, all cores: the yardstick; one single-threaded run per
    core: how the service runs it.) Images/s and this process's CPU seconds per image."""
    from ganserve.export.onnx_export import read_description

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    made = [
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(sessions)
    ]
    feeds = example_inputs(read_description(path), 64)
    for session in made:
        session.run(["image"], feeds)
    counts = [0] * runs_at_once
    stop = time.perf_counter() + seconds

    def work(index: int) -> None:
        session = made[index % sessions]
        while time.perf_counter() < stop:
            session.run(["image"], feeds)
            counts[index] += 64

    started, cpu_started = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(runs_at_once)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    cpu = time.process_time() - cpu_started
    images = sum(counts)
    return {
        "images_per_s": images / (time.perf_counter() - started),
        "cpu_us_per_image": 1e6 * cpu / images,
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and, recursively, its children (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(cpu_seconds(int(child)) for child in children)


def _answer_with_a_fixed_response(ports, event_loop: str) -> None:
    """A Python grpc.aio server whose Generate returns one ready-made image: the stack's floor."""
    import grpc

    from ganserve.service.workers import run_loop
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

    run_loop(main(), event_loop)


def load_spawned_server(target, args: tuple, seconds: float, concurrency: int = 32) -> dict:
    """``concurrency`` clients against ``target(ports, *args)`` in its own process (it puts its
    port on ``ports``), with that process's CPU per call."""
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    server = context.Process(target=target, args=(ports, *args), daemon=True)
    server.start()
    try:
        address = f"127.0.0.1:{ports.get(timeout=60)}"
        return load(address, "fmnist-cgan", seconds, server.pid, concurrency=(concurrency,))
    finally:
        server.terminate()
        server.join()


def grpc_floor(seconds: float, event_loop: str = "asyncio", concurrency: int = 32) -> dict:
    return load_spawned_server(_answer_with_a_fixed_response, (event_loop,), seconds, concurrency)


class Service:
    """``ganserve serve`` in its own process on free ports."""

    def __init__(
        self, repository: Path, *flags: str, entry: tuple[str, ...] = ("-m", "ganserve.cli")
    ):
        """``entry``: what the interpreter runs (another script taking the same arguments)."""
        self.port, self.metrics_port = free_port(), free_port()
        command = [sys.executable, *entry, "--log-level", "WARNING", "serve", "--models", str(repository),
                   "--address", f"127.0.0.1:{self.port}", "--metrics-port", str(self.metrics_port), "--http-port", "-1", *flags]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        import grpc

        grpc.channel_ready_future(grpc.insecure_channel(self.address)).result(timeout=120)

    @property
    def pid(self) -> int:
        return self.process.pid

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


def load(address: str, model: str, seconds: float, pid: int | None = None, **kwargs) -> dict:
    """One closed-loop level after a one-second warm-up run; with ``pid``, the server's CPU
    seconds per call over exactly the measured calls (all of them end before it returns)."""

    def level(duration_s: float) -> dict:
        spec = LoadSpec(address=address, model=model, duration_s=duration_s, warmup_s=0.0, **kwargs)
        return asyncio.run(LoadGenerator(spec).run())["levels"][0]

    level(1.0)
    cpu_started = cpu_seconds(pid) if pid else 0.0
    result = level(seconds)
    if pid and result["requests"]:
        result["server_cpu_us_per_call"] = round(
            1e6 * (cpu_seconds(pid) - cpu_started) / result["requests"], 1
        )
    return result


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

    yardstick = results["yardstick_ort_batch64"] = raw_ort(onnx_path, args.seconds, args.threads)
    base = yardstick["images_per_s"]
    print(f"yardstick: raw ONNX Runtime batch 64, one run on {args.threads} threads: {base:.0f} img/s, "
          f"{yardstick['cpu_us_per_image']:.0f} us CPU per image", flush=True)  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    raw_rows = {
        "raw_ort_runs_per_core_one_session": dict(threads=1, runs_at_once=cores),
        "raw_ort_runs_per_core_one_session_each": dict(threads=1, runs_at_once=cores, sessions=cores),
    }  # fmt: skip
    for name, shape in raw_rows.items():
        raw = results[name] = raw_ort(onnx_path, args.seconds, **shape)
        print(f"{name} ({cores} single-threaded runs at once): {raw['images_per_s']:.0f} img/s "
              f"({raw['images_per_s'] / base:.2f}x), {raw['cpu_us_per_image']:.0f} us CPU per image", flush=True)  # fmt: skip
    best_name = max(["yardstick_ort_batch64", *raw_rows], key=lambda n: results[n]["images_per_s"])
    best = results[best_name]
    results["raw_ort_best"] = best_name
    for event_loop in ("asyncio", "uvloop"):
        floor = results[f"grpc_floor_{event_loop}_c32"] = grpc_floor(args.seconds, event_loop)
        print(f"Python gRPC floor on {event_loop} (fixed response, 32 clients): {floor['rpc_per_s']:.0f} RPC/s, "
              f"{floor['server_cpu_us_per_call']:.0f} us server CPU per call", flush=True)  # fmt: skip
    # What a lone client's round trip costs before any work: the floor under the c=1 latency.
    floor = results["grpc_floor_uvloop_c1"] = grpc_floor(args.seconds, "uvloop", concurrency=1)
    print(f"Python gRPC floor on uvloop, 1 client: p50 {floor['latency_ms']['p50']:.2f} ms, "
          f"p99 {floor['latency_ms']['p99']:.2f} ms", flush=True)  # fmt: skip

    def record(name: str, level: dict) -> None:
        level["ratio_to_yardstick"] = round(level["images_per_s"] / base, 3)
        level["ratio_to_best_raw"] = round(level["images_per_s"] / best["images_per_s"], 3)
        results[name] = level
        cpu = (
            f", {level['server_cpu_us_per_call']:.0f} us server CPU per call"
            if "server_cpu_us_per_call" in level
            else ""
        )
        print(f"{name}: {level['images_per_s']:.0f} img/s ({level['ratio_to_yardstick']:.2f}x), "
              f"p50 {level['latency_ms']['p50']:.2f} ms, p99 {level['latency_ms']['p99']:.2f} ms{cpu}, {level['codes']}", flush=True)  # fmt: skip

    def measure(service: Service, rows: dict[str, dict]) -> None:
        for name, shape in rows.items():
            record(name, load(service.address, args.model, args.seconds, service.pid, **shape))

    bulk, single = dict(batch_size=64, concurrency=(1,)), dict(concurrency=(32,))
    bulk2 = dict(batch_size=64, concurrency=(2,))
    with Service(repo) as service:
        measure(service, {"bulk_count64_c1": bulk, "bulk_count64_c2": bulk2,
                          "single_c32_batching": single, "single_c1_latency": dict(concurrency=(1,))})  # fmt: skip
        if not args.throughput_only:
            classmap_and_batch_job(service.address, args, results)
    with Service(repo, "--workers", "2") as service:
        measure(service, {"workers2_bulk_count64_c1": bulk, "workers2_bulk_count64_c2": bulk2,
                          "workers2_single_c32": single})  # fmt: skip
    with Service(repo, "--instances", "1", "--ort-threads", str(args.threads)) as service:
        measure(service, {"bulk_count64_c1_one_instance": bulk, "single_c32_one_instance": single})
    with Service(repo, "--batching", "false") as service:
        measure(service, {"single_c32_no_batching": single})
    results["targets"] = targets(results, best)
    print(json.dumps(results["targets"], indent=2), flush=True)

    if not args.throughput_only:
        triton_and_memory(repo, args, results, record)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


def targets(results: dict, best: dict) -> dict:
    """Issue 16's ratios, every figure from this run."""
    floor = results["grpc_floor_asyncio_c32"]["server_cpu_us_per_call"]
    inference = best["cpu_us_per_image"]  # raw batched inference at the best raw rate
    service = results["single_c32_batching"]["server_cpu_us_per_call"]
    bulk = results["bulk_count64_c1"]
    return {
        "service_cpu_us_per_call_c32": service,
        "floor_cpu_us_per_call": floor,
        "raw_inference_cpu_us_per_image": round(inference, 1),
        "cpu_per_call_ratio": round(service / (floor + inference), 3),  # target <= 1.3
        "cpu_per_call_ratio_uvloop_floor": round(
            service / (results["grpc_floor_uvloop_c32"]["server_cpu_us_per_call"] + inference), 3
        ),
        "bulk_to_yardstick": bulk["ratio_to_yardstick"],  # target >= 0.9
        "bulk_to_best_raw": bulk["ratio_to_best_raw"],  # target >= 0.75
        "bulk_cpu_per_call_to_raw_64_images": round(
            bulk["server_cpu_us_per_call"] / (64 * inference), 3
        ),
        "single_c1_p99_ms": results["single_c1_latency"]["latency_ms"]["p99"],  # target <= 2
        "floor_c1_p99_ms": results["grpc_floor_uvloop_c1"]["latency_ms"]["p99"],
    }


def triton_and_memory(repo: Path, args: argparse.Namespace, results: dict, record) -> None:
    with (
        LocalTriton(repo, ort_threads=args.threads) as triton,
        Service(repo, "--backend", "triton", "--triton-url", triton.grpc_url) as on_triton,
    ):
        # CPU per call of the service process alone (tritonserver does the inference)
        record(
            "single_c32_triton",
            load(on_triton.address, args.model, args.seconds, on_triton.pid, concurrency=(32,)),
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
