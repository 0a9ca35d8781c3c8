"""The gRPC servicer: thin. Each method hands the request to one operation; errors map in one place."""

from __future__ import annotations

import functools

import grpc

from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc

from .errors import status_for
from .operations import Operations


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else max(remaining, 0.0)


def unary(method):
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a traceback
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper


def streaming(method):
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            async for item in method(self, request, context):
                yield item
        except Exception as exc:  # noqa: BLE001 - mapped to a status, never a traceback
            code, message = status_for(exc)
            await context.abort(code, message)

    return wrapper


class GenerationServicer(pb_grpc.GenerationServiceServicer):
    def __init__(self, operations: Operations):
        self.ops = operations

    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return self.ops.list_models()

    @unary
    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:
        return self.ops.get_model(request)

    @unary
    async def Generate(self, request: pb.GenerateRequest, context) -> pb.GenerateResponse:
        return await self.ops.generate(request, _time_left(context))

    @streaming
    async def Interpolate(self, request: pb.InterpolateRequest, context):
        async for frame in self.ops.interpolate(request, _time_left(context)):
            yield frame

    @unary
    async def ClassMap(self, request: pb.ClassMapRequest, context) -> pb.ClassMapResponse:
        return await self.ops.class_map(request, _time_left(context))

    @unary
    async def LayerActivations(
        self, request: pb.LayerActivationsRequest, context
    ) -> pb.LayerActivationsResponse:
        return await self.ops.layer_activations(request, _time_left(context))
