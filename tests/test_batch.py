"""`ganserve batch` against the real service: complete, resumable after SIGKILL, lossless."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ganserve.batch import MANIFEST, BatchJob, JobItem, JobSpec, Manifest
from ganserve.cli import main
from ganserve.client import UnavailableError
from ganserve.latents import latent_from_seed


def manifest_entries(out):
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def check_lossless(out, expected_files: int):
    entries = manifest_entries(out)
    files = [e["file"] for e in entries]
    assert len(files) == len(set(files)) == expected_files  # nothing missing, nothing twice
    for entry in entries:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]  # nothing corrupt
    assert not list(out.rglob(".*.tmp-*"))
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.png")} | {
        str(p.relative_to(out)) for p in out.rglob("*.npz")
    }
    assert on_disk == set(files)
    return entries


def test_png_job_writes_files_and_manifest_and_a_rerun_skips_everything(service, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["batch", "--address", service.address, "--model", "cgan", "--seeds", "0-19", "--classes", "0-1",
            "--out", str(out), "--progress", "0", "--request-size", "7"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["generated"] == 40 and report["failed"] == 0 and report["skipped"] == 0
    entries = check_lossless(out, 40)
    first = next(e for e in entries if e["seed"] == 3 and e["class"] == 1)
    assert first["file"] == "cgan/class-001/0000000003.png" and first["model"] == "cgan"
    np.testing.assert_allclose(first["latent"], latent_from_seed(3, 6), atol=1e-7)
    assert Image.open(out / first["file"]).size == (28, 28)
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["generated"] == 0 and again["skipped"] == 40


def test_npz_shards_and_a_job_spec_mixing_models(service, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(
        f"out: {tmp_path / 'shards'}\nformat: npz\nshard_size: 10\n"
        "items:\n  - {model: gen2d, seeds: 0-24}\n  - {model: cgan, seeds: 5-9, classes: [3]}\n"
    )
    assert main(["batch", "--address", service.address, "--job", str(job), "--progress", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == 30
    entries = check_lossless(tmp_path / "shards", 4)
    shard = np.load(tmp_path / "shards" / entries[0]["file"])
    assert shard["images"].shape[1:] == (28, 28) and len(shard["seeds"]) == len(shard["latents"])
    cgan = next(e for e in entries if e["model"] == "cgan")
    assert list(np.load(tmp_path / "shards" / cgan["file"])["labels"]) == [3] * 5


def test_sigkill_then_the_same_command_completes_losslessly(service, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "ganserve.cli", "batch", "--address", service.address, "--model", "gen2d",
               "--seeds", "0-2999", "--out", str(out), "--concurrency", "2", "--request-size", "4", "--progress", "0"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        path = out / MANIFEST
        if path.exists() and path.read_bytes().count(b"\n") >= 200:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = (out / MANIFEST).read_bytes().count(b"\n")
    assert 200 <= partial < 3000  # killed in the middle
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["skipped"] >= partial - 0 and report["generated"] + report["skipped"] == 3000
    check_lossless(out, 3000)


def test_a_torn_manifest_line_is_cut_and_its_unit_redone(tmp_path):
    path = tmp_path / MANIFEST
    path.write_bytes(b'{"file": "a.png"}\n{"file": "b.p')
    manifest = Manifest(path)
    assert manifest.done == {"a.png"}
    manifest.append([{"file": "b.png"}])
    manifest.close()
    assert [json.loads(x)["file"] for x in path.read_text().splitlines()] == ["a.png", "b.png"]


class FlakyClient:
    """Fails the first calls the way an overloaded or restarting service does."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def generate(self, model, seeds, labels=None):
        self.calls += 1
        if self.calls <= self.failures:
            raise UnavailableError("UNAVAILABLE: restarting")
        from ganserve.client import GeneratedImage

        buffer = io.BytesIO()
        Image.new("L", (4, 4)).save(buffer, format="PNG")
        return [
            GeneratedImage(latent=np.zeros(2, np.float32), seed=s, png=buffer.getvalue())
            for s in seeds
        ]


def test_transient_errors_are_retried_and_permanent_ones_counted(tmp_path):
    spec = JobSpec(
        items=[JobItem("m", tuple(range(6)))],
        out=tmp_path / "flaky",
        request_size=3,
        concurrency=1,
        retries=3,
    )
    report = BatchJob(spec, FlakyClient(failures=2), progress=False).run()
    assert (report.generated, report.failed) == (6, 0)
    check_lossless(tmp_path / "flaky", 6)
    spec = JobSpec(
        items=[JobItem("m", tuple(range(6)))],
        out=tmp_path / "broken",
        request_size=3,
        concurrency=1,
        retries=1,
    )
    report = BatchJob(spec, FlakyClient(failures=100), progress=False).run()
    assert (report.generated, report.failed) == (0, 6) and "restarting" in report.failures[0]


def test_unknown_model_fails_the_job_with_a_report(service, tmp_path, capsys):
    code = main(["batch", "--address", service.address, "--model", "nope", "--seeds", "0-3", "--out", str(tmp_path),
                 "--progress", "0"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["failed"] == 4 and "not served" in report["failures"][0]


@pytest.mark.parametrize("flags", [["--seeds", "0-3"], ["--model", "x", "--seeds", "9-1"]])
def test_bad_batch_options_are_clear_errors(flags, capsys):
    assert main(["batch", *flags, "--progress", "0"]) == 2
    assert "error" in capsys.readouterr().err
