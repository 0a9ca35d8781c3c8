"""Training on two processes (DistributedDataParallel over gloo on CPU) through the real CLI, and
resume across process counts."""

import csv

import torch

from ganserve.cli import main
from ganserve.training.checkpoint import load_checkpoint
from ganserve.training.distributed import Distributed

FLAGS = ["--family", "dcgan", "--conditional", "true", "--latent-dim", "3", "--width", "0.25",
         "--batch-size", "32", "--subset", "128", "--ema-decay", "0.9", "--checkpoint-every", "1",
         "--weak-ic-every", "0"]  # fmt: skip


def _adam_steps(ckpt) -> int:
    return int(next(iter(ckpt.raw["opt_g"]["state"].values()))["step"])


def test_two_processes_continue_a_one_process_run_and_one_process_continues_theirs(
    tmp_path, idx_dir
):
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"

    def train(*flags: str) -> None:
        assert main(["train", "--out", str(run), "--progress", "false", *flags]) == 0

    train("--data", str(idx_dir), "--epochs", "1", *FLAGS)  # one process: 4 steps of 32
    train("--nproc", "2", "--resume", str(checkpoints / "epoch_0001.pt"), "--epochs", "2")
    distributed = load_checkpoint(checkpoints / "epoch_0002.pt")
    assert distributed.epoch == 2 and not any(
        k.startswith("module.") for k in distributed.raw["generator"]
    )
    assert (run / "grids" / "epoch_0002.png").is_file()
    train("--resume", str(checkpoints / "epoch_0002.pt"), "--epochs", "3")

    first, last = (
        load_checkpoint(checkpoints / "epoch_0001.pt"),
        load_checkpoint(checkpoints / "last.pt"),
    )
    # Each of the two ranks took half of the 128 images (2 steps of 32, not 4), and the optimiser
    # state went on through both resumes.
    assert (_adam_steps(first), _adam_steps(distributed), _adam_steps(last)) == (4, 6, 10)
    before, after = first.raw["generator"], distributed.raw["generator"]
    assert any(
        not torch.equal(before[k], after[k]) for k in before
    )  # the distributed epoch trained
    assert last.epoch == 3
    assert last.generator()(torch.zeros(2, 3), torch.tensor([0, 1])).shape == (2, 1, 28, 28)
    # One history row per epoch for the whole group, not one per rank.
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(float(r["d_loss"]) > 0 for r in rows)


def test_ranks_take_disjoint_equal_shards_of_one_order():
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shards = [Distributed(rank=r, world_size=3).shard(order) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert sorted(torch.cat(shards).tolist()) == sorted(order[:9].tolist())
    assert torch.equal(Distributed().shard(order), order)


def test_ranks_draw_their_own_noise_and_the_same_again_on_resume():
    shared = torch.Generator().manual_seed(5)
    assert (
        Distributed().noise_generator(shared, seed=0, epoch=3) is shared
    )  # one process: as before

    def draw(rank, epoch):
        noise = Distributed(rank=rank, world_size=2).noise_generator(shared, seed=0, epoch=epoch)
        return torch.rand(4, generator=noise)

    assert not torch.equal(draw(0, 3), draw(1, 3))
    assert not torch.equal(draw(0, 3), draw(0, 4))
    assert torch.equal(draw(1, 3), draw(1, 3))


def test_one_process_trains_on_the_gpu_when_there_is_one(monkeypatch):
    """Found on an H200: without torchrun a run stayed on the CPU (310 images/s on a GPU box)."""
    from ganserve.training import distributed

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    place = distributed.from_environment()
    assert (place.device, place.world_size) == (torch.device("cuda", 0), 1)
    assert torch.backends.cudnn.benchmark  # fixed shapes: cuDNN picks its fastest kernels

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.from_environment().device == torch.device("cpu")
