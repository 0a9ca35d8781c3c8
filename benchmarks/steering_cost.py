"""What steering costs: plain requests before and after it, and steered ones, in one run.

    git worktree add /tmp/before <commit before steering>
    ganserve export CKPT --name fmnist-cgan --triton-repo AFTER_REPO                 # this code
    (cd /tmp && PYTHONPATH=<the before tree as a ganserve package> python -m ganserve.cli export CKPT \\
        --name fmnist-cgan --triton-repo BEFORE_REPO)                              # the old code
    python benchmarks/steering_cost.py --before /tmp/before --before-repository BEFORE_REPO \\
        --repository AFTER_REPO [--model fmnist-cgan] [--seconds 5] [--rounds 2]

The same checkpoint exported by the code before steering (int label, no scale inputs) and by this
code (class weights and a scale per hidden layer). Rows, in ``--rounds`` interleaved rounds:
raw ONNX Runtime at batch 64 on each model, one thread (the graph's own cost), and through each
service in its own process: single-image Generate at concurrency 32 and bulk Generate (count 64);
after steering also the same calls with psi 0.7 and 8 channels of the last hidden layer switched
off (a different set per request, so batches mix edits).

Every row is reported twice: images per wall-clock second, and CPU cost: images per CPU-second of
the process that does the work (ONNX Runtime's own process for the raw rows, the service process
for the others, from /proc). On a machine shared with other jobs the wall-clock rates follow the
other jobs' load; the CPU cost does not, so that is the column to compare.
Results: ``benchmarks/results/steering.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import load

from ganserve.export.onnx_export import example_inputs, read_description
from ganserve.export.triton_local import free_port
from ganserve.service.backends.embedded import find_onnx_models

ROOT = Path(__file__).resolve().parent.parent
STEERED = {"psi": 0.7, "edit_channels": 8}
SHAPES = {"single_c32": {"concurrency": (32,)}, "bulk_count64_c1": {"batch_size": 64, "concurrency": (1,)}}  # fmt: skip


def raw_ort(path: Path, seconds: float) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of ONNX Runtime, batch 64, one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = example_inputs(read_description(path), 64)
    session.run(["image"], feeds)
    images, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        session.run(["image"], feeds)
        images += 64
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def package_of(source: Path) -> Path:
    """A folder whose ``ganserve`` package is the checkout ``source`` (its folders mapped as
    pyproject's package-dir maps them), to run another version of the code with this venv."""
    root = Path(tempfile.mkdtemp(prefix="ganserve-src-"))
    package = root / "ganserve"
    package.mkdir()
    for entry in (source / "ganserve").iterdir():
        (package / entry.name).symlink_to(entry)
    for name in ("training", "export", "service"):
        (package / name).symlink_to(source / name)
    (package / "v1").symlink_to(source / "proto" / "ganserve" / "v1")
    return root


class Service:
    """``ganserve serve`` in its own process; ``python_path`` runs another version of the code."""

    def __init__(self, repository: Path, python_path: Path | None = None):
        self.port = free_port()
        env = dict(os.environ)
        if python_path is not None:
            env["PYTHONPATH"] = str(python_path)
        command = [sys.executable, "-m", "ganserve.cli", "--log-level", "WARNING", "serve",
                   "--models", str(repository), "--address", f"127.0.0.1:{self.port}",
                   "--metrics-port", str(free_port()), "--http-port", "-1"]  # fmt: skip
        # From a folder outside any checkout, so only PYTHONPATH (or the venv) decides the code.
        self.process = subprocess.Popen(command, env=env, cwd=tempfile.gettempdir(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        grpc.channel_ready_future(grpc.insecure_channel(self.address)).result(timeout=300)

    def cpu_s(self) -> float:
        """CPU seconds the service process has used (user + system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, model: str, seconds: float, **spec) -> tuple[float, float]:
        """(images per wall second, images per CPU second of the service) under ``spec``'s load."""
        before = self.cpu_s()
        level = load(self.address, model, seconds, **spec)
        images = level["images_per_s"] * level["seconds"]
        # The load generator's warm-up also ran on the service; count its images too.
        warm = level["images_per_s"] * 1.0
        return level["images_per_s"], (images + warm) / max(self.cpu_s() - before, 1e-9)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        self.process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="a checkout of the code before steering")
    parser.add_argument("--before-repository", required=True, help="models it exported")
    parser.add_argument("--repository", required=True, help="the same models exported by this code")
    parser.add_argument("--model", default="fmnist-cgan")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "steering.json"))
    args = parser.parse_args()
    before_repo, after_repo = Path(args.before_repository), Path(args.repository)
    before_code = package_of(Path(args.before).resolve())
    rows: dict[str, dict[str, list[float]]] = {}

    def record(name: str, rates: tuple[float, float]) -> None:
        row = rows.setdefault(name, {"images_per_wall_s": [], "images_per_cpu_s": []})
        row["images_per_wall_s"].append(round(rates[0], 1))
        row["images_per_cpu_s"].append(round(rates[1], 1))
        print(f"{name}: {rates[0]:.0f} img/s, {rates[1]:.0f} img per CPU-second", flush=True)

    for _ in range(args.rounds):
        for label, repo in (("before", before_repo), ("after", after_repo)):
            record(
                f"raw_ort_batch64_{label}",
                raw_ort(find_onnx_models(repo)[args.model], args.seconds),
            )
        with Service(before_repo, before_code) as service:
            for shape, spec in SHAPES.items():
                record(f"{shape}_plain_before", service.measure(args.model, args.seconds, **spec))
        with Service(after_repo) as service:
            for shape, spec in SHAPES.items():
                record(f"{shape}_plain_after", service.measure(args.model, args.seconds, **spec))
                steered = service.measure(args.model, args.seconds, **spec, **STEERED)
                record(f"{shape}_steered", steered)
    results = {
        "model": args.model,
        "seconds_per_row": args.seconds,
        "steered": STEERED,
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
        "median_images_per_cpu_s": {
            name: float(np.median(row["images_per_cpu_s"])) for name, row in rows.items()
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
