"""deploy/ checked by the tools made for it: every Kubernetes manifest by kubernetes-validate
(strict, offline schemas), the Dockerfile by hadolint, the container's pinned versions against
pyproject.toml, and the system-package list that `make test` installs from."""

import json
import re
import subprocess
import sysconfig
from importlib.metadata import requires
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# A recent release whose schemas kubernetes-validate bundles; raise it as clusters move on.
KUBERNETES_VERSION = "1.37.0"
MANIFESTS = sorted((DEPLOY / "k8s").rglob("*.y*ml"))


def _resources(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.mark.parametrize(
    "path", MANIFESTS, ids=[str(p.relative_to(DEPLOY / "k8s")) for p in MANIFESTS]
)
def test_kubernetes_manifest_passes_strict_schema_validation(path):
    resources = _resources(path)
    assert resources, f"{path.name} holds no resource"
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path.name} {resource['kind']}/{resource['metadata']['name']}: {e}")


def test_the_manifests_are_all_found_and_the_version_is_bundled():
    assert {"ganserve.yaml", "triton.yaml", "train-job.yaml"} <= {p.name for p in MANIFESTS}
    latest = kubernetes_validate.utils.latest_version()
    assert tuple(map(int, KUBERNETES_VERSION.split(".")[:2])) <= tuple(map(int, latest.split(".")))


def test_hadolint_finds_nothing_in_the_dockerfile_and_every_ignore_says_why():
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:  # the comment line above gives the reason
            assert i > 0 and lines[i - 1].startswith("#") and "ignore" not in lines[i - 1], line
    assert not (ROOT / ".hadolint.yaml").exists(), "ignore rules inline, each with its reason"


def test_dockerfile_healthcheck_is_json_form_and_valid_python():
    text = (DEPLOY / "Dockerfile").read_text()
    command = json.loads(re.search(r"^\s+CMD (\[.*\])$", text, flags=re.MULTILINE).group(1))
    assert command[:2] == ["python", "-c"] and "health_pb2" in command[2]
    compile(command[2], "HEALTHCHECK", "exec")


def test_container_constraints_pin_every_base_dependency_within_pyproject():
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    base = [Requirement(r) for r in requires("ganserve") or []]  # pyproject's, as installed
    for requirement in (r for r in base if "extra" not in str(r.marker)):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in deploy/constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_every_listed_system_package_is_installed_so_the_script_has_nothing_to_do():
    # `make test` ran tests/system_deps.sh before pytest: each listed command must now be there.
    result = subprocess.run(
        ["bash", str(ROOT / "tests" / "system_deps.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
