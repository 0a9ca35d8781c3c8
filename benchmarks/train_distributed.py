"""Training speed on one process against two (DistributedDataParallel over gloo, CPU), measured side
by side in one run with the real trainer (``GANTrainer.train_epoch``, the DDP path torchrun uses).

    python benchmarks/train_distributed.py [--data fashion-mnist] [--subset 2048] [--epochs 3]

Every case trains the shipped conditional DCGAN (latent 100, G width 0.5, D width 1) for
``--epochs`` epochs after one warm-up epoch, and each process records per epoch its wall time and
its own CPU time (``time.process_time``). Reported per case, best epoch:

- images/s (wall clock): the whole group's images over the epoch's wall time;
- CPU seconds per 1,000 images, summed over the processes: the work, whatever else the machine
  runs, so it shows what distribution costs (gradient all-reduce, smaller batches per process);
- images/s with a core per process: the group's images over the busiest process's CPU time, the
  speed of an idle machine with one core for each process (waits for the other rank not counted;
  single-threaded processes only, as a threaded process's CPU time also counts its threads' spinning).

On a machine shared with other work, wall-clock numbers reflect the scheduler's share as much as
speed (two processes get two shares), so the load average is recorded beside them. Results go to
``benchmarks/results/train_distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (name, processes, threads per process, batch per process)
CASES = [
    ("1 process, 1 thread, batch 128", 1, 1, 128),
    ("1 process, 2 threads, batch 128", 1, 2, 128),
    ("2 processes x 1 thread, batch 128 each (global 256)", 2, 1, 128),
    ("2 processes x 1 thread, batch 64 each (global 128)", 2, 1, 64),
]


def worker(args: argparse.Namespace) -> None:
    """One process of a case (under torchrun when there are two): train, time, report."""
    import torch.distributed as dist

    from ganserve.training.config import DataConfig, Family, ModelConfig, TrainConfig
    from ganserve.training.data import load_data
    from ganserve.training.trainer import GANTrainer

    model = ModelConfig(family=Family.DCGAN, conditional=True, latent_dim=100, width=0.5, d_width=1)
    data = DataConfig(data=args.data, subset=args.subset)
    with tempfile.TemporaryDirectory() as out:
        train = TrainConfig(batch_size=args.batch, threads=args.threads, out=out, progress=False)
        trainer = GANTrainer(model, data, train, load_data(data))
        epochs = []
        for _ in range(1 + args.epochs):
            wall, cpu = time.perf_counter(), time.process_time()
            row = trainer.train_epoch()
            trainer.epoch += 1
            epochs.append((time.perf_counter() - wall, time.process_time() - cpu, row))
    per_rank = [epochs]
    if trainer.dist.active:
        per_rank = [None] * trainer.dist.world_size
        dist.all_gather_object(per_rank, epochs)
    if trainer.dist.is_main:
        images = args.subset - args.subset % trainer.dist.world_size
        measured = [
            {
                "images_per_s": images / wall,
                "cpu_s_per_1000_images": 1000 * sum(r[i][1] for r in per_rank) / images,
                # A threaded process's CPU time also counts its threads' waits: no estimate.
                "images_per_s_with_a_core_per_process": images / max(r[i][1] for r in per_rank)
                if args.threads == 1
                else None,
                "d_loss": row["d_loss"],
            }
            for i, (wall, _, row) in enumerate(epochs)
            if i > 0  # the first epoch warms up
        ]
        Path(args.out).write_text(json.dumps(measured))
    trainer.dist.shutdown()


def run_case(args: argparse.Namespace, nproc: int, threads: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "epochs.json"
        case = [__file__, "--worker", "--data", args.data, "--subset", str(args.subset),
                "--epochs", str(args.epochs), "--batch", str(batch), "--threads", str(threads),
                "--out", str(out)]  # fmt: skip
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        subprocess.run([sys.executable, *(launcher if nproc > 1 else []), *case], check=True)
        epochs = json.loads(out.read_text())
    best = {
        "images_per_s": max(e["images_per_s"] for e in epochs),
        "cpu_s_per_1000_images": min(e["cpu_s_per_1000_images"] for e in epochs),
        "images_per_s_with_a_core_per_process": max(
            e["images_per_s_with_a_core_per_process"] or 0.0 for e in epochs
        )
        or None,
    }
    return {**best, "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--subset", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "train_distributed.json")
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    load_before = os.getloadavg()
    rows = []
    for name, nproc, threads, batch in CASES:
        result = run_case(args, nproc, threads, batch)
        rows.append(
            {"case": name, "processes": nproc, "threads": threads, "batch": batch, **result}
        )
        print(f"{name:52s} {result['images_per_s']:6.0f} images/s, "
              f"{result['cpu_s_per_1000_images']:5.2f} CPU s per 1,000 images, "
              f"{result['images_per_s_with_a_core_per_process'] or 0:6.0f} images/s with a core per process",
              flush=True)  # fmt: skip
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
        "timed_epochs": args.epochs,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
