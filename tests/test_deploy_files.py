"""deploy/: compose, Kubernetes, Grafana and the Dockerfile parse, reference files that exist, and
use only metrics that the service and Triton really expose; the model-reproduction script asks
the CLI only for what it has."""

import json
import os
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path

import grpc
import yaml

from ganserve.cli import build_parser
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.test_deploy_prometheus import _metric_names

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ganserve.json"


def _dashboard_expressions() -> list[str]:
    return [
        t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]
    ]


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"triton", "ganserve", "prometheus", "grafana"} <= set(compose["services"])
    gpu = compose["services"]["triton"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert compose["services"]["ganserve"]["environment"]["GANSERVE_BACKEND"] == "triton"
    build = compose["services"]["ganserve"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), source


def test_kubernetes_manifests_parse_with_probes_gpu_and_autoscaling():
    documents = [
        d
        for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
    ]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Deployment", "triton"), ("Deployment", "ganserve"), ("Service", "triton"), ("Service", "ganserve"),
            ("HorizontalPodAutoscaler", "ganserve")} <= kinds  # fmt: skip
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    service = deployments["ganserve"]["spec"]["template"]["spec"]["containers"][0]
    assert service["readinessProbe"]["grpc"]["port"] == 50051 and "grpc" in service["livenessProbe"]
    triton = deployments["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["requests"]["nvidia.com/gpu"] == 1


def test_dockerfile_is_non_root_with_a_grpc_health_check():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "health_pb2" in text
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (DEPLOY.parent / source).exists(), source


def test_grafana_provisioning_points_at_the_dashboard():
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "ganserve.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert (
        "./grafana/dashboards:/var/lib/grafana/dashboards:ro"
        in compose["services"]["grafana"]["volumes"]
    )
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert any("p99" in t for t in titles) and any("Triton queue" in t for t in titles)


def test_every_dashboard_metric_exists_in_the_service_or_triton(service, local_triton):
    stub = pb_grpc.GenerationServiceStub(grpc.insecure_channel(service.address))
    stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[1]))
    exposed = _metric_names(service.metrics_text())
    with urllib.request.urlopen(
        f"http://127.0.0.1:{local_triton.metrics_port}/metrics", timeout=10
    ) as r:
        exposed |= _metric_names(r.read().decode())
    used = {
        name
        for expr in _dashboard_expressions()
        for name in re.findall(r"\b(?:ganserve|nv)_[a-z_]+", expr)
    }
    assert any(n.startswith("nv_") for n in used) and any(n.startswith("ganserve_") for n in used)
    assert not used - exposed, f"dashboard uses metrics nobody exposes: {used - exposed}"


def test_reproduce_models_script_runs_commands_the_cli_accepts(tmp_path):
    """The script runs with a stand-in ``ganserve`` that writes down its arguments; each command
    line must then parse with the real CLI (flags exist, values have their types and choices)."""
    log = tmp_path / "commands"
    stand_in = tmp_path / "bin" / "ganserve"
    stand_in.parent.mkdir()
    stand_in.write_text(
        '#!/usr/bin/env bash\nprintf \'%q \' "$@" >> "$GANSERVE_LOG"; echo >> "$GANSERVE_LOG"\n'
    )
    stand_in.chmod(0o755)
    env = {**os.environ, "PATH": f"{stand_in.parent}:{os.environ['PATH']}",
           "GANSERVE_LOG": str(log), "RUNS": str(tmp_path / "runs"), "REPO": str(tmp_path / "repo")}  # fmt: skip
    subprocess.run(["bash", str(DEPLOY / "reproduce_models.sh")], env=env, check=True, timeout=60)
    commands = [shlex.split(line) for line in log.read_text().splitlines()]
    verbs = [command[0] for command in commands]
    # Two classifiers (ClassMap's, exported, and the judge, not) and four GANs.
    assert verbs.count("train") == 6 and verbs.count("export") == 5, verbs
    judge = next(c for c in commands if c[0] == "train" and "vgg" in c)
    judged = [c for c in commands if c[0] in ("select", "evaluate") and "--classifier" in c]
    assert len(judged) == 8 and all(
        c[c.index("--classifier") + 1].startswith(judge[judge.index("--out") + 1]) for c in judged
    )  # selection and evaluation use the judge
    assert verbs.count("select") == 4 and verbs.count("evaluate") == 5, verbs
    parser = build_parser()
    for command in commands:
        parser.parse_args(command)  # argparse exits (SystemExit) on anything it does not accept
