"""The ``ganserve`` command: one verb per job (train, evaluate, export, serve, …).

Each verb imports its heavy modules only when it runs, so ``ganserve serve`` works without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable

from ganserve.errors import GanserveError
from ganserve.settings import add_dataclass_arguments, dataclass_from_args

Handler = Callable[[argparse.Namespace], int]


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from ganserve.training.config import DataConfig, ModelConfig, TrainConfig

    parser = sub.add_parser(
        "train",
        help="train a GAN or the classifier",
        description="Train a GAN (mlp, dcgan, dcgan-rgb; --conditional) or the classifier.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(parser, ModelConfig, exclude=("channels", "image_size", "num_classes"))
    add_dataclass_arguments(parser, DataConfig)
    add_dataclass_arguments(parser, TrainConfig)
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue exactly from a checkpoint")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ganserve.training.checkpoint import load_checkpoint
    from ganserve.training.config import DataConfig, Family, ModelConfig, TrainConfig
    from ganserve.training.data import load_data
    from ganserve.training.trainer import ClassifierTrainer, GANTrainer

    if args.resume:
        # The checkpoint's own configs win; only the epoch target and the run bookkeeping may change.
        saved = load_checkpoint(args.resume)
        model_cfg, data_cfg = saved.model, saved.data
        train_cfg = dataclass_from_args(
            TrainConfig, args, **_saved_train_overrides(saved.train, args)
        )
    else:
        model_cfg = dataclass_from_args(ModelConfig, args)
        data_cfg = dataclass_from_args(DataConfig, args)
        train_cfg = dataclass_from_args(TrainConfig, args)
    splits = load_data(data_cfg)
    trainer_cls = ClassifierTrainer if model_cfg.family is Family.CLASSIFIER else GANTrainer
    trainer = trainer_cls(model_cfg, data_cfg, train_cfg, splits)
    path = trainer.fit(resume=args.resume)
    print(json.dumps({"checkpoint": str(path), "epoch": trainer.epoch, "metrics": trainer.metrics}))
    return 0


def _saved_train_overrides(saved, args: argparse.Namespace) -> dict:
    """Resume keeps every saved training setting except those that do not change the result."""
    import dataclasses

    changeable = {"epochs", "out", "checkpoint_every", "progress", "threads"}
    return {
        f.name: getattr(saved, f.name)
        for f in dataclasses.fields(saved)
        if f.name not in changeable or not hasattr(args, f.name)
    }


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="quality metrics of a checkpoint, as JSON",
        description="Independent-classifier test, classifier-feature Fréchet distance and class "
        "consistency of a GAN checkpoint (or a classifier's test accuracy).",
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--classifier", help="classifier checkpoint (needed for FD / consistency)")
    parser.add_argument("--ic", choices=("weak", "strong"), default="strong", help="IC strength")
    parser.add_argument("--samples", type=int, default=10000, help="generated images to score")
    parser.add_argument("--out", help="JSON path (default: CHECKPOINT with .eval.json)")
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from ganserve.training.evaluate import evaluate

    result = evaluate(args.checkpoint, args.classifier, args.ic, args.samples, args.out)
    print(json.dumps(result, indent=2))
    return 0


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_train_parser, _evaluate_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganserve", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except GanserveError as exc:
        # Data and checkpoint problems are the user's to fix: one clear line, no traceback.
        print(f"ganserve {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
