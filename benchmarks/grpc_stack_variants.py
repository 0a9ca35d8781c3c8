"""What the shape of a Python gRPC handler costs per call, measured on the server's CPU.

    python benchmarks/grpc_stack_variants.py [--seconds 5] [--rounds 3] [--event-loop uvloop]

The floor server of ``serve_throughput.py`` (Generate answered with a ready-made response) in
variants that each add one thing the real service does, run in turn (round-robin, so the
machine's other load falls on all of them alike), 32 closed-loop clients each:

- ``unary``: a unary-unary handler (grpc parses the request before the handler runs);
- ``unary_raw``: unary-unary, the request left as bytes by grpc and parsed in the handler;
- ``stream_read``: registered request-streaming, the handler reads and parses the one message
  itself (what the service's call gate does, so it can refuse a call before its body is read);
- ``unary_suspend``: unary, the handler waits once for a future the event loop completes on its
  next turn (as a call waits for its batch);
- ``unary_thread``: unary, the future completed from another thread (``call_soon_threadsafe``,
  as the batcher's executor thread hands a batch back).

Server CPU per call: utime + stime of the server process over the measured calls.
Results: ``benchmarks/results/grpc_stack_variants.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import load_spawned_server

VARIANTS = ("unary", "unary_raw", "stream_read", "unary_suspend", "unary_thread")


def _serve(ports, variant: str, event_loop: str) -> None:
    import asyncio
    import concurrent.futures

    import grpc

    from ganserve.service.workers import run_loop
    from ganserve.v1 import generation_pb2 as pb

    info = pb.ModelInfo(name="fmnist-cgan", kind=pb.CONDITIONAL_GENERATOR, latent_dim=100)
    image = pb.GeneratedImage(png=bytes(600), seed=1, label=0, latent=pb.Latent(values=[0.1] * 100))
    response = pb.GenerateResponse(model="fmnist-cgan", images=[image])
    pool = concurrent.futures.ThreadPoolExecutor(1)

    async def generate(request, context):
        return response

    async def generate_raw(raw: bytes, context):
        pb.GenerateRequest.FromString(raw)
        return response

    async def generate_streamed(requests, context):
        pb.GenerateRequest.FromString(await context.read())
        return response

    async def generate_suspended(request, context):
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.set_result, None)
        await future
        return response

    async def generate_across_threads(request, context):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        pool.submit(loop.call_soon_threadsafe, future.set_result, None)
        await future
        return response

    async def get_model(request, context):
        return info

    serialize = pb.GenerateResponse.SerializeToString
    parse = pb.GenerateRequest.FromString
    if variant == "stream_read":
        generate_handler = grpc.stream_unary_rpc_method_handler(
            generate_streamed, response_serializer=serialize
        )
    elif variant == "unary_raw":
        generate_handler = grpc.unary_unary_rpc_method_handler(
            generate_raw, response_serializer=serialize
        )
    else:
        handler = {
            "unary": generate,
            "unary_suspend": generate_suspended,
            "unary_thread": generate_across_threads,
        }[variant]
        generate_handler = grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=parse, response_serializer=serialize
        )
    handlers = {
        "Generate": generate_handler,
        "GetModel": grpc.unary_unary_rpc_method_handler(
            get_model,
            request_deserializer=pb.GetModelRequest.FromString,
            response_serializer=pb.ModelInfo.SerializeToString,
        ),
    }

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("ganserve.v1.GenerationService", handlers),)
        )
        ports.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await server.wait_for_termination()

    run_loop(main(), event_loop)


def measure(variant: str, event_loop: str, seconds: float) -> dict:
    return load_spawned_server(_serve, (variant, event_loop), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--event-loop", default="uvloop", choices=("asyncio", "uvloop"))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "grpc_stack_variants.json"
    )
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            result = measure(variant, args.event_loop, args.seconds)
            runs[variant].append(result)
            print(f"round {round_index + 1} {variant:14s} {result['rpc_per_s']:7.0f} RPC/s "
                  f"{result['server_cpu_us_per_call']:6.0f} us CPU per call", flush=True)  # fmt: skip
    summary = {}
    base = statistics.median(r["server_cpu_us_per_call"] for r in runs["unary"])
    for variant, results in runs.items():
        cpu = statistics.median(r["server_cpu_us_per_call"] for r in results)
        summary[variant] = {
            "server_cpu_us_per_call_median": cpu,
            "vs_unary": round(cpu / base, 3),
            "rpc_per_s_median": statistics.median(r["rpc_per_s"] for r in results),
        }
        print(f"{variant:14s} median {cpu:6.0f} us per call = {cpu / base:.2f}x unary")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"event_loop": args.event_loop, "summary": summary, "runs": runs}, indent=1)
    )


if __name__ == "__main__":
    main()
