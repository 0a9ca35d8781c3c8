"""What the batch tests check in every output folder, and the fake client their logic tests use."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganserve.batch import MANIFEST
from ganserve.client import GeneratedImage


def manifest_entries(folder: Path) -> list[dict]:
    """Every line parses: a manifest is never left unreadable, whatever stopped the run."""
    path = folder / MANIFEST
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check_recorded(folder: Path) -> list[dict]:
    """Each entry once, its file present with its sha256: what holds even right after a SIGKILL,
    which can land between a file's rename and its manifest line (the next run removes that file)."""
    entries = manifest_entries(folder)
    files = [e["file"] for e in entries]
    assert len(files) == len(set(files))  # nothing twice
    for entry in entries:
        data = (folder / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]  # nothing corrupt
    return entries


def check_consistent(folder: Path) -> list[dict]:
    """What a run leaves when it ends by itself: every entry recorded rightly (``check_recorded``),
    no file without an entry, no temp file."""
    entries = check_recorded(folder)
    files = [e["file"] for e in entries]
    assert not list(folder.rglob(".partial/*"))  # no temp file left
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*.png")} | {
        str(p.relative_to(folder)) for p in folder.rglob("*.npz")
    }
    assert on_disk == set(files)  # no orphan image
    return entries


def check_lossless(folder: Path, expected_files: int) -> list[dict]:
    entries = check_consistent(folder)
    assert len(entries) == expected_files  # nothing missing
    return entries


class FakeClient:
    """Answers Generate with tiny PNGs, unless ``fail(seeds)`` returns an error to raise."""

    def __init__(self, fail=lambda seeds: None):
        self.fail, self.calls = fail, []

    def generate(self, model, seeds, labels=None, psi=None, timeout_s=None):
        self.calls.append(list(seeds))
        error = self.fail(list(seeds))
        if error is not None:
            raise error
        buffer = io.BytesIO()
        Image.new("L", (4, 4)).save(buffer, format="PNG")
        return [
            GeneratedImage(latent=np.zeros(2, np.float32), seed=s, png=buffer.getvalue())
            for s in seeds
        ]


def batch_command(address: str, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "ganserve.cli", "batch", "--address", address, "--out", str(out),
            "--progress", "0", *flags]  # fmt: skip


def wait_for_lines(path: Path, lines: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= lines:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {lines} lines in {timeout_s} s")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "256k", *options: str):
    """A real small (or read-only) filesystem, so that ENOSPC and EROFS come from the kernel."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                    str(path)], check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
