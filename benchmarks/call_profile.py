"""Where a single-image Generate call's CPU goes, under 32 concurrent clients.

    python benchmarks/call_profile.py [--seconds 10] [--flags "--event-loop asyncio"] [--out F]

Starts ``ganserve serve`` (embedded backend, shipped models), drives it with 32 closed-loop
clients, and meanwhile samples it with py-spy (``pip install py-spy``; idle threads are not
sampled). The server's CPU per call comes from /proc (utime + stime of every thread over the
measured calls); it is split between stages by the share of py-spy's samples that fall in each:
a sample belongs to the innermost frame from one of the service's own modules (so NumPy called
from latents.py counts as latents), and to "gRPC and event loop" when no such frame is on the
stack (grpc's Cython core, protobuf parsing, the loop's polling).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import SHIPPED, Service, load

# (stage, what marks it: a file name, or a file name and function) in the order they are tried
# on each frame, innermost first.
STAGES = (
    ("inference", ("onnxruntime_inference_collection.py", "embedded.py")),
    ("encoding (PNG)", ("imaging.py",)),
    ("latents", ("latents.py",)),
    ("validation", ("validation.py",)),
    ("metrics", ("prometheus_client",)),
    ("call gate", ("calls.py", "auth.py", "errors.py")),
    ("batcher hand-offs", ("batching.py", "concurrent/futures", "thread.py", "futures.py")),
    ("request handling and response building", ("operations.py", "servicer.py")),
)
OTHER = "gRPC and event loop"


def stage_of(stack: list[str]) -> str:
    """``stack``: py-spy frames, outermost first (``function (path:line)``)."""
    for frame in reversed(stack):
        for stage, marks in STAGES:
            if any(mark in frame for mark in marks):
                return stage
    return OTHER


def profile(seconds: float, flags: list[str], model: str) -> dict:
    with Service(SHIPPED, *flags) as service, tempfile.TemporaryDirectory() as scratch:
        load(service.address, model, 2.0, concurrency=(32,))  # warm
        raw = Path(scratch) / "samples.txt"
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(service.pid), "--duration", str(int(seconds)),
             "--rate", "200", "--format", "raw", "--nonblocking", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result: dict = {}
        runner = threading.Thread(
            target=lambda: result.update(load(service.address, model, seconds, service.pid, concurrency=(32,)))
        )  # fmt: skip
        runner.start()
        runner.join()
        spy.wait(60)
        counts: collections.Counter = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            counts[stage_of(stack.split(";"))] += int(n)
    total = sum(counts.values())
    per_call = result["server_cpu_us_per_call"]
    stages = {
        stage: round(per_call * counts[stage] / total, 1) for stage, _ in (*STAGES, (OTHER, ()))
    }
    return {"flags": flags, "rpc_per_s": result["rpc_per_s"], "server_cpu_us_per_call": per_call,
            "samples": total, "us_per_call_by_stage": stages}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model", default="fmnist-cgan")
    parser.add_argument("--flags", default="", help="extra `ganserve serve` flags")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    found = profile(args.seconds, shlex.split(args.flags), args.model)
    print(f"{found['server_cpu_us_per_call']:.0f} us server CPU per call at {found['rpc_per_s']:.0f} calls/s "
          f"({found['samples']} samples)")  # fmt: skip
    for stage, us in sorted(found["us_per_call_by_stage"].items(), key=lambda kv: -kv[1]):
        print(f"  {stage:42s} {us:6.0f} us")
    if args.out:
        Path(args.out).write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
