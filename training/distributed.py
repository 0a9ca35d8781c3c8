"""Training on several processes (DistributedDataParallel): the process group from torchrun's
environment, the data shard of each rank, per-rank noise, and the rule that rank 0 alone writes.

``torchrun --nproc_per_node N -m ganserve.training ...`` (or ``ganserve train --nproc N``) starts
N copies of the trainer; without torchrun's environment everything here is a no-op and training
runs as one process, unchanged.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# Rank 0 alone runs the per-epoch monitoring (grids, diversity, weak IC test, checkpoints) while the
# other ranks wait in the next step's collective: allow for a slow epoch end, not the 10-min default.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group; one process (rank 0 of 1) when not under torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` on this rank's device, inside DistributedDataParallel when in a group (the
        caller keeps the bare module for checkpoints, so state-dict keys do not change)."""
        module.to(self.device)
        if not self.active:
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's part of an epoch's order (every rank draws the same one): rank r takes
        every world_size-th index from r, as DistributedSampler does, after dropping the last
        ``len % world_size`` so that every rank runs the same number of steps."""
        if self.world_size == 1:
            return order
        return order[: len(order) - len(order) % self.world_size][self.rank :: self.world_size]

    def noise_generator(self, shared: torch.Generator, seed: int, epoch: int) -> torch.Generator:
        """Latents and fake labels: the shared generator on one process (so single-process runs
        are unchanged); otherwise one per rank and epoch, so ranks draw different noise and a
        resumed run draws the same noise again."""
        if self.world_size == 1:
            return shared
        state = np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1)
        return torch.Generator().manual_seed(int(state[0]))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (epoch losses: one history row for the group)."""
        if not self.active:
            return values
        totals = self.sum(list(values.values()))
        return {k: v / self.world_size for k, v in zip(values, totals, strict=True)}

    def sum(self, values: Sequence[float]) -> list[float]:
        if not self.active:
            return list(values)
        # NCCL reduces device tensors only.
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def shutdown(self) -> None:
        if self.active:
            dist.barrier()
            dist.destroy_process_group()


def _use_gpu(index: int) -> torch.device:
    """GPU ``index`` for this process's tensors, with cuDNN's autotuning (fixed shapes: let it
    pick its fastest kernels), for one process and torchrun's ranks alike."""
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", index)


def single_process_device() -> torch.device:
    """The GPU when one is usable (``CUDA_VISIBLE_DEVICES=`` keeps a run on the CPU), else the CPU."""
    if torch.cuda.is_available():
        return _use_gpu(torch.cuda.current_device())
    return torch.device("cpu")


def from_environment() -> Distributed:
    """Join the group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
    NCCL with one GPU per process when CUDA is there, gloo on CPU. Without it: one process, on the
    GPU when there is one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Distributed(device=single_process_device())
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        device = _use_gpu(local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT
        )
    if rank != 0:  # one log for the group: the other ranks only warn
        logging.getLogger("ganserve").setLevel(logging.WARNING)
    return Distributed(rank, world_size, local_rank, device)


def launch(nproc: int, argv: Sequence[str]) -> int:
    """``ganserve ... train --nproc N ...``: the same command, less ``--nproc``, as N processes
    under torchrun on this machine (``--standalone``: a local rendezvous on a free port)."""
    args, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--nproc":
            rest.pop(0)
        elif not arg.startswith("--nproc="):
            args.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "ganserve.cli", *args]  # fmt: skip
    process = subprocess.Popen(command)
    # A stop sent to this process (SIGTERM from Kubernetes or a supervisor) goes on to torchrun,
    # which stops its workers; without this they would outlive it.
    forwarding = threading.current_thread() is threading.main_thread()
    if forwarding:
        previous = signal.signal(signal.SIGTERM, lambda signum, _: process.send_signal(signum))
    try:
        return process.wait()
    finally:
        if forwarding:
            signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.kill()
            process.wait()
