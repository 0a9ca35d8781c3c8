"""How ``ganserve export`` asks Triton to schedule a model: plain data, importable without onnx or
tritonclient, so that building the CLI (and ``ganserve train`` on a training machine) needs neither."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TritonSettings:
    """How Triton should schedule one model; every field is a flag of ``ganserve export``."""

    target: str = field(default="cpu", metadata={"help": "cpu (KIND_CPU) or gpu (KIND_GPU)"})
    instance_count: int = field(default=1, metadata={"help": "model instances per device"})
    max_batch_size: int = field(default=256, metadata={"help": "largest batch Triton may form"})
    preferred_batch_sizes: tuple[int, ...] = field(
        default=(16, 64, 256), metadata={"help": "batch sizes the dynamic batcher aims for"}
    )
    max_queue_delay_us: int = field(default=500, metadata={"help": "longest wait to fill a batch"})
    max_queue_size: int = field(
        default=1024, metadata={"help": "bounded queue: requests beyond are rejected"}
    )
    tensorrt_fp16: bool = field(
        default=False, metadata={"help": "TensorRT execution accelerator, FP16 (GPU)"}
    )
    version: int = field(default=1, metadata={"help": "model version directory"})
    num_versions: int = field(default=1, metadata={"help": "serve the latest N versions"})
