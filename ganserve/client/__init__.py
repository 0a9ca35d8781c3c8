"""Client SDK for the ganserve gRPC API; imports without torch or onnx.

from ganserve.client import Client

with Client("localhost:50051", timeout_s=10) as client:
    images = client.generate("fmnist-cgan", seeds=range(8), labels=7)
"""

from ._client import AsyncClient, Client, Retry
from ._convert import ChannelEdit, ClassMap, Frame, GeneratedImage, LayerActivation, ModelInfo
from ._errors import (
    AuthenticationError,
    DeadlineExceededError,
    GanserveClientError,
    InvalidArgumentError,
    ModelNotFoundError,
    OverloadedError,
    PreconditionError,
    UnavailableError,
)

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "ChannelEdit",
    "ClassMap",
    "Client",
    "DeadlineExceededError",
    "Frame",
    "GanserveClientError",
    "GeneratedImage",
    "InvalidArgumentError",
    "LayerActivation",
    "ModelInfo",
    "ModelNotFoundError",
    "OverloadedError",
    "PreconditionError",
    "Retry",
    "UnavailableError",
]
