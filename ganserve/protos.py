"""Regenerate the gRPC stubs from ``proto/`` (``python -m ganserve.protos``)."""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "proto"
PROTO_FILES = ("ganserve/v1/generation.proto",)


def include_dirs() -> list[Path]:
    """Where the imported protos live: protobuf's own (shipped with grpcio-tools) and
    ``google/api/annotations.proto`` (shipped with googleapis-common-protos)."""
    import grpc_tools
    from google.api import annotations_pb2

    return [
        Path(grpc_tools.__file__).parent / "_proto",
        Path(annotations_pb2.__file__).parent.parent.parent,
    ]


def generate(out_dir: Path = PROTO_ROOT) -> None:
    """Write ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` for every API file into ``out_dir``."""
    from grpc_tools import protoc

    for proto in PROTO_FILES:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            *(f"-I{folder}" for folder in include_dirs()),
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_ROOT / proto),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_ROOT)
