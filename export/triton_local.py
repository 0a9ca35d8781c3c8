"""A real ``tritonserver`` on this machine (CPU), from the nvidia-pytriton wheel.

The wheel ships Triton with the Python backend only, so the ONNX models of a repository are
served through a derived repository: the same names, inputs, outputs and parameters, each model
running its own ``model.onnx`` with ONNX Runtime (``triton_python_model.py``). Production uses
the official container's onnxruntime backend on the original repository, unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from .triton_repo import read_config, write_config

log = logging.getLogger(__name__)
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def derive_local_repository(source: Path, target: Path, ort_threads: int = 1) -> list[str]:
    """Write ``target``: ``source``'s models, served by the Python backend on CPU. Returns names."""
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: model repository not found")
    names = []
    for config_path in sorted(source.glob("*/config.pbtxt")):
        config = read_config(config_path)
        model_dir = target / config_path.parent.name
        if config.platform == "onnxruntime_onnx":
            config.ClearField("platform")
            config.backend = "python"
            config.ClearField("optimization")  # TensorRT and CUDA settings have no meaning here
            del config.instance_group[:]
            config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
            config.parameters["ort_intra_op_threads"].string_value = str(ort_threads)
            for version_dir in sorted(p for p in config_path.parent.iterdir() if p.is_dir()):
                (model_dir / version_dir.name).mkdir(parents=True, exist_ok=True)
                os.symlink(
                    (version_dir / "model.onnx").resolve(),
                    model_dir / version_dir.name / "model.onnx",
                )
                shutil.copyfile(PYTHON_MODEL, model_dir / version_dir.name / "model.py")
        else:  # ensembles are scheduled by Triton's core: copy as they are
            shutil.copytree(config_path.parent, model_dir, dirs_exist_ok=True)
        write_config(config, model_dir)
        names.append(config.name)
    return names


def _pytriton_dist() -> tuple[Path, Path]:
    try:
        import pytriton
    except ImportError as exc:  # the triton-local extra is not installed
        raise RuntimeError(
            "the local Triton needs nvidia-pytriton: pip install 'ganserve[triton-local]'"
        ) from exc
    root = Path(pytriton.__file__).parent
    return root / "tritonserver", root.parent / "nvidia_pytriton.libs"


@dataclass
class LocalTriton:
    """``with LocalTriton(repo) as triton:`` starts tritonserver on free ports and stops it after."""

    repository: Path
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    ort_threads: int = 1
    startup_timeout_s: float = 120.0
    workspace: Path | None = None
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    _log_file: object | None = field(default=None, repr=False)
    models: list[str] = field(default_factory=list)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def _prepare(self) -> tuple[Path, Path, dict[str, str]]:
        if self.workspace is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ganserve-triton-")
            self.workspace = Path(self._tmp.name)
        dist, libs = _pytriton_dist()
        server = self.workspace / "tritonserver"
        shutil.copytree(
            dist, server, ignore=shutil.ignore_patterns("python_backend_stubs"), dirs_exist_ok=True
        )
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
        shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
        repo = self.workspace / "model_repository"
        shutil.rmtree(repo, ignore_errors=True)
        self.models = derive_local_repository(Path(self.repository), repo, self.ort_threads)
        env = dict(os.environ)
        # The Python-backend stub links libpython: make it find this interpreter's, not the system's.
        lib_dirs = [sysconfig.get_config_var("LIBDIR"), str(libs)]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*lib_dirs, env.get("LD_LIBRARY_PATH", "")]
        ).rstrip(os.pathsep)
        # The stub's embedded interpreter finds this virtual environment through its python on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return server, repo, env

    def start(self) -> LocalTriton:
        server, repo, env = self._prepare()
        self.grpc_port = self.grpc_port or free_port()
        self.http_port = self.http_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        command = [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={repo}",
            f"--backend-directory={server / 'backends'}",
            f"--cache-directory={server / 'caches'}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            "--log-verbose=0",
        ]
        self.log_path = self.log_path or self.workspace / "tritonserver.log"
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self._wait_ready()
        log.info(
            "tritonserver ready: gRPC %s, HTTP %s, models %s",
            self.grpc_url,
            self.http_url,
            self.models,
        )
        return self

    def _wait_ready(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                if client.is_server_ready():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.25)
        self.stop()
        raise TimeoutError(
            f"tritonserver not ready after {self.startup_timeout_s}s: {self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
