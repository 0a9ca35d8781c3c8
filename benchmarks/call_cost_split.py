"""How a single-image Generate call's server CPU splits between inference and everything else.

    python benchmarks/call_cost_split.py [--rounds 3] [--seconds 5]

Three servers in turn (round-robin, so other load on the machine falls on all of them alike), each
under 32 closed-loop single-image clients, server CPU per call from /proc:

- ``service``: ``ganserve serve`` with its defaults and the shipped ``fmnist-cgan``;
- ``service_null_inference``: the same, but each ONNX Runtime session answers with the output it
  gave the first time for that batch size (no inference work; everything else unchanged);
- ``service_null_inference_inline``: the same again, but the batches run on the event loop itself
  (no executor thread; the crossing back is kept): what handing batches to a thread costs;
- ``service_null_inference_direct``: the same, but every call gets the replayed output at once,
  without the batcher: what the batcher's own scheduling costs;
- ``floor_uvloop``: the Python gRPC floor of ``serve_throughput.py`` (a ready-made response).

service − null inference is what inference costs inside the service; null inference − floor is
what the service's own Python, its batcher and its threads cost beyond the bare gRPC stack. The
service runs also report their mean batch size (the ``ganserve_batch_size`` histogram). Then, in
process: the service's Python path per call without gRPC and without the batcher (the backend
answers at once: call gate, servicer, validation, latents, model inputs, PNG, response), and ONNX
Runtime's CPU per image at batch sizes 1 to 64 (one single-threaded session, as an instance), and
one single-image inference's CPU back to back, handed to threads, and with idle between calls.
Results: ``benchmarks/results/call_cost_split.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import SHIPPED, Service, grpc_floor, load

MODEL = "fmnist-cgan"


def _serve_without_inference(argv: list[str]) -> int:
    """``ganserve serve`` whose sessions replay their first output per batch size; with
    ``GANSERVE_BENCH_INLINE=1`` each batch also runs on the event loop instead of a thread, with
    ``GANSERVE_BENCH_DIRECT=1`` each call skips the batcher."""
    from concurrent.futures import Future

    from ganserve.cli import main
    from ganserve.service import batching
    from ganserve.service.backends import embedded

    real = embedded._LoadedModel.run
    answers: dict[tuple, dict] = {}

    def replay(self, inputs, outputs):
        key = (id(self), len(next(iter(inputs.values()))), tuple(outputs))
        if key not in answers:
            answers[key] = real(self, inputs, outputs)
        return answers[key]

    class InlineExecutor:  # runs a batch where it is submitted: on the event loop
        def submit(self, fn, *args):
            done: Future = Future()
            done.set_result(fn(*args))
            return done

    def inline(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._executor = InlineExecutor()

    async def direct(self, model, inputs, outputs, timeout_s=None):
        return self._models[model].run(inputs, list(outputs))

    embedded._LoadedModel.run = replay
    if os.environ.get("GANSERVE_BENCH_INLINE") == "1":
        real_init = batching.DynamicBatcher.__init__
        batching.DynamicBatcher.__init__ = inline
    if os.environ.get("GANSERVE_BENCH_DIRECT") == "1":
        embedded.EmbeddedBackend.infer = direct
    return main(argv)


def mean_batch_size(metrics_port: int) -> float:
    """The service's mean images per inference so far, from its Prometheus histogram (1 when
    nothing went through the batcher)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ganserve_batch_size_") and f'model="{MODEL}"' in line
    }
    if not values.get("ganserve_batch_size_count"):
        return 1.0
    return values["ganserve_batch_size_sum"] / values["ganserve_batch_size_count"]


def measure_service(variant: str, seconds: float) -> dict:
    """``variant``: service, service_null_inference[_inline|_direct]."""
    entry = ("-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
             "from call_cost_split import _serve_without_inference as s; sys.exit(s(sys.argv[1:]))")  # fmt: skip
    os.environ["GANSERVE_BENCH_INLINE"] = "1" if variant.endswith("_inline") else "0"
    os.environ["GANSERVE_BENCH_DIRECT"] = "1" if variant.endswith("_direct") else "0"
    with Service(
        SHIPPED, entry=entry if variant != "service" else ("-m", "ganserve.cli")
    ) as service:
        result = load(service.address, MODEL, seconds, service.pid, concurrency=(32,))
        result["mean_batch_size"] = round(mean_batch_size(service.metrics_port), 2)
        return result


class _Context:
    """What the gate asks of a grpc.aio context, for one ready request."""

    def __init__(self, raw: bytes):
        self.raw = raw

    def invocation_metadata(self):
        return ()

    async def read(self) -> bytes:
        return self.raw

    def time_remaining(self) -> float:
        return 30.0


def _one_instance(count: int):
    """The shipped model in one single-threaded session, as an instance runs it, and the inputs
    of ``count`` single-label images."""
    from ganserve.latents import latents_from_seeds
    from ganserve.service import steering
    from ganserve.service.backends.embedded import _LoadedModel, find_onnx_models

    model = _LoadedModel(find_onnx_models(SHIPPED)[MODEL], 1, ["CPUExecutionProvider"])
    described = model.description
    latents = latents_from_seeds(list(range(count)), described.latent_dim, described.prior)
    feeds = steering.model_inputs(described, latents, steering.classes([3], [], count, described))
    return model, feeds


