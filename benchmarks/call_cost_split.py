"""How a single-image Generate call's server CPU splits between inference and everything else.

    python benchmarks/call_cost_split.py [--rounds 3] [--seconds 5]

Three servers in turn (round-robin, so other load on the machine falls on all of them alike), each
under 32 closed-loop single-image clients, server CPU per call from /proc:

- ``service``: ``ganserve serve`` with its defaults and the shipped ``fmnist-cgan``;
- ``service_null_inference``: the same, but each ONNX Runtime session answers with the output it
  gave the first time for that batch size (no inference work; everything else unchanged);
- ``floor_uvloop``: the Python gRPC floor of ``serve_throughput.py`` (a ready-made response).

service − null inference is what inference costs inside the service; null inference − floor is
what the service's own Python, its batcher and its threads cost beyond the bare gRPC stack. Then,
in process (no gRPC, no batcher: the backend answers at once), the service's Python path per call:
call gate, servicer, validation, latents, model inputs, PNG, response.
Results: ``benchmarks/results/call_cost_split.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import SHIPPED, Service, grpc_floor, load

MODEL = "fmnist-cgan"


def _serve_without_inference(argv: list[str]) -> int:
    """``ganserve serve`` whose sessions replay their first output per batch size."""
    from ganserve.cli import main
    from ganserve.service.backends import embedded

    real = embedded._LoadedModel.run
    answers: dict[tuple, dict] = {}

    def replay(self, inputs, outputs):
        key = (id(self), len(next(iter(inputs.values()))), tuple(outputs))
        if key not in answers:
            answers[key] = real(self, inputs, outputs)
        return answers[key]

    embedded._LoadedModel.run = replay
    return main(argv)


def measure_service(null_inference: bool, seconds: float) -> dict:
    entry = ("-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
             "from call_cost_split import _serve_without_inference as s; sys.exit(s(sys.argv[1:]))")  # fmt: skip
    with Service(SHIPPED, entry=entry if null_inference else ("-m", "ganserve.cli")) as service:
        return load(service.address, MODEL, seconds, service.pid, concurrency=(32,))


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


def python_path_us(calls: int = 20000) -> float:
    """CPU µs per single-image Generate through gate, servicer and operations, in process."""
    from ganserve.service.backends.embedded import _LoadedModel, find_onnx_models
    from ganserve.service.calls import CallGate
    from ganserve.service.config import ServeConfig
    from ganserve.service.metrics import ServiceMetrics
    from ganserve.service.operations import Operations
    from ganserve.service.servicer import SERVICE, GenerationServicer
    from ganserve.v1 import generation_pb2 as pb

    class Answering:  # the backend seam, answering at once with a real output
        name = "embedded"

        def __init__(self):
            self.model = _LoadedModel(find_onnx_models(SHIPPED)[MODEL], 1, ["CPUExecutionProvider"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "call_cost_split.json"
    )
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"service": [], "service_null_inference": [], "floor_uvloop": []}
    for round_index in range(args.rounds):
        for name in runs:
            if name == "floor_uvloop":
                result = grpc_floor(args.seconds, "uvloop")
            else:
                result = measure_service(name == "service_null_inference", args.seconds)
            runs[name].append(result)
            print(f"round {round_index + 1} {name:24s} {result['rpc_per_s']:7.0f} calls/s "
                  f"{result['server_cpu_us_per_call']:6.0f} us server CPU per call", flush=True)  # fmt: skip
    median = {
        name: statistics.median(r["server_cpu_us_per_call"] for r in results)
        for name, results in runs.items()
    }
    python_us = python_path_us()
    summary = {
        "server_cpu_us_per_call_median": median,
        "inference_in_service_us": median["service"] - median["service_null_inference"],
        "service_beyond_floor_us": median["service_null_inference"] - median["floor_uvloop"],
        "python_path_in_process_us": round(python_us, 1),
    }
    print(json.dumps(summary, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
