"""The servicer: thin. Each method hands the request to one operation; every method passes the
call gate (calls.py; gRPC through ``CallGate.handlers``), which admits, reads the request, drains,
records metrics and maps errors in one place."""

from __future__ import annotations

import grpc

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

from .calls import CallGate
from .operations import Operations

SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"]


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else max(remaining, 0.0)


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    def __init__(
        self, operations: Operations, gate: CallGate | None = None, transport: str = "grpc"
    ):
        self.ops = operations
        # gRPC registers this instance's methods through gate.handlers (the gate reads the body).
        # Another face reads its own requests (its context's read() gives the parsed request once
        # the gate admits the call): with a gate, each method is replaced, on this instance, by
        # the same method behind it (the HTTP face's instance, transport "http").
        if gate is not None:
            for rpc in SERVICE.methods:
                wrap = gate.streaming if rpc.server_streaming else gate.unary
                setattr(self, rpc.name, wrap(rpc.name, getattr(self, rpc.name), None, transport))

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
