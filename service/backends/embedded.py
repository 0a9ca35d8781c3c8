"""ONNX Runtime in process, with our own dynamic batching (the default backend)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ganserve.description import METADATA_KEY, ModelDescription

from ..batching import DynamicBatcher
from ..errors import ModelNotFound
from .base import Backend, InferenceObserver

log = logging.getLogger(__name__)


def gpu_usable() -> bool:
    """A CUDA device is really there (onnxruntime-gpu lists CUDA even on machines without one)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if not any(Path("/dev").glob("nvidia[0-9]*")) or shutil.which("nvidia-smi") is None:
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def choose_providers(prefer_gpu: bool | None = None) -> list[str]:
    available = ort.get_available_providers()
    use_gpu = gpu_usable() if prefer_gpu is None else prefer_gpu
    if use_gpu and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


CGROUP_CPU_LIMITS = (
    (Path("/sys/fs/cgroup/cpu.max"), None),  # cgroup v2: "<quota> <period>" or "max <period>"
    (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")),
)


def cgroup_cpu_limit(limits=CGROUP_CPU_LIMITS) -> int | None:
    """Whole cores a container's CPU quota allows (at least 1; a fraction left over is the event
    loop's); None when unlimited or unknown."""
    for quota_file, period_file in limits:
        try:
            fields = quota_file.read_text().split()
            if period_file is not None:
                fields = [fields[0], period_file.read_text().strip()]
        except (OSError, IndexError):
            continue
        if fields[0] in ("max", "-1"):
            return None
        try:
            quota, period = int(fields[0]), int(fields[1])
        except (ValueError, IndexError):
            continue
        if quota > 0 and period > 0:
            return max(1, quota // period)
    return None


def usable_cores() -> int:
    """Cores this process may use: its affinity mask, capped by a container's CPU quota (a pod
    limited to 2 CPUs on a 64-core node must not start 64 instances)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cores, limit) if limit else cores


def plan_instances(instances: int, threads: int, on_gpu: bool, workers: int = 1) -> tuple[int, int]:
    """(concurrent inferences per model, ONNX Runtime threads each); 0 means choose.

    On a CPU, one single-threaded inference per core beats one inference over every core
    (measured: 1.5x on 2 cores, benchmarks/serve_throughput.py), so the default is one instance
    per core, the cores divided between ``workers`` service processes. On a GPU one instance
    keeps the device busy; its CPU threads only feed it.
    """
    cores = max(1, usable_cores() // workers)
    if instances <= 0 and on_gpu:
        instances = 1
    elif instances <= 0:
        instances = max(1, cores // threads) if threads > 0 else cores
    if threads <= 0:
        threads = max(1, cores // instances)
    return instances, threads


def find_onnx_models(repository: Path) -> dict[str, Path]:
    """``<repo>/<name>/<version>/model.onnx`` (highest version wins), or bare ``*.onnx`` files."""
    if repository.is_file():
        return {repository.stem: repository}
    found: dict[str, Path] = {}
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()):
        versions = sorted(
            (int(v.name), v / "model.onnx")
            for v in model_dir.iterdir()
            if v.name.isdigit() and (v / "model.onnx").exists()
        )
        if versions:
            found[model_dir.name] = versions[-1][1]
    for path in sorted(repository.glob("*.onnx")):
        found.setdefault(path.stem, path)
    return found


@dataclass
class EmbeddedSettings:
    repository: Path
    max_batch_size: int = 64
    max_queue_delay_ms: float = 0.0  # see ServeConfig
    max_queued_images: int = 8192
    batching: bool = True
    instances: int = 0  # concurrent inferences per model; 0: one per core (CPU), one (GPU)
    intra_op_threads: int = 0  # ONNX Runtime threads per inference; 0: cores / instances
    prefer_gpu: bool | None = None  # None: use a GPU when one is really usable
    workers: int = 1  # service processes sharing this machine's cores (--workers)


class _LoadedModel:
    """One ONNX Runtime session; ``run`` may be called from several threads at once."""

    def __init__(self, path: Path, threads: int, providers: list[str]):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(
                f"{path}: no {METADATA_KEY} metadata; export it with `ganserve export`"
            )
        self.description = ModelDescription.from_json(meta[METADATA_KEY])
        self.providers = self.session.get_providers()

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, self.session.run(outputs, inputs), strict=True))


class EmbeddedBackend(Backend):
    name = "embedded"

    def __init__(self, settings: EmbeddedSettings, observer: InferenceObserver | None = None):
        self.settings = settings
        self._observer = observer
        self._models: dict[str, _LoadedModel] = {}
        self._batchers: dict[str, DynamicBatcher] = {}
        # Up to `instances` inferences at a time per model, each on its own executor thread.
        self._executor: ThreadPoolExecutor | None = None
        self.instances, self.threads = 0, 0

    async def start(self) -> None:
        repository = Path(self.settings.repository)
        if not repository.exists():
            raise FileNotFoundError(f"{repository}: model repository not found")
        paths = find_onnx_models(repository)
        if not paths:
            raise FileNotFoundError(
                f"{repository}: no ONNX models (expected <name>/<version>/model.onnx)"
            )
        providers = choose_providers(self.settings.prefer_gpu)
        self.instances, self.threads = plan_instances(
            self.settings.instances,
            self.settings.intra_op_threads,
            on_gpu=providers[0] == "CUDAExecutionProvider",
            workers=self.settings.workers,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=self.instances * len(paths), thread_name_prefix="ort"
        )
        for name, path in paths.items():
            model = _LoadedModel(path, self.threads, providers)
            if model.description.name != name:  # the directory name is the served name
                model.description.name = name
            self._models[name] = model
            self._batchers[name] = DynamicBatcher(
                model.run,
                self._executor,
                model=name,
                backend=self.name,
                max_batch_size=self.settings.max_batch_size,
                max_queue_delay_s=self.settings.max_queue_delay_ms / 1000.0,
                max_queued_images=self.settings.max_queued_images,
                enabled=self.settings.batching,
                instances=self.instances,
                observer=self._observer,
            )
            log.info(
                "loaded %s from %s on %s: %d instance(s) x %d thread(s)",
                name, path, model.providers, self.instances, self.threads,
            )  # fmt: skip

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def models(self) -> dict[str, ModelDescription]:
        return {name: m.description for name, m in self._models.items()}

    def is_ready(self) -> bool:
        return bool(self._models) and self._executor is not None

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: Sequence[str],
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        batcher = self._batchers.get(model)
        if batcher is None:
            raise ModelNotFound(model, list(self._models))
        return await batcher.submit(inputs, list(outputs), timeout_s)
