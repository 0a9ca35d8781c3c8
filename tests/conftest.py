"""Shared fixtures: tiny data sets the tests make themselves (no downloads)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``compress``."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def pattern_images(
    count: int, size: int = 28, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is visible (a bright bar at a class-dependent row), plus labels."""
    rng = np.random.RandomState(seed)
    labels = np.arange(count) % classes
    images = (rng.rand(count, size, size) * 60).astype(np.uint8)
    rows_per_class = size // classes
    for i, label in enumerate(labels):
        top = label * rows_per_class
        images[i, top : top + max(rows_per_class, 2), 4 : size - 4] = 230
    return images, labels.astype(np.uint8)


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """An MNIST-layout folder: 256 train and 64 test images, train gzipped, test plain."""
    folder = tmp_path_factory.mktemp("mnist")
    train_x, train_y = pattern_images(256, seed=1)
    test_x, test_y = pattern_images(64, seed=2)
    write_idx(folder / "train-images-idx3-ubyte", train_x, compress=True)
    write_idx(folder / "train-labels-idx1-ubyte", train_y, compress=True)
    write_idx(folder / "t10k-images-idx3-ubyte", test_x)
    write_idx(folder / "t10k-labels-idx1-ubyte", test_y)
    return folder


@pytest.fixture(scope="session")
def rgb_folder(tmp_path_factory) -> Path:
    """An image folder with two class sub-folders of non-square RGB images."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("landscapes")
    rng = np.random.RandomState(0)
    for name, colour in (("sea", (20, 60, 200)), ("forest", (30, 160, 40))):
        (folder / name).mkdir()
        for i in range(12):
            pixels = np.clip(rng.normal(colour, 25, size=(40, 52, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return folder


TINY = [
    "--width",
    "0.25",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--progress",
    "false",
    "--weak-ic-every",
    "0",
]


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, idx_dir) -> dict[str, Path]:
    """One-epoch checkpoints: conditional generators (label at the input, in the batch norms, in
    both; one with a full-resolution block), a 2-D latent generator and a classifier."""
    from ganserve.cli import main

    root = tmp_path_factory.mktemp("checkpoints")
    conditional_6d = ["--family", "dcgan", "--conditional", "true", "--latent-dim", "6"]
    runs = {
        "cgan": conditional_6d,
        # The label in every batch norm instead of at the input (exported and steered the same way).
        "cgan-cbn": [*conditional_6d, "--g-conditioning", "batchnorm"],
        # Both: joined to z and in every batch norm.
        "cgan-both": [*conditional_6d, "--g-conditioning", "both"],
        # A G block at the image's full resolution before the output conv.
        "cgan-fullres": [*conditional_6d, "--g-full-res-channels", "16"],
        "gen2d": ["--family", "dcgan", "--latent-dim", "2"],
        "classifier": ["--family", "classifier", "--epochs", "2"],
    }
    paths = {}
    for name, flags in runs.items():
        assert (
            main(["train", "--data", str(idx_dir), "--out", str(root / name), *TINY, *flags]) == 0
        )
        paths[name] = root / name / "checkpoints" / "last.pt"
    return paths


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory, tiny_checkpoints) -> Path:
    """A Triton model repository of the tiny models, written by `ganserve export`, with an ensemble."""
    from ganserve.cli import main

    repo = tmp_path_factory.mktemp("model_repository")
    exports = [
        [str(tiny_checkpoints["classifier"]), "--name", "classifier"],
        [str(tiny_checkpoints["cgan"]), "--name", "cgan"],
        [str(tiny_checkpoints["gen2d"]), "--name", "gen2d", "--ensemble-with", "classifier"],
    ]
    for flags in exports:
        assert main(["export", *flags, "--triton-repo", str(repo)]) == 0
    return repo


@pytest.fixture(scope="session")
def local_triton(tiny_repo):
    """The real tritonserver (nvidia-pytriton's, CPU) serving `tiny_repo` on free ports."""
    from ganserve.export.triton_local import LocalTriton

    with LocalTriton(tiny_repo) as triton:
        yield triton


class RunningService:
    """The real gRPC service on its own event loop in a thread; tests talk to it as clients do."""

    def __init__(self, config, backend=None):
        import asyncio
        import threading

        from ganserve.service.server import create_server

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.service = self.call(create_server(config, backend))
        self.address = f"127.0.0.1:{self.service.port}"

    def call(self, coroutine, timeout: float = 120):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.service.metrics_port}/metrics", timeout=10
        ) as r:
            return r.read().decode()

    def stop(self, grace_s: float = 2.0) -> None:
        self.call(self.service.stop(grace_s))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def serve_config(models, **overrides):
    from ganserve.service.config import ServeConfig

    settings = {
        "address": "127.0.0.1:0",
        "models": str(models),
        "metrics_port": 0,
        "http_port": 0,
        **overrides,
    }
    return ServeConfig(**settings)


@pytest.fixture(scope="module")
def service(tiny_repo):
    running = RunningService(serve_config(tiny_repo, max_message_bytes=1 << 20, max_grid=256))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(service):
    import grpc

    from ganserve.v1 import generation_pb2_grpc

    channel = grpc.insecure_channel(service.address)
    yield generation_pb2_grpc.GenerationServiceStub(channel)
    channel.close()


def _openssl(*args, cwd):
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1, and a client certificate."""
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=ganserve test CA", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)  # fmt: skip
    return d