def python_path_us(calls: int = 20000) -> float:
    """CPU µs per single-image Generate through gate, servicer and operations, in process."""
    from ganserve.service.calls import CallGate
    from ganserve.service.config import ServeConfig
    from ganserve.service.metrics import ServiceMetrics
    from ganserve.service.operations import Operations
    from ganserve.service.servicer import SERVICE, GenerationServicer
    from ganserve.v1 import generation_pb2 as pb

    class Answering:  # the backend seam, answering at once with a real output
        name = "embedded"

        def __init__(self):
            self.model, _ = _one_instance(1)
            self.output = None

        def models(self):
            return {MODEL: self.model.description}

        async def infer(self, model, inputs, outputs, timeout_s=None):
            if self.output is None:
                self.output = self.model.run(inputs, list(outputs))
            return self.output

    async def run() -> float:
        gate = CallGate(ServiceMetrics(), None, None)
        handler = gate.handlers(GenerationServicer(Operations(Answering(), ServeConfig())), SERVICE)
        generate = handler["Generate"].stream_unary
        serialize = handler["Generate"].response_serializer
        raw = pb.GenerateRequest(model=MODEL, seeds=[1], labels=[3]).SerializeToString()
        for _ in range(500):
            serialize(await generate(None, _Context(raw)))
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for _ in range(calls):
                serialize(await generate(None, _Context(raw)))
            best = min(best, (time.process_time() - started) / calls * 1e6)
        return best

    return asyncio.run(run())


def ort_us_per_image(batch_sizes=(1, 2, 4, 8, 16, 32, 64)) -> dict[int, float]:
    """ONNX Runtime CPU µs per image by batch size: one single-threaded session, as an instance
    runs it, best of 5 repeats."""
    model, feeds = _one_instance(max(batch_sizes))
    costs = {}
    for size in batch_sizes:
        batch = {name: value[:size].copy() for name, value in feeds.items()}
        model.run(batch, ["image"])
        runs, best = max(3, 256 // size), float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(runs):
                model.run(batch, ["image"])
            best = min(best, (time.process_time() - started) / runs / size)
        costs[size] = round(best * 1e6, 1)
    return costs


def single_image_inference_us(calls: int = 300) -> dict[str, float]:
    """CPU µs of one single-image inference when run back to back on one thread, handed to two
    executor threads in turn (as the instances take batches), and with 1 ms idle between calls
    (a lone client's pace): what caches and wake-ups add to the same work."""
    from concurrent.futures import ThreadPoolExecutor

    model, feeds = _one_instance(1)

    def run() -> None:
        model.run(feeds, ["image"])

    def cost(call, gap_s: float = 0.0) -> float:
        call()
        started = time.process_time()
        for _ in range(calls):
            call()
            if gap_s:
                time.sleep(gap_s)
        return round((time.process_time() - started) / calls * 1e6, 1)

    with ThreadPoolExecutor(2) as threads:
        return {
            "back_to_back": cost(run),
            "two_threads_in_turn": cost(lambda: threads.submit(run).result()),
            "back_to_back_1ms_idle": cost(run, 0.001),
            "two_threads_1ms_idle": cost(lambda: threads.submit(run).result(), 0.001),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "call_cost_split.json"
    )
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {
        name: []
        for name in (
            "service",
            "service_null_inference",
            "service_null_inference_inline",
            "service_null_inference_direct",
            "floor_uvloop",
        )
    }  # fmt: skip
    for round_index in range(args.rounds):
        for name in runs:
            if name == "floor_uvloop":
                result = grpc_floor(args.seconds, "uvloop")
            else:
                result = measure_service(name, args.seconds)
            runs[name].append(result)
            print(f"round {round_index + 1} {name:31s} {result['rpc_per_s']:7.0f} calls/s "
                  f"{result['server_cpu_us_per_call']:6.0f} us server CPU per call, "
                  f"mean batch {result.get('mean_batch_size', '-')}", flush=True)  # fmt: skip
    median = {
        name: statistics.median(r["server_cpu_us_per_call"] for r in results)
        for name, results in runs.items()
    }
    python_us = python_path_us()
    summary = {
        "server_cpu_us_per_call_median": median,
        "mean_batch_size_median": {
            name: statistics.median(r["mean_batch_size"] for r in results)
            for name, results in runs.items()
            if name.startswith("service")
        },
        "inference_in_service_us": median["service"] - median["service_null_inference"],
        "service_beyond_floor_us": median["service_null_inference"] - median["floor_uvloop"],
        "thread_handoff_us": median["service_null_inference"]
        - median["service_null_inference_inline"],
        "batcher_scheduling_us": median["service_null_inference_inline"]
        - median["service_null_inference_direct"],
        "service_python_live_us": median["service_null_inference_direct"] - median["floor_uvloop"],
        "python_path_in_process_us": round(python_us, 1),
        "ort_cpu_us_per_image_by_batch": ort_us_per_image(),
        "single_image_inference_cpu_us": single_image_inference_us(),
    }
    print(json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
