"""The ``ganserve`` command: one verb per job (train, evaluate, export, serve, …).

Each verb imports its heavy modules only when it runs, so ``ganserve serve`` works without torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable

from ganserve.errors import GanserveError, UsageError
from ganserve.settings import add_dataclass_arguments, dataclass_from_args

Handler = Callable[[argparse.Namespace], int]


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from ganserve.training.config import DataConfig, LaunchConfig, ModelConfig, TrainConfig

    parser = sub.add_parser(
        "train",
        help="train a GAN or the classifier",
        description="Train a GAN (mlp, dcgan, dcgan-rgb; --conditional) or the classifier.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataclass_arguments(parser, ModelConfig, exclude=("channels", "image_size", "num_classes"))
    add_dataclass_arguments(parser, DataConfig)
    add_dataclass_arguments(parser, TrainConfig)
    add_dataclass_arguments(parser, LaunchConfig)
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue exactly from a checkpoint")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from ganserve.training.checkpoint import load_checkpoint
    from ganserve.training.config import DataConfig, Family, LaunchConfig, ModelConfig, TrainConfig
    from ganserve.training.data import load_data
    from ganserve.training.distributed import launch
    from ganserve.training.trainer import ClassifierTrainer, GANTrainer

    nproc = dataclass_from_args(LaunchConfig, args).nproc
    if nproc > 1 and "RANK" not in os.environ:  # not yet under torchrun: start it
        return launch(nproc, args.argv)
    if args.resume:
        # The checkpoint's own configs win; only the epoch target and the run bookkeeping may change.
        saved = load_checkpoint(args.resume)
        model_cfg, data_cfg = saved.model, saved.data
        train_cfg = dataclass_from_args(
            TrainConfig, args, **_saved_train_overrides(saved.train, args)
        )
        _check_trained_epochs_unchanged(saved.train, train_cfg, saved.epoch)
    else:
        model_cfg = dataclass_from_args(ModelConfig, args)
        data_cfg = dataclass_from_args(DataConfig, args)
        train_cfg = dataclass_from_args(TrainConfig, args)
    splits = load_data(data_cfg)
    trainer_cls = ClassifierTrainer if model_cfg.family is Family.CLASSIFIER else GANTrainer
    trainer = trainer_cls(model_cfg, data_cfg, train_cfg, splits)
    path = trainer.fit(resume=args.resume)
    if trainer.dist.is_main:
        print(
            json.dumps(
                {"checkpoint": str(path), "epoch": trainer.epoch, "metrics": trainer.metrics}
            )
        )
    trainer.dist.shutdown()
    return 0


def _saved_train_overrides(saved, args: argparse.Namespace) -> dict:
    """Resume keeps every saved training setting except those that do not change the epochs
    already trained."""
    import dataclasses

    # The epoch target and the learning rate's tail say how a run goes on from here, not how
    # the saved epochs went: a resumed run may be given a longer course or a decay to end on.
    changeable = {"epochs", "lr_decay_start", "out", "checkpoint_every", "progress", "threads",
                  "mode_seeking", "mode_seeking_start", "stop_on_collapse"}  # fmt: skip
    return {
        f.name: getattr(saved, f.name)
        for f in dataclasses.fields(saved)
        if f.name not in changeable or not hasattr(args, f.name)
    }


def _check_trained_epochs_unchanged(saved, changed, epochs_trained: int) -> None:
    """A setting changed on resume must not rewrite the epochs already trained, or the run would
    be neither what its checkpoint says nor what a straight run gives."""
    from ganserve.training.config import TrainConfig

    def rewrites(schedule: Callable[[TrainConfig, int], float]) -> bool:
        return any(schedule(changed, e) != schedule(saved, e) for e in range(epochs_trained))

    if rewrites(TrainConfig.mode_seeking_at):
        raise ValueError(
            f"--mode-seeking-start must not lie before the resumed epoch ({epochs_trained}): the "
            "epochs trained had another mode-seeking weight"
        )
    if rewrites(TrainConfig.lr_factor_at):
        raise ValueError(
            f"--lr-decay-start and --epochs must leave the learning rates of the {epochs_trained} "
            f"epochs trained as they were (saved: decay from epoch {saved.lr_decay_start} of "
            f"{saved.epochs}, 0 = none): start a decay at or after the resumed epoch, or resume "
            "from a checkpoint before the decay began"
        )


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="quality metrics of a checkpoint, as JSON",
        description="Independent-classifier test, classifier-feature Fréchet distance and class "
        "consistency of a GAN checkpoint or of an exported generator (model.onnx: what the service "
        "serves), or a classifier's test accuracy.",
    )
    parser.add_argument("checkpoint", help="checkpoint (.pt) or exported generator (.onnx)")
    parser.add_argument("--classifier", help="classifier checkpoint (needed for FD / consistency)")
    parser.add_argument(
        "--ic", choices=("weak", "strong", "none"), default="strong", help="IC strength"
    )
    parser.add_argument(
        "--ic-repeats",
        type=int,
        default=3,
        help="train the IC this many times (seeds 0, 1, …) and report the mean and each error",
    )
    parser.add_argument("--samples", type=int, default=10000, help="generated images to score")
    parser.add_argument(
        "--weights",
        choices=("auto", "raw", "ema"),
        default="auto",
        help="generator weights (auto: what `ganserve select` chose, else EMA when kept)",
    )
    parser.add_argument(
        "--out",
        help="JSON path (default: CHECKPOINT with .eval.json; for model.onnx, FOLDERS-model.eval.json "
        "in the working directory)",
    )
    parser.add_argument(
        "--bins-figure",
        metavar="PNG",
        help="also draw, one row a class, real images of the bin the generator draws least "
        "often and generated images of the bin it draws most often (needs --classifier)",
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from ganserve.training.evaluate import evaluate

    result = evaluate(
        args.checkpoint,
        args.classifier,
        args.ic,
        args.samples,
        args.out,
        args.weights,
        args.ic_repeats,
        args.bins_figure,
    )
    print(json.dumps(result, indent=2))
    return 0


def _select_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "select",
        help="pick a run's best checkpoint (raw or EMA weights) by measurement",
        description="Score every checkpoint of a GAN run, raw and EMA weights, and keep the lowest "
        "Fréchet ratio among those whose every class keeps --min-diversity of real variety: "
        "writes RUN/selection.json and RUN/checkpoints/selected.pt.",
    )
    parser.add_argument("run", help="run directory (the --out of `ganserve train`)")
    parser.add_argument("--classifier", required=True, help="classifier checkpoint (the judge)")
    parser.add_argument("--samples", type=int, default=5000, help="generated images per candidate")
    parser.add_argument(
        "--min-diversity", type=float, default=0.8, help="within-class diversity every class needs"
    )
    parser.add_argument(
        "--from-epoch", type=int, default=1, help="score the checkpoints from this epoch on"
    )
    parser.set_defaults(handler=_run_select)


def _run_select(args: argparse.Namespace) -> int:
    from ganserve.training.selection import select_checkpoint

    selection = select_checkpoint(
        args.run, args.classifier, args.samples, args.min_diversity, args.from_epoch
    )
    print(json.dumps(selection["selected"], indent=2))
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:
    from ganserve.export.settings import TritonSettings

    parser = sub.add_parser(
        "export",
        help="checkpoint → ONNX (+ Triton model repository)",
        description="Export a checkpoint to ONNX with every named layer as an output, check parity "
        "with PyTorch, and optionally write it into a Triton model repository.",
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--name", required=True, help="model name (Triton and gRPC)")
    parser.add_argument("--out", help="ONNX path (default: NAME.onnx, or inside --triton-repo)")
    parser.add_argument(
        "--triton-repo", help="write NAME/config.pbtxt and NAME/VERSION/model.onnx here"
    )
    parser.add_argument(
        "--fp16", action="store_true", help="also write a half-precision variant (NAME-fp16)"
    )
    parser.add_argument(
        "--ensemble-with",
        metavar="CLASSIFIER",
        help="add a NAME__CLASSIFIER ClassMap ensemble to the repo",
    )
    parser.add_argument(
        "--metrics", help="evaluation JSON for the metadata (default: CHECKPOINT.eval.json)"
    )
    add_dataclass_arguments(parser, TritonSettings)
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    import dataclasses
    import tempfile
    from pathlib import Path

    from ganserve.export.onnx_export import export_onnx, read_description
    from ganserve.export.triton_repo import TritonSettings, write_classmap_ensemble, write_model

    settings = dataclass_from_args(TritonSettings, args)
    with tempfile.TemporaryDirectory() as tmp:
        out = (
            Path(args.out)
            if args.out
            else Path(tmp if args.triton_repo else ".") / f"{args.name}.onnx"
        )
        report = export_onnx(
            args.checkpoint, args.name, out, fp16=args.fp16, metrics_path=args.metrics
        )
        summary = {
            "onnx": str(out),
            "parity_max_abs_diff": report.max_abs_diff,
            "nodes": [report.nodes_before, report.nodes_after],
        }
        if args.triton_repo:
            repo = Path(args.triton_repo)
            summary["triton_model"] = str(write_model(repo, out, report.description, settings))
            if report.fp16_path:
                half = dataclasses.replace(report.description, name=f"{args.name}-fp16")
                summary["triton_fp16_model"] = str(
                    write_model(repo, report.fp16_path, half, settings)
                )
            if args.ensemble_with:
                classifier = read_description(
                    repo / args.ensemble_with / str(settings.version) / "model.onnx"
                )
                ensemble = write_classmap_ensemble(repo, report.description, classifier, settings)
                summary["triton_ensemble"] = str(ensemble)
        if report.fp16_path:
            summary["fp16_parity_max_abs_diff"] = report.fp16_max_abs_diff
    print(json.dumps(summary, indent=2))
    return 0


def _triton_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "triton",
        help="run a real tritonserver (CPU) on a model repository",
        description="Start the tritonserver bundled with nvidia-pytriton, serving the repository's "
        "ONNX models through ONNX Runtime under the same names, inputs and outputs.",
    )
    parser.add_argument(
        "--repository", default="deploy/model_repository", help="Triton model repository"
    )
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime threads per model")
    parser.set_defaults(handler=_run_triton)


def _run_triton(args: argparse.Namespace) -> int:
    import signal
    import time
    from pathlib import Path

    from ganserve.export.triton_local import LocalTriton

    triton = LocalTriton(
        Path(args.repository),
        args.grpc_port,
        args.http_port,
        args.metrics_port,
        ort_threads=args.ort_threads,
    )
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    with triton:
        print(
            f"tritonserver: gRPC {triton.grpc_url}, HTTP {triton.http_url}, models {', '.join(triton.models)}"
        )
        try:
            while not stop and triton.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    from ganserve.service.config import ServeConfig

    parser = sub.add_parser(
        "serve",
        help="run the gRPC generation service",
        description="Serve Generate, Interpolate, ClassMap and LayerActivations over gRPC, on the "
        "embedded ONNX Runtime (default) or a Triton server, with Prometheus metrics.",
    )
    add_dataclass_arguments(parser, ServeConfig)
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from ganserve.service.config import ServeConfig
    from ganserve.service.workers import run

    run(dataclass_from_args(ServeConfig, args))
    return 0


def _batch_parser(sub: argparse._SubParsersAction) -> None:
    from ganserve.batch.errors import EXIT_CODES
    from ganserve.batch.settings import BatchSettings

    parser = sub.add_parser(
        "batch",
        help="generate large image sets through the service (resumable, shardable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate PNG files (or NPZ files) plus a JSONL manifest through a running\n"
        "service. Killing the job and running the same command again completes it with no\n"
        "missing, duplicate or corrupt file. With --shard-index/--shard-count (or in a Kubernetes\n"
        "Indexed Job) each machine makes its share in its own subfolder, and\n"
        "`ganserve batch merge --out DIR` checks and joins them.",
        epilog="exit codes:\n"
        + "\n".join(f"  {code:>3}  {text}" for code, text in EXIT_CODES.items()),
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=("run", "merge"),
        default="run",
        help="run (default): make this shard's images; merge: check the shards in --out and join "
        "their manifests into --out/manifest.jsonl",
    )
    parser.add_argument(
        "--job",
        help="YAML/JSON job spec (items of model, seeds, classes); its settings override the flags",
    )
    parser.add_argument("--model", help="model to generate from")
    parser.add_argument("--seeds", default="0-99", help="seed ranges, e.g. 0-99999 or 0-9,100-109")
    parser.add_argument(
        "--classes",
        default="",
        help="conditional models: class ranges, e.g. 0-9 (each seed in each)",
    )
    add_dataclass_arguments(parser, BatchSettings)
    parser.set_defaults(handler=_run_batch)


def _run_batch(args: argparse.Namespace) -> int:
    import signal
    from pathlib import Path

    from ganserve.batch import (
        BatchJob,
        BatchSettings,
        JobItem,
        JobSpec,
        load_job,
        merge,
        parse_classes,
    )
    from ganserve.client import Client
    from ganserve.latents import parse_seed_ranges

    if args.action == "merge":
        print(json.dumps(merge(Path(dataclass_from_args(BatchSettings, args).out)), indent=2))
        return 0
    if args.job:
        items, overrides = load_job(Path(args.job))
    elif args.model:
        seeds = tuple(parse_seed_ranges(args.seeds))
        items, overrides = [JobItem(args.model, seeds, parse_classes(args.classes))], {}
    else:
        raise UsageError("give --model (and --seeds) or --job")
    settings = dataclass_from_args(BatchSettings, args, **overrides)
    with Client(
        settings.address, timeout_s=settings.timeout_s, token=settings.token or None
    ) as client:
        job = BatchJob(JobSpec(items, settings), client)
        # Kubernetes stops a pod with SIGTERM: finish the calls in flight, record them, then exit.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        report = job.run()
    print(json.dumps(report.as_dict(), indent=2))
    if report.error is not None:
        print(f"ganserve batch: error: {report.error}", file=sys.stderr)
    return report.exit_code


def _loadtest_parser(sub: argparse._SubParsersAction) -> None:
    from ganserve.loadtest import RPCS

    parser = sub.add_parser(
        "loadtest",
        help="throughput and latency of a running service",
        description="Closed-loop concurrency sweep (default) or open-loop fixed rate (--rate) against one "
        "RPC; writes JSON and a PNG plot of throughput and latency.",
    )
    parser.add_argument("--address", default="localhost:50051")
    parser.add_argument("--model", default="fmnist-cgan")
    parser.add_argument("--rpc", choices=RPCS, default="generate")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="images per Generate, frames per Interpolate"
    )
    parser.add_argument("--resolution", type=int, default=32, help="ClassMap cells per side")
    parser.add_argument(
        "--label", type=int, default=None, help="class for conditional models (default 0)"
    )
    parser.add_argument("--psi", type=float, default=None, help="truncation in (0, 1]")
    parser.add_argument(
        "--edit-channels",
        type=int,
        default=0,
        help="switch off this many channels of the last editable layer (a different set per request)",
    )
    parser.add_argument(
        "--concurrency", default="1,8,32,64", help="closed loop: worker counts to sweep"
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop: requests per second (0: closed loop)"
    )
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per level")
    parser.add_argument(
        "--warmup-s", type=float, default=1.0, help="unmeasured seconds before each level"
    )
    parser.add_argument("--timeout-s", type=float, default=30.0, help="deadline per request")
    parser.add_argument("--token", default=None, help="bearer token")
    parser.add_argument("--out", default="loadtest-results", help="folder for the JSON and PNG")
    parser.set_defaults(handler=_run_loadtest)


def _run_loadtest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ganserve.latents import parse_seed_ranges
    from ganserve.loadtest import LoadSpec, run_loadtest

    spec = LoadSpec(
        address=args.address,
        model=args.model,
        rpc=args.rpc,
        batch_size=args.batch_size,
        resolution=args.resolution,
        label=args.label,
        psi=args.psi,
        edit_channels=args.edit_channels,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        concurrency=tuple(parse_seed_ranges(args.concurrency)),
        rate=args.rate,
        timeout_s=args.timeout_s,
        token=args.token,
    )
    report = run_loadtest(spec, Path(args.out))
    print(json.dumps(report, indent=2))
    return 0


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _train_parser,
    _evaluate_parser,
    _select_parser,
    _export_parser,
    _triton_parser,
    _serve_parser,
    _batch_parser,
    _loadtest_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganserve", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        try:
            add(sub)
        except ImportError as exc:
            _add_unavailable(sub, add, exc)
    return parser


def _add_unavailable(
    sub: argparse._SubParsersAction,
    add: Callable[[argparse._SubParsersAction], None],
    exc: ImportError,
) -> None:
    """A command whose packages are missing here (``loadtest`` on a training machine without
    grpcio) still shows in the help and says what it needs, and the other commands work."""
    name = add.__name__.removeprefix("_").removesuffix("_parser")
    reason = f"needs the {exc.name or 'missing'} package, not installed here ({exc})"
    # Whatever follows is its own (no prefix character), so any flags reach the message below.
    parser = sub.add_parser(name, help=f"(unavailable: {reason})", prefix_chars="\0")
    parser.add_argument("arguments", nargs="*")

    def unavailable(_args: argparse.Namespace) -> int:
        raise UsageError(f"{reason}; install ganserve with its dependencies")

    parser.set_defaults(handler=unavailable)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` runs it again
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except GanserveError as exc:
        # Data and checkpoint problems are the user's to fix: one clear line, no traceback.
        print(f"ganserve {args.command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
