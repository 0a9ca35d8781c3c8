"""One writer per output folder, and many machines per job: shards, Kubernetes defaults, merge."""

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from ganserve.batch import MANIFEST, BatchSettings, Shard
from ganserve.cli import build_parser, main
from ganserve.errors import UsageError
from ganserve.settings import dataclass_from_args
from tests.batch_checks import batch_command, check_lossless, wait_for_lines

JOB_YAML = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "batch-job.yaml"


def test_a_second_run_on_the_same_folder_exits_3_at_once_and_sigkill_leaves_no_stale_lock(
    service, tmp_path, capsys
):
    out = tmp_path / "job"
    flags = ["--model", "gen2d", "--seeds", "0-999", "--concurrency", "2", "--request-size", "4"]
    first = subprocess.Popen(batch_command(service.address, out, *flags), stdout=subprocess.DEVNULL)
    wait_for_lines(out / MANIFEST, 50)
    started = time.monotonic()
    assert (
        main(["batch", "--address", service.address, "--out", str(out), "--progress", "0", *flags])
        == 3
    )
    assert time.monotonic() - started < 5  # at once: no waiting for the lock
    error = capsys.readouterr().err
    assert "in use by ganserve batch (pid" in error and str(first.pid) in error
    first.send_signal(signal.SIGKILL)
    first.wait()
    again = subprocess.run(
        batch_command(service.address, out, *flags), capture_output=True, timeout=120
    )
    assert again.returncode == 0, again.stderr  # the kernel dropped the dead run's lock
    check_lossless(out, 1000)


def test_shards_partition_the_plan_and_default_from_an_indexed_job(monkeypatch):
    units = list(range(10))
    for count in (1, 3, 4, 7, 12):
        slices = [Shard(i, count).select(units) for i in range(count)]
        assert [u for s in slices for u in s] == units  # every unit exactly once, in order
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    monkeypatch.setenv("GANSERVE_SHARD_COUNT", "3")
    args = build_parser().parse_args(["batch", "--model", "m"])
    assert dataclass_from_args(BatchSettings, args).shard() == (2, 3)
    assert Shard(2, 3).folder(Path("out")) == Path("out/shard-002-of-003")
    monkeypatch.delenv("GANSERVE_SHARD_COUNT")
    with pytest.raises(UsageError, match="GANSERVE_SHARD_COUNT"):
        dataclass_from_args(BatchSettings, args).shard()


def test_three_shards_at_once_one_sigkilled_and_rerun_then_merged_exactly_once(
    service, tmp_path, capsys
):
    out = tmp_path / "job"
    seeds = 1500

    def command(index):
        return batch_command(service.address, out, "--model", "cgan", "--seeds", f"0-{seeds - 1}",
                             "--classes", "4", "--concurrency", "2", "--request-size", "4",
                             "--shard-index", str(index), "--shard-count", "3")  # fmt: skip

    shards = [subprocess.Popen(command(i), stdout=subprocess.DEVNULL) for i in range(3)]
    wait_for_lines(out / "shard-001-of-003" / MANIFEST, 50)
    shards[1].send_signal(signal.SIGKILL)
    assert [shard.wait(timeout=120) for shard in shards] == [0, -signal.SIGKILL, 0]
    assert main(["batch", "merge", "--out", str(out)]) == 6  # shard 1 is not finished
    assert "shard-001-of-003" in capsys.readouterr().err and not (out / MANIFEST).exists()
    rerun = subprocess.run(command(1), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["skipped"] >= 50

    assert main(["batch", "merge", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == seeds
    merged = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(e["seed"] for e in merged) == list(range(seeds))  # every seed exactly once
    for entry in merged:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and entry["class"] == 4
    for index in range(3):
        check_lossless(out / f"shard-{index:03d}-of-003", 500)
    Image.open(out / merged[-1]["file"]).verify()

    victim = out / merged[700]["file"]  # a corrupt file is found by its sha256
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    assert main(["batch", "merge", "--out", str(out)]) == 6
    assert "sha256" in capsys.readouterr().err


def test_the_indexed_job_runs_ganserve_batch_sharded_into_a_volume_and_then_merges_it():
    jobs = {d["metadata"]["name"]: d for d in yaml.safe_load_all(JOB_YAML.read_text()) if d}
    spec = jobs["ganserve-batch"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["GANSERVE_SHARD_COUNT"]) == spec["completions"]
    assert env["GANSERVE_ADDRESS"].startswith("ganserve:")  # the Service in ganserve.yaml
    assert pod["restartPolicy"] == "Never"  # podFailurePolicy needs it
    merge = jobs["ganserve-batch-merge"]["spec"]
    assert merge["suspend"] is True
    merge_container = merge["template"]["spec"]["containers"][0]
    for job, c in ((spec, container), (merge, merge_container)):
        assert c["command"] == ["ganserve"]
        args = build_parser().parse_args(c["args"])  # every flag is one ganserve batch knows
        out = (
            c["args"][c["args"].index("--out") + 1] if "--out" in c["args"] else env["GANSERVE_OUT"]
        )
        assert args.command == "batch" and out == env["GANSERVE_OUT"]
        (mount,) = c["volumeMounts"]
        assert out.startswith(mount["mountPath"] + "/")
        volumes = {v["name"]: v for v in job["template"]["spec"]["volumes"]}
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert jobs[claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert build_parser().parse_args(merge_container["args"]).action == "merge"
