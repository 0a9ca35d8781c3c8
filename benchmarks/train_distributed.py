"""Training images/s on one process against two (DistributedDataParallel over gloo, CPU), measured
side by side in one run through the real ``ganserve train`` command.

    python benchmarks/train_distributed.py [--data fashion-mnist] [--subset 4096] [--epochs 3]

Every case trains the shipped conditional DCGAN (latent 100, G width 0.5, D width 1). Two numbers:

- images/s: what the trainer writes to history.csv for the whole group (training steps only: no
  start-up, no per-epoch monitoring), best epoch after the first;
- CPU seconds per 1,000 images: the CPU time of a run of 1 + ``--epochs`` epochs less that of a
  run of 1 epoch (so start-up and the first epoch cancel out), over the images of the extra epochs.
  It does not depend on how busy the machine is, and shows what distribution costs in work.

On a machine shared with other work, wall-clock images/s reflect the scheduler's share as much as
speed (two processes get two shares), so the load average is recorded beside them. Results go to
``benchmarks/results/train_distributed.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = ["--family", "dcgan", "--conditional", "true", "--latent-dim", "100", "--width", "0.5",
         "--d-width", "1", "--weak-ic-every", "0", "--checkpoint-every", "1000", "--progress", "false"]  # fmt: skip
# (name, processes, threads per process, batch per process)
CASES = [
    ("1 process, 1 thread, batch 128", 1, 1, 128),
    ("1 process, 2 threads, batch 128", 1, 2, 128),
    ("2 processes x 1 thread, batch 128 each (global 256)", 2, 1, 128),
    ("2 processes x 1 thread, batch 64 each (global 128)", 2, 1, 64),
]


def run_case(data: str, subset: int, epochs: int, nproc: int, threads: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "ganserve.cli", "train", "--data", data, "--subset",
                   str(subset), "--epochs", str(epochs), "--batch-size", str(batch), "--threads",
                   str(threads), "--nproc", str(nproc), "--out", out, *MODEL]  # fmt: skip
        cpu_before = _children_cpu_s()
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        wall = time.perf_counter() - started
        rows = list(csv.DictReader((Path(out) / "history.csv").open()))
    return {"rows": rows, "wall_s": wall, "cpu_s": _children_cpu_s() - cpu_before}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for descendants, torchrun's too
    return usage.ru_utime + usage.ru_stime


def measure(data: str, subset: int, epochs: int, nproc: int, threads: int, batch: int) -> dict:
    short = run_case(data, subset, 1, nproc, threads, batch)
    long = run_case(data, subset, 1 + epochs, nproc, threads, batch)
    speeds = [float(r["images_per_s"]) for r in long["rows"][1:]]
    images = epochs * (subset - subset % nproc)
    return {
        "images_per_s": max(speeds),
        "epochs_images_per_s": speeds,
        "cpu_s_per_1000_images": 1000 * (long["cpu_s"] - short["cpu_s"]) / images,
        "start_up_and_first_epoch_cpu_s": short["cpu_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "train_distributed.json")
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    for name, nproc, threads, batch in CASES:
        result = measure(args.data, args.subset, args.epochs, nproc, threads, batch)
        rows.append(
            {"case": name, "processes": nproc, "threads": threads, "batch": batch, **result}
        )
        print(f"{name:55s} {result['images_per_s']:6.0f} images/s "
              f"{result['cpu_s_per_1000_images']:6.2f} CPU s per 1,000 images", flush=True)  # fmt: skip
    reference = rows[0]["images_per_s"]
    for row in rows:
        row["vs_1_process_1_thread"] = row["images_per_s"] / reference
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "python": platform.python_version(),
        },
        "data": args.data,
        "subset": args.subset,
        "epochs": args.epochs,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
