"""`ganserve batch` against the real service: complete, resumable after SIGKILL, lossless."""

import json
import os
import signal
import subprocess

import numpy as np
import pytest
from PIL import Image

from ganserve.batch import MANIFEST, BatchJob, BatchSettings, JobItem, JobSpec, Manifest
from ganserve.cli import main
from ganserve.client import DeadlineExceededError
from ganserve.latents import latent_from_seed
from tests.batch_checks import (
    FakeClient,
    batch_command,
    check_consistent,
    check_lossless,
    wait_for_lines,
)


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


def test_psi_truncates_and_the_manifest_records_the_latent_used(service, tmp_path, capsys):
    out = tmp_path / "truncated"
    args = ["batch", "--address", service.address, "--model", "cgan", "--seeds", "0-3", "--classes", "2",
            "--out", str(out), "--progress", "0", "--psi", "0.5"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["generated"] == 4
    for entry in check_lossless(out, 4):
        np.testing.assert_allclose(
            entry["latent"], 0.5 * latent_from_seed(entry["seed"], 6), atol=1e-7
        )
    assert main([*args[:-1], "1.5"]) == 2
    assert "--psi must be in (0, 1], got 1.5" in capsys.readouterr().err


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
    command = batch_command(service.address, out, "--model", "gen2d", "--seeds", "0-2999",
                            "--concurrency", "2", "--request-size", "4")  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(out / MANIFEST, 200)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = (out / MANIFEST).read_bytes().count(b"\n")
    assert 200 <= partial < 3000  # killed in the middle
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["skipped"] >= partial and report["generated"] + report["skipped"] == 3000
    check_lossless(out, 3000)


def test_sigterm_finishes_the_calls_in_flight_and_exits_130_with_a_consistent_folder(
    service, tmp_path
):
    out = tmp_path / "stopped"
    command = batch_command(service.address, out, "--model", "gen2d", "--seeds", "0-1999",
                            "--concurrency", "2", "--request-size", "4")  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out / MANIFEST, 100)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and "interrupted" in stderr, stderr
    report = json.loads(stdout)
    assert report["left"] > 0 and report["generated"] == len(check_consistent(out))


def test_a_torn_manifest_line_is_cut_and_its_unit_redone(tmp_path):
    path = tmp_path / MANIFEST
    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "b.png").write_bytes(b"b")
    path.write_bytes(b'{"file": "a.png"}\n{"file": "b.p')
    manifest = Manifest(path)
    assert set(manifest.entries) == {"a.png"} and manifest.repaired == {"torn": 1}
    manifest.append([{"file": "b.png"}])
    manifest.close()
    assert [json.loads(x)["file"] for x in path.read_text().splitlines()] == ["a.png", "b.png"]


class Flaky:
    """Fails the first calls the way an overloaded or restarting service does."""

    def __init__(self, failures: int):
        self.failures = failures

    def __call__(self, seeds):
        self.failures -= 1
        return DeadlineExceededError("DEADLINE_EXCEEDED: busy") if self.failures >= 0 else None


def spec(out, seeds=6, **settings) -> JobSpec:
    settings = {"request_size": 3, "concurrency": 1, "progress": False, **settings}
    return JobSpec([JobItem("m", tuple(range(seeds)))], BatchSettings(out=str(out), **settings))


def test_transient_errors_are_retried(tmp_path):
    report = BatchJob(spec(tmp_path / "flaky", retries=3), FakeClient(Flaky(failures=2))).run()
    assert (report.generated, report.failed, report.exit_code) == (6, 0, 0)
    check_lossless(tmp_path / "flaky", 6)


def test_unknown_model_is_refused_up_front_with_nothing_written(service, tmp_path, capsys):
    code = main(["batch", "--address", service.address, "--model", "nope", "--seeds", "0-3", "--out", str(tmp_path),
                 "--progress", "0"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 2 and report["generated"] == 0 and "not served" in report["stopped"]
    assert not list(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("flags", [["--seeds", "0-3"], ["--model", "x", "--seeds", "9-1"]])
def test_bad_batch_options_are_clear_errors(flags, capsys):
    assert main(["batch", *flags, "--progress", "0"]) == 2
    assert "error" in capsys.readouterr().err
