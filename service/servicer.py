"""The gRPC servicer: thin. Each method hands the request to one operation; every method passes
the call gate (calls.py), which drains, records metrics and maps errors in one place."""

from __future__ import annotations

import grpc

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

from .calls import CallGate
from .operations import Operations

UNARY = ("ListModels", "GetModel", "Generate", "ClassMap", "LayerActivations")
STREAMING = ("Interpolate",)


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else max(remaining, 0.0)


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    def __init__(self, operations: Operations, gate: CallGate, transport: str = "grpc"):
        self.ops = operations
        # Each RPC method is replaced, on this instance, by the same method behind the gate. The
        # HTTP face makes its own instance (transport "http") over the same operations and gate.
        for name in UNARY:
            setattr(self, name, gate.unary(name, getattr(self, name), transport))
        for name in STREAMING:
            setattr(self, name, gate.streaming(name, getattr(self, name), transport))

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return self.ops.list_models()

    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:
        return self.ops.get_model(request)

    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:
        return await self.ops.generate(request, _time_left(context))

    async def Interpolate(self, request: pb.InterpolateRequest, context):
        async for frame in self.ops.interpolate(request, _time_left(context)):
            yield frame

    async def ClassMap(self, request: pb.ClassMapRequest, context) -> pb.ClassMapResponse:
        return await self.ops.class_map(request, _time_left(context))

    async def LayerActivations(
        self, request: pb.LayerActivationsRequest, context
    ) -> pb.LayerActivationsResponse:
        return await self.ops.layer_activations(request, _time_left(context))
