"""Training loops for GANs and the classifier: seeded, checkpointed, exactly resumable."""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ganserve.errors import CheckpointError, TrainingStopped
from ganserve.latents import latents_from_seeds

from .augment import shift_and_flip
from .checkpoint import (
    DataInfo,
    capture_rng_state,
    checkpoint_dict,
    load_checkpoint,
    restore_rng_state,
    save_atomic,
)
from .config import DataConfig, Family, Loss, ModelConfig, TrainConfig
from .data import DataSplits
from .distributed import from_environment
from .metrics import WEAK_IC, Diversity, independent_classifier_test, within_class_diversity
from .models import Generator, build_classifier, build_gan, count_parameters
from .monitor import BalanceWatch, CollapseWatch, LossHistory, image_grid

log = logging.getLogger(__name__)
GRID_SEEDS = 16  # the studies' 4×4 grid of fixed latent points
HISTORY_FIELDS = (
    "epoch", "d_loss", "g_loss", "d_real", "d_fake", "seconds", "images_per_s", "weak_ic_error",
    "diversity_min", "diversity_mean",
)  # fmt: skip
DIVERSITY_PER_CLASS = 64  # generated and real images per class for the per-epoch diversity check
BN_RECOMPUTE_BATCH = 256
CLASSIFIER_FIELDS = ("epoch", "loss", "train_accuracy", "test_accuracy", "seconds", "images_per_s")
CLASSIFIER_LR = 1e-3  # Adam, the class model


def fit_model_to_data(model: ModelConfig, splits: DataSplits) -> ModelConfig:
    """Image shape and class count come from the data, not from flags."""
    return dataclasses.replace(
        model,
        channels=splits.train.channels,
        image_size=splits.train.image_size,
        num_classes=splits.train.num_classes,
    )


def write_checkpoint(run_dir: Path, epoch: int, payload: dict[str, Any]) -> Path:
    """``checkpoints/epoch_NNNN.pt`` plus ``checkpoints/last.pt``, both written atomically."""
    path = run_dir / "checkpoints" / f"epoch_{epoch:04d}.pt"
    save_atomic(payload, path)
    save_atomic(payload, run_dir / "checkpoints" / "last.pt")
    return path


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, NumPy and Python; return the generator that drives shuffling and noise."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed + 1)


def _data_info(splits: DataSplits) -> DataInfo:
    train = splits.train
    return DataInfo(train.name, train.class_names, train.channels, train.image_size, len(train))


def _batches(n: int, batch_size: int, generator: torch.Generator, shard=None):
    """Shuffled index batches (of this rank's ``shard`` of the order when distributed); a trailing
    batch of one is dropped (batch norm needs two)."""
    order = torch.randperm(n, generator=generator)
    if shard is not None:
        order = shard(order)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        if len(index) > 1:
            yield index


def discriminator_loss(
    loss: Loss, real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: float = 1.0
) -> torch.Tensor:
    """Mean per term (real, fake), so ln 2 ≈ 0.69 is the equilibrium of the BCE loss.

    ``real_target`` < 1 is one-sided label smoothing (Salimans et al., 2016): D is never rewarded
    for certainty about real images, which keeps its gradient to G informative.
    """
    if loss is Loss.HINGE:
        return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())
    real_term = real_target * F.softplus(-real_logits) + (1.0 - real_target) * F.softplus(
        real_logits
    )
    return 0.5 * (real_term.mean() + F.softplus(fake_logits).mean())


def generator_loss(loss: Loss, fake_logits: torch.Tensor) -> torch.Tensor:
    if loss is Loss.HINGE:
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log D(G(z))


