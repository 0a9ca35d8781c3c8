"""Typed configuration for models, data and training runs; every checkpoint carries these."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ganserve.latents import Prior


class Family(str, Enum):
    """Which architecture of the studies to build."""

    MLP = "mlp"  # study B's MLP GAN
    DCGAN = "dcgan"  # study A's 28×28 DCGAN
    DCGAN_RGB = "dcgan-rgb"  # 32/64/128 px RGB DCGAN (landscape / cat-face experiments)
    CLASSIFIER = "classifier"  # the class model used by ClassMap and evaluation


class ClassifierArch(str, Enum):
    """Which class model to build (the classifier family only): ``small`` has one conv per block,
    32 and 64 channels (the studies' size, 91.5% on Fashion-MNIST); ``vgg`` two batch-normalised
    convs per block (94.3%: a judge sharper than the models it scores)."""

    SMALL = "small"
    VGG = "vgg"


class DConditioning(str, Enum):
    """How a conditional discriminator sees the class label."""

    CONCAT = "concat"  # one-hot joined to the input: a constant plane per class (conv) or flat
    PROJECTION = "projection"  # a class embedding · D's last features (Miyato & Koyama)


class GConditioning(str, Enum):
    """How a conditional generator takes the class label."""

    INPUT = "input"  # the one-hot code joined to z, read by the first layer only
    BATCHNORM = "batchnorm"  # every batch norm's gain and shift chosen by the class; z alone in
    BOTH = "both"  # joined to z and in every batch norm: z = 0 still gives each class its input


class Loss(str, Enum):
    NONSATURATING = "nonsaturating"
    HINGE = "hinge"


@dataclass
class ModelConfig:
    family: Family = field(default=Family.DCGAN, metadata={"help": "architecture"})
    conditional: bool = field(
        default=False, metadata={"help": "class-conditional GAN (label joined to z and D input)"}
    )
    latent_dim: int = field(default=100, metadata={"help": "size of the latent vector z"})
    prior: Prior = field(default=Prior.UNIFORM, metadata={"help": "latent prior"})
    activation: str = field(
        default="leaky_relu",
        metadata={"help": "generator hidden activation: relu, leaky_relu, prelu, elu, selu"},
    )
    activation_slope: float | None = field(
        default=None,
        metadata={
            "help": "leaky_relu/prelu slope in G (none = family default: dcgan 0.3, else 0.2)"
        },
    )
    d_activation_slope: float | None = field(
        default=None, metadata={"help": "LeakyReLU slope in D (none = family default)"}
    )
    width: float = field(
        default=1.0, metadata={"help": "width multiplier for channels/units (1.0 = the studies')"}
    )
    d_width: float | None = field(
        default=None,
        metadata={
            "help": "width multiplier for D alone (none = --width); D is cheap, a weak D starves G"
        },
    )
    dropout: float = field(default=0.3, metadata={"help": "discriminator (and classifier) dropout"})
    g_conditioning: GConditioning = field(
        default=GConditioning.INPUT,
        metadata={
            "help": "conditional G: input (one-hot joined to z), batchnorm (class-conditional "
            "batch norm in every layer, z alone at the input; Miyato & Koyama's G, BigGAN's) or "
            "both (joined to z and in every batch norm: each class keeps its own input at the "
            "latent centre, where truncation leads)"
        },
    )
    d_conditioning: DConditioning = field(
        default=DConditioning.CONCAT,
        metadata={
            "help": "conditional D: concat (label planes joined to the image) or projection "
            "(class embedding · last features, added to the logit; Miyato & Koyama 2018)"
        },
    )
    d_spectral_norm: bool = field(
        default=False,
        metadata={
            "help": "spectral normalisation of every D layer (Miyato et al. 2018, the projection "
            "D's pairing in Miyato & Koyama): D's Lipschitz constant held near 1"
        },
    )
    d_minibatch_std: int = field(
        default=0,
        metadata={
            "help": "conv D: group size of a minibatch standard deviation feature map before the "
            "logit (Karras et al. 2018; 0 = off, 4 = theirs): D sees each group's variety"
        },
    )
    g_full_res_channels: int = field(
        default=0,
        metadata={
            "help": "dcgan: feature maps (scaled by --width) of one more G block, at the image's "
            "full resolution, from which a 5×5 conv draws the image (0 = the studies' G: its last "
            "transposed conv draws the 28×28 image straight from 14×14 features)"
        },
    )
    classifier_arch: ClassifierArch = field(
        default=ClassifierArch.SMALL, metadata={"help": "classifier family: small or vgg"}
    )
    # Filled from the data set, not from flags.
    channels: int = field(default=1, metadata={"help": "image channels (set from the data)"})
    image_size: int = field(default=28, metadata={"help": "image side in pixels (set from data)"})
    num_classes: int = field(default=10, metadata={"help": "classes (set from the data)"})


@dataclass
class DataConfig:
    data: str = field(
        default="fashion-mnist",
        metadata={
            "help": "fashion-mnist (Debian path), digits (sklearn), an IDX folder (MNIST layout), "
            "or an image folder"
        },
    )
    image_size: int = field(
        default=0, metadata={"help": "resize image folders/digits to this side (0 = natural)"}
    )
    subset: int = field(default=0, metadata={"help": "use only the first N training images"})
    held_out_fraction: float = field(
        default=0.1, metadata={"help": "test split for sources without one (folders, digits)"}
    )


@dataclass
class TrainConfig:
    epochs: int = field(default=30, metadata={"help": "epochs to train (total, also on resume)"})
    batch_size: int = field(default=128, metadata={"help": "batch size"})
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate (both networks)"})
    lr_decay_start: int = field(
        default=0,
        metadata={
            "help": "from this epoch on the learning rates fall linearly, to lr/N in the last "
            "of the N epochs left (0 = constant); may be set on --resume where it leaves the "
            "rates of the epochs trained as they were"
        },
    )
    augment: bool = field(
        default=False,
        metadata={
            "help": "classifier: train on random shifts of up to 2 px and horizontal flips "
            "(GANs: refused)"
        },
    )
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    loss: Loss = field(default=Loss.NONSATURATING, metadata={"help": "GAN loss"})
    real_target: float = field(
        default=1.0,
        metadata={"help": "D's target for real images (0.9 = one-sided label smoothing; BCE only)"},
    )
    ema_decay: float = field(
        default=0.0, metadata={"help": "EMA decay for G weights (0 = off, e.g. 0.999)"}
    )
    mode_seeking: float = field(
        default=0.0,
        metadata={
            "help": "weight of the mode-seeking term in G's loss (Mao et al. 2019, MSGAN): pairs of "
            "fakes with the same label are pushed apart in proportion to their latents' distance "
            "(0 = off; the paper uses 1; history's g_loss stays the adversarial term alone)"
        },
    )
    mode_seeking_start: int = field(
        default=0,
        metadata={
            "help": "the mode-seeking term applies from this epoch on; may be set on --resume "
            "(to an epoch not yet trained)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed for weights, shuffling and noise"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)"})
    out: str = field(default="runs/gan", metadata={"help": "run directory"})
    checkpoint_every: int = field(default=5, metadata={"help": "save a checkpoint every N epochs"})
    weak_ic_every: int = field(
        default=5, metadata={"help": "weak independent-classifier test every N epochs (0 = off)"}
    )
    healthy_d_loss: tuple[float, float] = field(
        default=(0.3, 0.9),
        metadata={"help": "healthy band of the mean D loss per term (study B: 0.5–0.6)"},
    )
    balance_patience: int = field(
        default=5, metadata={"help": "warn after this many epochs outside the healthy band"}
    )
    diversity_warning: float = field(
        default=0.5,
        metadata={
            "help": "warn when a class's within-class pixel diversity (generated ÷ real) falls "
            "below this (collapse onto the label)"
        },
    )
    stop_on_collapse: int = field(
        default=0,
        metadata={
            "help": "stop the run (checkpoint kept, exit 3) once a class's pixel diversity has "
            "stayed below --diversity-warning for this many epochs in a row (0 = never); a healthy "
            "run's early dip lasts up to 5 epochs, a collapsed class does not come back"
        },
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def lr_factor_at(self, epoch: int) -> float:
        """The share of the base learning rate while training epoch ``epoch + 1``: 1, then from
        ``lr_decay_start`` a straight line down to 1/N in the last of those N epochs (the last
        steps settle the weights, as in pix2pix's schedule). A function of the epoch alone, so a
        resumed run takes the same steps."""
        start, end = self.lr_decay_start, self.epochs
        if not start or epoch < start:
            return 1.0
        return (end - epoch) / (end - start)

    def mode_seeking_at(self, epoch: int) -> float:
        """The mode-seeking term's weight while training epoch ``epoch + 1``: a function of the
        epoch alone, so switching it on at a resume gives what a straight run gives."""
        return self.mode_seeking if epoch >= self.mode_seeking_start else 0.0


@dataclass
class LaunchConfig:
    """How many processes train (not saved: a checkpoint resumes on any number of them)."""

    nproc: int = field(
        default=1,
        metadata={
            "help": "training processes on this machine (DistributedDataParallel under torchrun: "
            "gloo on CPU, NCCL with one GPU each); --batch-size is per process"
        },
    )
