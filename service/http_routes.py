"""The HTTP routes of the generation API, read from the proto's ``google.api.http`` options.

The proto is the only place a route is declared (as grpc-gateway and Envoy's JSON transcoder read
it): each RPC's HttpRule becomes a :class:`Route`. Rules the HTTP face cannot honour (a path
variable or body naming a field the request lacks, a body on GET, a custom verb, nested path
variables) are refused here, when the face is built, so a route and the proto cannot disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from ganserve.v1 import generation_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["GenerationService"]
VERBS = ("get", "put", "post", "delete", "patch")
BODYLESS = ("GET", "DELETE")
# `{field}`: one path segment bound to a top-level scalar field (no `{a.b}`, no `{f=pattern}`).
VARIABLE = re.compile(r"\{([^{}]*)\}")
PLAIN_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
PATH_TYPES = (
    FieldDescriptor.TYPE_STRING,
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
)


class RouteError(ValueError):
    """An HttpRule on the proto that names something the request message does not have."""


@dataclass(frozen=True)
class Route:
    rpc: str  # the RPC's name, e.g. "Generate"
    verb: str  # "GET", "POST", …
    path: str  # the template, e.g. "/v1/models/{model}" (aiohttp reads the same syntax)
    body: str  # "" (no body), "*" (the whole request) or one field's name
    path_fields: tuple[str, ...]
    request: type[Message]
    response: type[Message]
    server_streaming: bool


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _route(method, rule: http_pb2.HttpRule) -> Route:
    where = f"{method.full_name}: google.api.http"
    pattern = rule.WhichOneof("pattern")
    if pattern not in VERBS:
        raise RouteError(f"{where}: pattern {pattern!r} is not supported (use one of {VERBS})")
    verb, path = pattern.upper(), getattr(rule, pattern)
    if not path.startswith("/") or ":" in path:
        raise RouteError(f"{where}: path {path!r} must start with / and have no custom verb")
    fields = method.input_type.fields_by_name
    path_fields = tuple(VARIABLE.findall(path))
    for name in path_fields:
        if not PLAIN_FIELD.fullmatch(name):
            raise RouteError(f"{where}: path variable {{{name}}} must be a plain field name")
        field = fields.get(name)
        if field is None:
            raise RouteError(
                f"{where}: path variable {{{name}}} is not a field of {method.input_type.name}"
            )
        if field.type not in PATH_TYPES or field.is_repeated:
            raise RouteError(
                f"{where}: path variable {{{name}}} must be a single string or integer"
            )
    if rule.body and verb in BODYLESS:
        raise RouteError(f"{where}: {verb} cannot carry a body")
    if rule.body not in ("", "*"):
        body = fields.get(rule.body)
        if body is None:
            raise RouteError(
                f"{where}: body {rule.body!r} is not a field of {method.input_type.name}"
            )
        if body.type != FieldDescriptor.TYPE_MESSAGE or body.is_repeated:
            raise RouteError(f"{where}: body {rule.body!r} must be a single message field")
    if method.client_streaming:
        raise RouteError(f"{where}: client-streaming RPCs have no HTTP/JSON form here")
    if rule.response_body:
        raise RouteError(f"{where}: response_body is not supported (the whole response is sent)")
    return Route(
        rpc=method.name,
        verb=verb,
        path=path,
        body=rule.body,
        path_fields=path_fields,
        request=_message_class(method.input_type),
        response=_message_class(method.output_type),
        server_streaming=method.server_streaming,
    )


def routes(service: ServiceDescriptor = SERVICE) -> list[Route]:
    """Every route of ``service``, additional bindings included; every RPC must have one."""
    found = []
    for method in service.methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            raise RouteError(f"{method.full_name} has no google.api.http option")
        rule = options.Extensions[annotations_pb2.http]
        found.append(_route(method, rule))
        for extra in rule.additional_bindings:
            found.append(_route(method, extra))
    return found