def mode_seeking_loss(
    images: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """MSGAN's regulariser (Mao et al., 2019): the batch's first half and second half are pairs
    (same label, different latents); the loss is the inverse of the ratio between the pairs' mean
    image distance and their mean latent distance, so G lowers it by making images that differ as
    much as their latents do: a label alone no longer gives one picture."""
    half = len(images) // 2
    image_distance = (images[:half] - images[half : 2 * half]).abs().mean()
    latent_distance = (latents[:half] - latents[half : 2 * half]).abs().mean()
    return 1.0 / (image_distance / latent_distance + eps)


def ema_decay_at(step: int, decay: float) -> float:
    """Decay with a warm-up, (1 + t) / (10 + t) capped at ``decay``: at step t the average holds
    about the last t steps, not 99.9% of the random initial weights (a fixed 0.999 still holds 63%
    of them after 1,000 steps)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Average the weights only: batch-norm statistics of the live model do not fit the averaged
    weights, so the average's own are recomputed (``recompute_batchnorm_statistics``) before use."""
    for ema_p, p in zip(ema.parameters(), model.parameters(), strict=True):
        ema_p.lerp_(p, 1.0 - decay)


@torch.no_grad()
def recompute_batchnorm_statistics(generator: Generator, sample_inputs, batches: int = 16) -> None:
    """Set every batch norm's running mean/variance to the exact average over ``batches`` batches
    from ``sample_inputs()`` (as ``torch.optim.swa_utils.update_bn`` does for a data loader)."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = generator.training
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    generator.train()
    for _ in range(batches):
        generator(*sample_inputs())
    for m in norms:
        m.momentum = momenta[m]
    generator.train(was_training)


class _Trainer:
    """What both trainers share: seeding, run directory, history, checkpoint save and resume."""

    kind = ""
    history_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, model: ModelConfig, data: DataConfig, train: TrainConfig, splits: DataSplits
    ):
        self.model_cfg = fit_model_to_data(model, splits)
        self.data_cfg, self.cfg, self.splits = data, train, splits
        self.run_dir = Path(train.out)
        if train.threads:
            torch.set_num_threads(train.threads)
        self.dist = from_environment()  # one process unless under torchrun
        self.rng = seed_everything(train.seed)
        self.epoch = 0
        self.history = LossHistory(self.run_dir, self.history_fields)
        self.metrics: dict[str, Any] = {}
        if train.lr_decay_start and not 0 < train.lr_decay_start < train.epochs:
            raise ValueError(
                f"--lr-decay-start must lie between 0 and --epochs ({train.epochs}), "
                f"got {train.lr_decay_start}"
            )

    @property
    def base_lr(self) -> float:
        return self.cfg.lr

    def learning_rate(self, epoch: int) -> float:
        """The learning rate while training epoch ``epoch + 1`` (``TrainConfig.lr_factor_at``)."""
        return self.base_lr * self.cfg.lr_factor_at(epoch)

    @staticmethod
    def _set_lr(lr: float, *optimizers: torch.optim.Optimizer) -> None:
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _states(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_states(self, raw: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self) -> Path:
        payload = checkpoint_dict(
            kind=self.kind,
            model=self.model_cfg,
            train=self.cfg,
            data=self.data_cfg,
            data_info=_data_info(self.splits),
            epoch=self.epoch,
            states={**self._states(), "rng": capture_rng_state(self.rng)},
            metrics=self.metrics,
        )
        return write_checkpoint(self.run_dir, self.epoch, payload)

    def _last_checkpoint(self, last: Path | None) -> Path:
        """The run's final checkpoint, written now if the last epoch did not write one."""
        if not self.dist.is_main:
            return self.run_dir / "checkpoints" / "last.pt"
        return last if last is not None else self.save()

    def resume(self, path: str | Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.kind != self.kind:
            raise CheckpointError(f"{path}: is a {ckpt.kind} checkpoint, not a {self.kind}")
        self._load_states(ckpt.raw)
        restore_rng_state(ckpt.raw["rng"], self.rng)
        self.epoch, self.metrics = ckpt.epoch, dict(ckpt.metrics)
        if self.dist.is_main:
            self.history.truncate_after(self.epoch)
        log.info("resumed from %s at epoch %d", path, self.epoch)


class GANTrainer(_Trainer):
    kind = "gan"
    history_fields = HISTORY_FIELDS

    def __init__(
        self, model: ModelConfig, data: DataConfig, train: TrainConfig, splits: DataSplits
    ):
        if model.family is Family.CLASSIFIER:
            raise ValueError("use ClassifierTrainer for the classifier family")
        if train.augment:
            raise ValueError("--augment is for the classifier: a GAN would learn to make it")
        if train.mode_seeking < 0:
            raise ValueError(f"--mode-seeking must be 0 or more, got {train.mode_seeking}")
        super().__init__(model, data, train, splits)
        self.generator, self.discriminator = build_gan(self.model_cfg)
        # Training steps go through these (DistributedDataParallel when distributed); checkpoints
        # and monitoring use the bare modules.
        self.train_g = self.dist.wrap(self.generator)
        self.train_d = self.dist.wrap(self.discriminator)
        betas = (train.beta1, train.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=train.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=train.lr, betas=betas)
        self.ema: Generator | None = (
            copy.deepcopy(self.generator).eval() if train.ema_decay > 0 else None
        )
        self.ema_steps = 0
        self.balance = BalanceWatch(train.healthy_d_loss, train.balance_patience)
        self.collapse = CollapseWatch(train.diversity_warning, train.stop_on_collapse)

    # -- checkpoints -------------------------------------------------------------------------
    def _states(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "balance_streak": self.balance.streak,
            "collapse_streak": self.collapse.streak,
            "ema_steps": self.ema_steps,
        }

    def _load_states(self, raw: dict[str, Any]) -> None:
        self.generator.load_state_dict(raw["generator"])
        self.discriminator.load_state_dict(raw["discriminator"])
        if self.ema is not None and raw.get("ema"):
            self.ema.load_state_dict(raw["ema"])
        self.opt_g.load_state_dict(raw["opt_g"])
        self.opt_d.load_state_dict(raw["opt_d"])
        self.balance.streak = raw.get("balance_streak", 0)
        self.collapse.streak = raw.get("collapse_streak", 0)
        self.ema_steps = raw.get("ema_steps", 0)

    # -- monitoring --------------------------------------------------------------------------
    def sampling_generator(self) -> Generator:
        """The generator that grids, monitoring, checkpoints' ``ema`` and export use."""
        return self.ema if self.ema is not None else self.generator

    def _sample_inputs(
        self, n: int, generator: torch.Generator | None, paired: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` latents (and labels); ``paired``: the second half repeats the first half's labels,
        for the mode-seeking term's pairs."""
        device = self.dist.device
        z = self._sample_prior(n, generator).to(device)
        if not self.model_cfg.conditional:
            return z, None
        classes = self.model_cfg.num_classes
        if not paired:
            return z, torch.randint(0, classes, (n,), generator=generator).to(device)
        half = torch.randint(0, classes, (n // 2,), generator=generator)
        odd = torch.randint(0, classes, (n % 2,), generator=generator)
        return z, torch.cat([half, half, odd]).to(device)

    def refresh_ema_statistics(self) -> None:
        """Give the averaged weights batch-norm statistics of their own (seeded by epoch, so a
        resumed run computes the same ones)."""
        if self.ema is None:
            return
        noise = torch.Generator().manual_seed(self.cfg.seed * 100_003 + self.epoch)
        recompute_batchnorm_statistics(
            self.ema, lambda: self._sample_inputs(BN_RECOMPUTE_BATCH, noise)
        )

    @torch.no_grad()
    def pixel_diversity(self) -> Diversity:
        """Within-class pixel diversity of the sampling path against the test split: per class
        for a conditional model, over all images (one "class") otherwise."""
        g = self.sampling_generator()
        was_training = g.training
        g.eval()
        test = self.splits.test
        classes = self.model_cfg.num_classes if self.model_cfg.conditional else 1
        real_labels = test.labels.numpy() if classes > 1 else np.zeros(len(test), dtype=np.int64)
        real_index = np.concatenate(
            [np.flatnonzero(real_labels == k)[:DIVERSITY_PER_CLASS] for k in range(classes)]
        )
        labels = np.repeat(np.arange(classes), DIVERSITY_PER_CLASS)
        z = torch.from_numpy(
            latents_from_seeds(range(len(labels)), self.model_cfg.latent_dim, self.model_cfg.prior)
        )
        device = self.dist.device
        fake_labels = torch.from_numpy(labels).to(device) if self.model_cfg.conditional else None
        fake = g(z.to(device), fake_labels).cpu()
        g.train(was_training)
        return within_class_diversity(
            fake,
            labels,
            test.scaled(torch.from_numpy(real_index)),
            real_labels[real_index],
            classes,
        )

    @torch.no_grad()
    def save_grid(self) -> Path:
        """Fixed latent points → grid PNG; one row per class for conditional models."""
        g = self.sampling_generator()
        was_training = g.training
        g.eval()
        if self.model_cfg.conditional:
            columns, rows = 8, self.model_cfg.num_classes
            z = torch.from_numpy(
                latents_from_seeds(range(columns), self.model_cfg.latent_dim, self.model_cfg.prior)
            )
            z = z.repeat(rows, 1)
            labels = torch.arange(rows).repeat_interleave(columns).to(self.dist.device)
        else:
            columns = 4
            z = torch.from_numpy(
                latents_from_seeds(
                    range(GRID_SEEDS), self.model_cfg.latent_dim, self.model_cfg.prior
                )
            )
            labels = None
        images = g(z.to(self.dist.device), labels)
        g.train(was_training)
        path = self.run_dir / "grids" / f"epoch_{self.epoch:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image_grid(images, columns).save(path)
        return path

    @torch.no_grad()
    def weak_ic_error(self) -> float:
        g = self.sampling_generator()
        was_training = g.training
        g.eval()
        real = self.splits.test.scaled(slice(0, WEAK_IC.max_per_side))
        n = len(real)
        with torch.random.fork_rng():
            torch.manual_seed(self.cfg.seed + self.epoch)
            z = self._sample_prior(n, None).to(self.dist.device)
            labels = self.splits.test.labels[:n] if self.model_cfg.conditional else None
            fake = g(z, labels if labels is None else labels.to(self.dist.device)).cpu()
        g.train(was_training)
        with torch.enable_grad():
            return independent_classifier_test(
                real, fake, WEAK_IC, seed=self.epoch, device=self.dist.device
            ).error

    # -- training ----------------------------------------------------------------------------
    def _sample_prior(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        shape = (n, self.model_cfg.latent_dim)
        if self.model_cfg.prior.value == "uniform":
            return torch.rand(shape, generator=generator) * 2.0 - 1.0
        return torch.randn(shape, generator=generator)

    def train_epoch(self) -> dict[str, float]:
        g, d, cfg, device = self.train_g, self.train_d, self.cfg, self.dist.device
        g.train()
        d.train()
        data = self.splits.train
        # Summed on the device and read once an epoch: a read per step would make the CPU wait
        # for the GPU at every step.
        totals = torch.zeros(4, dtype=torch.float64, device=device)
        steps = seen = 0
        started = time.perf_counter()
        noise = self.dist.noise_generator(self.rng, cfg.seed, self.epoch)
        mode_seeking = cfg.mode_seeking_at(self.epoch)
        batches = _batches(len(data), cfg.batch_size, self.rng, self.dist.shard)
        bar = tqdm(
            batches,
            total=(len(data) // self.dist.world_size + cfg.batch_size - 1) // cfg.batch_size,
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and self.dist.is_main),
            mininterval=1.0,
            leave=False,
        )
        for index in bar:
            real = data.scaled(index).to(device)
            labels = data.labels[index].to(device) if self.model_cfg.conditional else None
            n = len(index)
            z, fake_labels = self._sample_inputs(n, noise, paired=mode_seeking > 0)
            fake = g(z, fake_labels)

            self.opt_d.zero_grad(set_to_none=True)
            real_logits = d(real, labels)
            fake_logits = d(fake.detach(), fake_labels)
            d_loss = discriminator_loss(cfg.loss, real_logits, fake_logits, cfg.real_target)
            d_loss.backward()
            self.opt_d.step()

            self.opt_g.zero_grad(set_to_none=True)
            g_loss = generator_loss(cfg.loss, d(fake, fake_labels))
            if mode_seeking > 0:
                (g_loss + mode_seeking * mode_seeking_loss(fake, z)).backward()
            else:
                g_loss.backward()
            self.opt_g.step()
            if self.ema is not None:
                update_ema(self.ema, self.generator, ema_decay_at(self.ema_steps, cfg.ema_decay))
                self.ema_steps += 1

            with torch.no_grad():
                totals += torch.stack(
                    [
                        d_loss,
                        g_loss,
                        torch.sigmoid(real_logits).mean(),
                        torch.sigmoid(fake_logits).mean(),
                    ]
                ).double()
            steps += 1
            seen += n
            if not bar.disable and steps % 50 == 0:
                bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}", refresh=False)
        bar.close()
        means = (totals / max(steps, 1)).tolist()
        seconds = time.perf_counter() - started
        row = self.dist.mean(
            dict(zip(("d_loss", "g_loss", "d_real", "d_fake"), means, strict=True))
        )
        (seen,) = self.dist.sum([seen])  # images/s of the whole group
        row.update(seconds=seconds, images_per_s=seen / seconds if seconds else 0.0)
        return row

    def _monitor_epoch(self, row: dict[str, Any], lr: float) -> bool:
        """Rank 0's end of an epoch: diversity, the weak IC, history, grid, balance and the log
        line; True when a class has stayed collapsed for ``stop_on_collapse`` epochs."""
        row["epoch"] = self.epoch
        self.refresh_ema_statistics()
        diversity = self.pixel_diversity()
        row["diversity_min"], row["diversity_mean"] = diversity.minimum, diversity.mean
        self.metrics["pixel_diversity_min"] = diversity.minimum
        worst = min(diversity.per_class, key=lambda k: diversity.per_class[k] or 0.0)
        collapsed = self.collapse.update(self.epoch, diversity.minimum, worst)
        if self.cfg.weak_ic_every and self.epoch % self.cfg.weak_ic_every == 0:
            row["weak_ic_error"] = self.weak_ic_error()
            self.metrics["weak_ic_error"] = row["weak_ic_error"]
        self.history.append(row)
        self.save_grid()
        self.balance.update(self.epoch, row["d_loss"], row["g_loss"])
        log.info(
            "epoch %d: D %.3f G %.3f D(x) %.2f D(G(z)) %.2f, diversity min %.2f mean %.2f, "
            "%.0f img/s%s%s",
            self.epoch, row["d_loss"], row["g_loss"], row["d_real"], row["d_fake"],
            row["diversity_min"], row["diversity_mean"], row["images_per_s"],
            f", weak IC error {row['weak_ic_error']:.1%}" if "weak_ic_error" in row else "",
            f", lr {lr:.2e}" if lr != self.cfg.lr else "",
        )  # fmt: skip
        return collapsed

    def fit(self, resume: str | Path | None = None) -> Path:
        if resume:
            self.resume(resume)
        log.info(
            "training %s%s (G %d, D %d parameters) on %s: %d images, epochs %d→%d, device %s",
            self.model_cfg.family.value,
            " conditional" if self.model_cfg.conditional else "",
            count_parameters(self.generator),
            count_parameters(self.discriminator),
            self.splits.train.name,
            len(self.splits.train),
            self.epoch,
            self.cfg.epochs,
            self.dist.device,
        )
        last = None
        while self.epoch < self.cfg.epochs:
            lr = self.learning_rate(self.epoch)
            self._set_lr(lr, self.opt_g, self.opt_d)
            row = self.train_epoch()
            self.epoch += 1
            collapsed = False
            if self.dist.is_main:  # rank 0 alone monitors and writes
                collapsed = self._monitor_epoch(row, lr)
                scheduled = self.epoch % self.cfg.checkpoint_every == 0
                if collapsed or scheduled or self.epoch == self.cfg.epochs:
                    last = self.save()
            if self.cfg.stop_on_collapse and self.dist.sum([float(collapsed)])[0]:
                raise TrainingStopped(
                    f"stopped after epoch {self.epoch}: a class's within-class pixel diversity "
                    f"stayed below {self.cfg.diversity_warning} of real for "
                    f"{self.cfg.stop_on_collapse} epochs in a row (the generator draws it as one "
                    f"picture; the warnings above name it, grids/ shows it). Its checkpoint: "
                    f"{self.run_dir / 'checkpoints' / 'last.pt'}; --resume it with "
                    "--stop-on-collapse 0 to train on regardless"
                )
        return self._last_checkpoint(last)


class ClassifierTrainer(_Trainer):
    """Trains the class model that ClassMap and evaluation use (cross-entropy, Adam 1e-3, the
    rate falling from ``lr_decay_start`` when set; shifted and flipped images with ``augment``)."""

    kind = "classifier"
    history_fields = CLASSIFIER_FIELDS

    def __init__(
        self, model: ModelConfig, data: DataConfig, train: TrainConfig, splits: DataSplits
    ):
        super().__init__(model, data, train, splits)
        self.model = build_classifier(self.model_cfg)
        self.train_model = self.dist.wrap(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.base_lr)

    @property
    def base_lr(self) -> float:
        return CLASSIFIER_LR

    def _states(self) -> dict[str, Any]:
        return {"classifier": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_states(self, raw: dict[str, Any]) -> None:
        self.model.load_state_dict(raw["classifier"])
        self.optimizer.load_state_dict(raw["optimizer"])

    @torch.no_grad()
    def accuracy(self, split) -> float:
        self.model.eval()
        correct = 0
        for start in range(0, len(split), 1024):
            logits = self.model(split.scaled(slice(start, start + 1024)).to(self.dist.device))
            correct += int((logits.argmax(1).cpu() == split.labels[start : start + 1024]).sum())
        return correct / max(len(split), 1)

    def fit(self, resume: str | Path | None = None) -> Path:
        if resume:
            self.resume(resume)
        data = self.splits.train
        last = None
        device, batch_size = self.dist.device, self.cfg.batch_size
        while self.epoch < self.cfg.epochs:
            self._set_lr(self.learning_rate(self.epoch), self.optimizer)
            self.model.train()
            started = time.perf_counter()
            totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, hits
            seen = 0
            for index in tqdm(
                _batches(len(data), batch_size, self.rng, self.dist.shard),
                total=(len(data) // self.dist.world_size + batch_size - 1) // batch_size,
                desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}",
                disable=not (self.cfg.progress and self.dist.is_main),
                leave=False,
            ):
                targets = data.labels[index].to(device)
                images = data.scaled(index)
                if self.cfg.augment:
                    images = shift_and_flip(images, self.rng)
                logits = self.train_model(images.to(device))
                loss = F.cross_entropy(logits, targets)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                with torch.no_grad():  # read once an epoch, not at every step (see GANTrainer)
                    totals += torch.stack(
                        [loss * len(index), (logits.argmax(1) == targets).sum()]
                    ).double()
                seen += len(index)
            total_loss, hits = totals.tolist()
            correct = round(hits)
            seconds = time.perf_counter() - started
            self.epoch += 1
            total_loss, correct, seen = self.dist.sum([total_loss, correct, seen])
            if not self.dist.is_main:  # rank 0 alone evaluates and writes
                continue
            row = {
                "epoch": self.epoch,
                "loss": total_loss / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "test_accuracy": self.accuracy(self.splits.test),
                "seconds": seconds,
                "images_per_s": seen / seconds if seconds else 0.0,
            }
            self.metrics["test_accuracy"] = row["test_accuracy"]
            self.history.append(row)
            log.info(
                "epoch %d: loss %.4f, train accuracy %.2f%%, test accuracy %.2f%%",
                self.epoch, row["loss"], 100 * row["train_accuracy"], 100 * row["test_accuracy"],
            )  # fmt: skip
            if self.epoch % self.cfg.checkpoint_every == 0 or self.epoch == self.cfg.epochs:
                last = self.save()
        return self._last_checkpoint(last)
