"""Where a single-image Generate call's CPU goes, under 32 concurrent clients.

    python benchmarks/call_profile.py [--seconds 10] [--flags "--event-loop asyncio"] [--out F]

Starts ``ganserve serve`` (embedded backend, shipped models), drives it with 32 closed-loop
clients, and meanwhile samples it with py-spy (``pip install py-spy``). Each thread's CPU comes
from /proc (utime + stime over the measured calls) and is split between stages by that thread's
samples (samples of a thread waiting for work are left out): a sample belongs to the innermost
frame from one of the service's own modules (so NumPy called from latents.py counts as latents),
and to "gRPC and event loop" when no such frame is on the stack (grpc's Cython core, protobuf
parsing, the loop's polling), as does the CPU of grpc's own C threads, which py-spy cannot see.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
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


IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",)  # an executor thread waiting for work


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def profile(seconds: float, flags: list[str], model: str) -> dict:
    with Service(SHIPPED, *flags) as service, tempfile.TemporaryDirectory() as scratch:
        load(service.address, model, 2.0, concurrency=(32,))  # warm
        raw = Path(scratch) / "samples.txt"
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(service.pid), "--duration", str(int(seconds) + 2),
             "--rate", "200", "--format", "raw", "--threads", "--nonblocking", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        before = thread_cpu(service.pid)  # the split: from the threads' CPU here (warm-up
        result = load(service.address, model, seconds, service.pid, concurrency=(32,))
        after = thread_cpu(service.pid)  # included); the total: over the measured calls alone
        spy.wait(60)
        samples: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            thread, *frames = stack.split(";")
            if frames and not frames[-1].startswith(IDLE_LEAVES):
                tid = int(thread.split("(")[1].split(")")[0])
                samples[tid][stage_of(frames)] += int(n)
    stages = dict.fromkeys([stage for stage, _ in STAGES] + [OTHER], 0.0)
    for tid, cpu in after.items():
        used = cpu - before.get(tid, 0.0)
        seen = sum(samples[tid].values())
        for stage, n in samples[tid].items() if seen else [(OTHER, 1)]:
            stages[stage] += used * n / max(seen, 1)
    total, per_call = sum(stages.values()), result["server_cpu_us_per_call"]
    return {"flags": flags, "rpc_per_s": result["rpc_per_s"], "server_cpu_us_per_call": per_call,
            "us_per_call_by_stage": {k: round(per_call * v / total, 1) for k, v in stages.items()}}  # fmt: skip


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
    print(
        f"{found['server_cpu_us_per_call']:.0f} us server CPU per call at {found['rpc_per_s']:.0f} calls/s"
    )
    for stage, us in sorted(found["us_per_call_by_stage"].items(), key=lambda kv: -kv[1]):
        print(f"  {stage:42s} {us:6.0f} us")
    if args.out:
        Path(args.out).write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
