"""deploy/prometheus: promtool accepts it, its rules use real metrics, and the real Prometheus
scrapes a running service with it."""

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from ganserve.export.triton_local import free_port
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _promtool(*args):
    assert shutil.which("promtool"), (
        "promtool missing: `make test` installs it (tests/system-packages.txt)"
    )
    return subprocess.run(["promtool", *args], capture_output=True, text=True)


def test_promtool_accepts_the_config_and_the_rules():
    config = _promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0 and "7 rules found" in rules.stdout, rules.stdout + rules.stderr


def _metric_names(text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_every_ganserve_metric_in_the_rules_exists_in_the_service(service):
    import grpc

    stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(service.address))
    stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[1]))  # so labelled series exist
    exposed = _metric_names(service.metrics_text())
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    used = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in re.findall(r"ganserve_[a-z_]+", rule["expr"])
    }
    assert used, "the rules should watch ganserve metrics"
    missing = {name for name in used if name not in exposed}
    assert not missing, f"rules use metrics the service does not expose: {missing}"


def _query(port: int, expression: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expression)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


def test_real_prometheus_scrapes_the_service_with_the_project_config(service, tmp_path):
    assert shutil.which("prometheus"), (
        "prometheus missing: `make test` installs it (tests/system-packages.txt)"
    )
    import grpc

    stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(service.address))
    stub.Generate(pb.GenerateRequest(model="cgan", seeds=[1, 2], labels=[0]))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
    config["scrape_configs"] = [
        {**job, "static_configs": [{"targets": [f"127.0.0.1:{service.service.metrics_port}"]}]}
        for job in config["scrape_configs"]
        if job["job_name"] == "ganserve"
    ]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        found = []
        while time.monotonic() < deadline and not found:
            time.sleep(0.5)
            try:
                found = _query(port, 'ganserve_images_generated_total{model="cgan"}')
            except OSError:
                continue
        assert found, "Prometheus did not scrape ganserve_images_generated_total"
        assert float(found[0]["value"][1]) >= 2
        assert _query(port, 'up{job="ganserve"}')[0]["value"][1] == "1"
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("name", ["prometheus.yml", "alerts.yml"])
def test_deploy_files_are_yaml(name):
    assert yaml.safe_load((PROMETHEUS / name).read_text())
