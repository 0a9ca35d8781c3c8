"""``ganserve loadtest``: throughput and latency of the service under load.

Closed loop: N concurrent workers each send the next request as soon as the last one answered,
for each N of a sweep. Open loop: requests start at a fixed rate whatever the answers do, and
latency counts from the *intended* start, so a slow server cannot hide its queue (no coordinated
omission). Requests are built once and sent through the raw gRPC stubs, so the client adds as
little as it can to what is measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

RPCS = ("generate", "interpolate", "classmap", "activations")
METHOD_NAMES = {
    "generate": "Generate",
    "interpolate": "Interpolate",
    "classmap": "ClassMap",
    "activations": "LayerActivations",
}


@dataclass
class LoadSpec:
    address: str = "localhost:50051"
    model: str = "fmnist-cgan"
    rpc: str = "generate"
    batch_size: int = 1  # images per Generate / frames per Interpolate / latents per activations
    resolution: int = 32  # ClassMap cells per side
    label: int | None = None  # conditional models; None: 0 when the model needs one
    duration_s: float = 10.0
    warmup_s: float = 1.0
    concurrency: tuple[int, ...] = (1, 8, 32, 64)
    rate: float = 0.0  # > 0: open loop at this many requests per second
    timeout_s: float = 30.0
    token: str | None = None
    psi: float | None = None  # Generate/Interpolate/activations: truncation
    edit_channels: int = 0  # Generate/activations: switch off this many channels of the last
    # editable layer, a different set in each request (so batches mix different edits)


def _steer(request, spec: LoadSpec, model: pb.ModelInfo, index: int) -> None:
    if spec.psi is not None:
        request.psi = spec.psi
    if spec.edit_channels and hasattr(request, "edits"):
        if not model.editable_layers:
            raise ValueError(f"{model.name} has no editable layers (exported before steering)")
        layer = model.editable_layers[-1]
        first = index * spec.edit_channels
        channels = [(first + i) % layer.channels for i in range(spec.edit_channels)]
        request.edits.add(layer=layer.layer, channels=channels, scale=0.0)


@dataclass
class LevelResult:
    concurrency: int  # closed loop: workers; open loop: requests still in flight at most
    rate: float  # open loop: the target rate; closed loop: 0
    requests: int
    seconds: float
    images: int
    latencies_ms: list[float] = field(repr=False, default_factory=list)
    codes: Counter = field(default_factory=Counter)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        ok = self.codes.get("OK", 0)
        return {
            "concurrency": self.concurrency,
            "target_rate": self.rate,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rpc_per_s": round(ok / self.seconds, 2) if self.seconds else 0.0,
            "images_per_s": round(self.images / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": {
                p: round(float(np.percentile(lat, q)), 3)
                for p, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99))
            }
            | {"mean": round(float(lat.mean()), 3), "max": round(float(lat.max()), 3)},
            "codes": dict(self.codes),
        }


def build_request(spec: LoadSpec, model: pb.ModelInfo, index: int):
    """The request ``index`` of a run: fixed seeds per index, so runs are repeatable."""
    label = (
        spec.label
        if spec.label is not None
        else (0 if model.kind == pb.CONDITIONAL_GENERATOR else None)
    )
    seeds = [(index * spec.batch_size + i) % 2**31 for i in range(spec.batch_size)]
    if spec.rpc == "generate":
        request = pb.GenerateRequest(model=spec.model, seeds=seeds)
        if label is not None:
            request.labels.append(label)
        _steer(request, spec, model, index)
        return request
    if spec.rpc == "interpolate":
        keys = [pb.LatentSource(seed=index), pb.LatentSource(seed=index + 1)]
        request = pb.InterpolateRequest(model=spec.model, keys=keys, steps=max(spec.batch_size, 2))
        if label is not None:
            request.label = label
        _steer(request, spec, model, index)
        return request
    if spec.rpc == "classmap":
        # A fresh plane per request (different fixed point), so the cache does not answer.
        request = pb.ClassMapRequest(
            model=spec.model,
            resolution=spec.resolution,
            range_min=-1.0,
            range_max=1.0 + index * 1e-6,
        )
        if label is not None:
            request.label = label
        return request
    if spec.rpc == "activations":
        request = pb.LayerActivationsRequest(
            model=spec.model, latents=[pb.LatentSource(seed=s) for s in seeds]
        )
        if label is not None:
            request.labels.append(label)
        _steer(request, spec, model, index)
        return request
    raise ValueError(f"rpc must be one of {RPCS}, got {spec.rpc!r}")


def _images_per_request(spec: LoadSpec) -> int:
    if spec.rpc == "classmap":
        return spec.resolution * spec.resolution
    return max(spec.batch_size, 2) if spec.rpc == "interpolate" else spec.batch_size


class LoadGenerator:
    def __init__(self, spec: LoadSpec):
        self.spec = spec
        self._metadata = (("authorization", f"Bearer {spec.token}"),) if spec.token else ()

    async def _one(self, stub, request) -> str:
        try:
            if self.spec.rpc == "interpolate":
                async for _ in stub.Interpolate(
                    request, timeout=self.spec.timeout_s, metadata=self._metadata
                ):
                    pass
            else:
                method = {
                    "generate": stub.Generate,
                    "classmap": stub.ClassMap,
                    "activations": stub.LayerActivations,
                }[self.spec.rpc]
                await method(request, timeout=self.spec.timeout_s, metadata=self._metadata)
            return "OK"
        except grpc.aio.AioRpcError as exc:
            return exc.code().name

    async def _closed_level(self, stub, model, workers: int, counter: list[int]) -> LevelResult:
        result = LevelResult(concurrency=workers, rate=0.0, requests=0, seconds=0.0, images=0)
        per_request = _images_per_request(self.spec)
        warm_until = time.perf_counter() + self.spec.warmup_s
        stop_at = warm_until + self.spec.duration_s

        async def worker():
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                counter[0] += 1  # every request sent, warm-up included: what the server will count
                code = await self._one(stub, build_request(self.spec, model, counter[0]))
                if started >= warm_until:  # requests that started in the measured window count
                    result.requests += 1
                    result.codes[code] += 1
                    result.latencies_ms.append((time.perf_counter() - started) * 1000)
                    if code == "OK":
                        result.images += per_request

        await asyncio.gather(*(worker() for _ in range(workers)))
        result.seconds = self.spec.duration_s
        return result

    async def _open_level(self, stub, model, counter: list[int]) -> LevelResult:
        rate = self.spec.rate
        result = LevelResult(concurrency=0, rate=rate, requests=0, seconds=0.0, images=0)
        per_request = _images_per_request(self.spec)
        in_flight = {"now": 0}
        total = int(rate * (self.spec.warmup_s + self.spec.duration_s))
        warm = int(rate * self.spec.warmup_s)
        start = time.perf_counter()

        async def fire(i: int, intended: float):
            in_flight["now"] += 1
            result.concurrency = max(result.concurrency, in_flight["now"])
            code = await self._one(stub, build_request(self.spec, model, i))
            in_flight["now"] -= 1
            if i >= warm:
                result.requests += 1
                result.codes[code] += 1
                result.latencies_ms.append((time.perf_counter() - intended) * 1000)
                if code == "OK":
                    result.images += per_request

        tasks = []
        for i in range(total):
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            counter[0] += 1
            tasks.append(asyncio.ensure_future(fire(counter[0], intended)))
        await asyncio.gather(*tasks)
        result.seconds = self.spec.duration_s
        return result

    async def run_requests(self, total: int) -> dict:
        """Exactly ``total`` requests from ``concurrency[0]`` closed-loop workers (soak and memory runs)."""
        workers = self.spec.concurrency[0]
        async with grpc.aio.insecure_channel(self.spec.address) as channel:
            stub = pb_grpc.GenerationServiceStub(channel)
            model = await stub.GetModel(
                pb.GetModelRequest(model=self.spec.model), metadata=self._metadata
            )
            result = LevelResult(concurrency=workers, rate=0.0, requests=0, seconds=0.0, images=0)
            next_index = iter(range(total))
            started = time.perf_counter()

            async def worker():
                for index in next_index:
                    began = time.perf_counter()
                    code = await self._one(stub, build_request(self.spec, model, index))
                    result.requests += 1
                    result.codes[code] += 1
                    result.latencies_ms.append((time.perf_counter() - began) * 1000)

            await asyncio.gather(*(worker() for _ in range(workers)))
            result.seconds = time.perf_counter() - started
        return result.summary()

    async def run(self) -> dict:
        options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(self.spec.address, options=options) as channel:
            stub = pb_grpc.GenerationServiceStub(channel)
            model = await stub.GetModel(
                pb.GetModelRequest(model=self.spec.model), metadata=self._metadata
            )
            counter = [0]
            if self.spec.rate > 0:
                levels = [await self._open_level(stub, model, counter)]
            else:
                levels = [
                    await self._closed_level(stub, model, n, counter) for n in self.spec.concurrency
                ]
        return {
            "mode": "open" if self.spec.rate > 0 else "closed",
            "rpc": self.spec.rpc,
            "method": METHOD_NAMES[self.spec.rpc],
            "model": self.spec.model,
            "batch_size": self.spec.batch_size,
            "duration_s": self.spec.duration_s,
            "warmup_s": self.spec.warmup_s,
            "levels": [level.summary() for level in levels],
            "sent_including_warmup": counter[0],
        }


def plot(report: dict, path: Path) -> Path | None:
    """Throughput and latency percentiles against concurrency (or target rate), as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    levels = report["levels"]
    x = [lv["target_rate"] if report["mode"] == "open" else lv["concurrency"] for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(x, [lv["images_per_s"] for lv in levels], marker="o")
    left.set_ylabel("images/s")
    for p in ("p50", "p95", "p99"):
        right.plot(x, [lv["latency_ms"][p] for lv in levels], marker="o", label=p)
    right.set_ylabel("latency (ms)")
    right.legend()
    for axis in (left, right):
        axis.set_xlabel("target rate (req/s)" if report["mode"] == "open" else "concurrency")
        if report["mode"] == "closed" and len(x) > 1:
            axis.set_xscale("log", base=2)
        axis.grid(alpha=0.3)
    fig.suptitle(f"{report['method']} on {report['model']} (batch {report['batch_size']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_loadtest(spec: LoadSpec, out: Path) -> dict:
    report = asyncio.run(LoadGenerator(spec).run())
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.rpc}-{spec.model}-{'rate' + str(spec.rate) if spec.rate else 'sweep'}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    image = plot(report, out / f"{stem}.png")
    report["files"] = [str(out / f"{stem}.json")] + ([str(image)] if image else [])
    return report
