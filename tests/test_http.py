"""The HTTP/JSON face against the real service: routes from the proto, the same bytes as gRPC,
status mapping, streaming, metrics by transport, TLS, bearer token, CORS."""

import json
import ssl
import urllib.error
import urllib.request

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format

from ganserve.service.http_face import HTTP_STATUS
from ganserve.service.http_routes import SERVICE, RouteError, routes
from ganserve.v1 import generation_pb2 as pb
from ganserve.v1 import generation_pb2_grpc as pb_grpc
from tests.conftest import RunningService, serve_config
from tests.test_service_rpcs import _sample


@pytest.fixture(scope="module")
def running(tiny_repo):
    # No ClassMap cache: both transports compute the map, so `cached` is false in both answers.
    service = RunningService(serve_config(tiny_repo, max_grid=64, classmap_cache_entries=0))
    yield service
    service.stop()


@pytest.fixture(scope="module")
def grpc_stub(running):
    channel = grpc.insecure_channel(running.address)
    yield pb_grpc.GenerationServiceStub(channel)
    channel.close()


def base_url(running, scheme="http") -> str:
    return f"{scheme}://127.0.0.1:{running.service.http_port}"


def http(url, body=None, method=None, headers=None, context=None):
    """(status, headers, body bytes) of one HTTP call; errors are answers too."""
    data = None if body is None else (body if isinstance(body, bytes) else body.encode())
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def call_http(running, route_path, request, verb="POST"):
    body = None if verb == "GET" else json_format.MessageToJson(request)
    return http(base_url(running) + route_path, body, method=verb)


def same_bytes(a, b) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


# -- routes and the proto -------------------------------------------------------------------------


def test_every_rpc_has_exactly_the_route_its_proto_option_declares(running):
    table = {r.rpc: r for r in routes()}
    assert set(table) == {m.name for m in SERVICE.methods}
    for method in SERVICE.methods:
        route = table[method.name]
        assert route.request.DESCRIPTOR is method.input_type
        assert route.response.DESCRIPTOR is method.output_type
        assert route.server_streaming == method.server_streaming
    assert (table["GetModel"].verb, table["GetModel"].path) == ("GET", "/v1/models/{model}")
    assert (table["Generate"].verb, table["Generate"].path, table["Generate"].body) == (
        "POST", "/v1/generate", "*",
    )  # fmt: skip
    # The running face serves each route (another verb on the same path is refused, 405).
    for route in table.values():
        path = route.path.replace("{model}", "gen2d")
        wrong = "DELETE" if route.verb != "DELETE" else "GET"
        status, _, _ = http(base_url(running) + path, method=wrong)
        assert status == 405, (route.rpc, status)


def _service_with_rule(rule_text: str, name: str):
    """A one-method service in a private pool whose method carries ``rule_text``."""
    from google.api import annotations_pb2, http_pb2
    from google.protobuf import text_format

    pool = descriptor_pool.DescriptorPool()
    for dependency in (descriptor_pb2.DESCRIPTOR, http_pb2.DESCRIPTOR, annotations_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(proto)
        pool.Add(proto)
    file = descriptor_pb2.FileDescriptorProto(
        name=f"{name}.proto", package=name, syntax="proto3",
        dependency=["google/api/annotations.proto"],
    )  # fmt: skip
    message = file.message_type.add(name="Req")
    message.field.add(name="model", number=1, type=9, label=1)  # string
    message.field.add(name="count", number=2, type=13, label=3)  # repeated uint32
    method = file.service.add(name="S").method.add(
        name="Call", input_type=f".{name}.Req", output_type=f".{name}.Req"
    )
    if rule_text:
        rule = http_pb2.HttpRule()
        text_format.Parse(rule_text, rule)
        method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool.Add(file)
    return pool.FindServiceByName(f"{name}.S")


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ('get: "/v1/x/{name}"', "not a field"),
        ('get: "/v1/x/{count}"', "single string or integer"),
        ('get: "/v1/x/{model.inner}"', "plain field name"),
        ('post: "/v1/x" body: "missing"', "not a field"),
        ('post: "/v1/x" body: "model"', "single message field"),
        ('get: "/v1/x" body: "*"', "cannot carry a body"),
        ('post: "/v1/x:run" body: "*"', "custom verb"),
        ('custom: {kind: "HEAD" path: "/v1/x"}', "not supported"),
        ("", "has no google.api.http option"),
    ],
)
def test_a_route_that_disagrees_with_its_request_message_is_refused(rule, complaint, request):
    service = _service_with_rule(rule, f"bad{request.node.callspec.indices['rule']}")
    with pytest.raises(RouteError, match=complaint):
        routes(service)


def test_a_good_rule_in_another_service_is_read(request):
    service = _service_with_rule('get: "/v1/x/{model}"', "good")
    (route,) = routes(service)
    assert (route.rpc, route.verb, route.path_fields, route.body) == ("Call", "GET", ("model",), "")


# -- the same answers as gRPC ---------------------------------------------------------------------


def test_every_rpc_answers_the_same_bytes_over_http_and_grpc(running, grpc_stub):
    seeds = [pb.LatentSource(seed=3), pb.LatentSource(latent=pb.Latent(values=[0.25, -0.5]))]
    unary = {
        "ListModels": pb.ListModelsRequest(),
        "GetModel": pb.GetModelRequest(model="cgan"),
        "Generate": pb.GenerateRequest(model="cgan", seeds=[1, 2, 3], labels=[4]),
        "ClassMap": pb.ClassMapRequest(model="gen2d", resolution=24, render_png=True),
        "LayerActivations": pb.LayerActivationsRequest(
            model="gen2d", latents=seeds, include_tensors=True, heatmap_png=True
        ),
    }
    table = {r.rpc: r for r in routes()}
    for name, request in unary.items():
        route = table[name]
        path = route.path.replace("{model}", getattr(request, "model", ""))
        status, headers, body = call_http(running, path, request, route.verb)
        assert status == 200 and headers["Content-Type"].startswith("application/json"), body
        over_http = json_format.Parse(body, route.response())
        over_grpc = getattr(grpc_stub, name)(request)
        assert same_bytes(over_http, over_grpc), name
    # Raw formats and explicit latents too.
    request = pb.GenerateRequest(
        model="gen2d", latents=[pb.Latent(values=[0.1, 0.7])], format=pb.RAW_FLOAT32
    )
    _, _, body = call_http(running, "/v1/generate", request)
    assert same_bytes(json_format.Parse(body, pb.GenerateResponse()), grpc_stub.Generate(request))
    # The stream: every frame and the GIF, in order.
    request = pb.InterpolateRequest(model="cgan", keys=seeds[:1] * 2, steps=5, label=2, gif=True)
    request.keys[1].seed = 9
    status, headers, body = call_http(running, "/v1/interpolate", request)
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in body.decode().splitlines()]
    over_http = [json_format.ParseDict(line["result"], pb.InterpolateFrame()) for line in lines]
    over_grpc = list(grpc_stub.Interpolate(request))
    assert len(over_http) == len(over_grpc) == 6 and over_http[-1].gif
    assert all(same_bytes(a, b) for a, b in zip(over_http, over_grpc, strict=True))
    assert set(unary) | {"Interpolate"} == set(table)  # every RPC was compared


def test_the_readme_curl_example_works(running):
    body = '{"model":"cgan","seeds":[1,2],"labels":[3]}'
    status, _, answer = http(base_url(running) + "/v1/generate", body)
    images = json.loads(answer)["images"]
    assert status == 200 and [i["seed"] for i in images] == [1, 2] and images[0]["label"] == 3


def test_query_parameters_fill_fields_a_get_route_does_not_bind(running):
    status, _, body = http(base_url(running) + "/v1/models/gen2d?model=cgan")
    assert status == 200 and json.loads(body)["name"] == "gen2d"  # the path wins
    status, _, body = http(base_url(running) + "/v1/models?nope=1")
    assert status == 400 and "nope" in json.loads(body)["message"]
    status, _, body = http(base_url(running) + "/v1/generate?model=gen2d", '{"count": 1}')
    assert status == 400 and "in the body" in json.loads(body)["message"]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "request_", "code"),
    [
        ("/v1/generate", pb.GenerateRequest(model="gen2d", count=5000), "INVALID_ARGUMENT"),
        ("/v1/generate", pb.GenerateRequest(model="missing", seeds=[1]), "NOT_FOUND"),
        ("/v1/classmap", pb.ClassMapRequest(model="gen2d", resolution=65), "INVALID_ARGUMENT"),
        ("/v1/interpolate", pb.InterpolateRequest(model="gen2d", steps=3), "INVALID_ARGUMENT"),
        ("/v1/layer-activations", pb.LayerActivationsRequest(model="cgan"), "INVALID_ARGUMENT"),
    ],
)
def test_errors_carry_the_grpc_status_and_message(running, grpc_stub, path, request_, code):
    status, headers, body = call_http(running, path, request_)
    answer = json.loads(body)
    rpc = {r.path: r.rpc for r in routes()}[path]
    with pytest.raises(grpc.RpcError) as info:
        result = getattr(grpc_stub, rpc)(request_)
        list(result) if rpc == "Interpolate" else result
    assert info.value.code().name == code
    assert status == HTTP_STATUS[code] and headers["Content-Type"].startswith("application/json")
    assert answer == {"code": info.value.code().value[0], "message": info.value.details(), "details": []}  # fmt: skip


def test_status_mapping_follows_google_rpc_code():
    expected = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429,
                "UNAVAILABLE": 503, "UNAUTHENTICATED": 401, "FAILED_PRECONDITION": 400,
                "DEADLINE_EXCEEDED": 504, "INTERNAL": 500, "CANCELLED": 499}  # fmt: skip
    assert {k: HTTP_STATUS[k] for k in expected} == expected
    assert set(HTTP_STATUS) == {code.name for code in grpc.StatusCode}


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("{not json", "Failed to load JSON"),
        ('{"model": "gen2d", "bogus": 1}', 'no field named "bogus"'),
        ('{"model": "gen2d", "seeds": [-1]}', "seeds"),
    ],
)
def test_a_body_that_is_not_the_request_message_is_invalid_argument(running, body, pattern):
    status, _, answer = http(base_url(running) + "/v1/generate", body)
    error = json.loads(answer)
    assert status == 400 and error["code"] == 3 and pattern in error["message"]


def test_a_full_queue_is_429_and_a_draining_server_503(tiny_repo):
    service = RunningService(serve_config(tiny_repo, max_queued_images=8, max_batch_size=4))
    try:
        url = base_url(service)
        status, _, body = http(url + "/v1/generate", '{"model": "gen2d", "count": 16}')
        assert status == 429 and json.loads(body)["code"] == 8
        service.service.calls.draining = True
        status, _, body = http(url + "/v1/models")
        assert status == 503 and "shutting down" in json.loads(body)["message"]
    finally:
        service.service.calls.draining = False
        service.stop()


def test_a_deadline_header_is_honoured(running):
    request = '{"model": "gen2d", "resolution": 64, "fixed": [], "rangeMin": -3}'
    status, _, body = http(
        base_url(running) + "/v1/classmap", request, headers={"Grpc-Timeout": "1n"}
    )
    assert status == 504 and json.loads(body)["code"] == 4
    status, _, body = http(base_url(running) + "/v1/models", headers={"Grpc-Timeout": "soon"})
    assert status == 400 and "Grpc-Timeout" in json.loads(body)["message"]


# -- streaming ------------------------------------------------------------------------------------


def test_interpolate_streams_frames_as_they_are_made(running):
    body = json.dumps({"model": "gen2d", "keys": [{"seed": 1}, {"seed": 2}], "steps": 40})
    request = urllib.request.Request(base_url(running) + "/v1/interpolate", data=body.encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        first = json.loads(response.readline())["result"]
        assert first["index"] == 0 and first["image"]["seed"] == 1
        rest = [json.loads(line)["result"] for line in response]
    assert [f["index"] for f in rest] == list(range(1, 40))


# -- metrics, port, security ----------------------------------------------------------------------


def test_http_calls_are_counted_with_the_transport_label(running, grpc_stub):
    before = running.metrics_text()
    http(base_url(running) + "/v1/generate", '{"model": "gen2d", "seeds": [1, 2]}')
    http(base_url(running) + "/v1/generate", '{"model": "gen2d", "count": 99999}')
    grpc_stub.Generate(pb.GenerateRequest(model="gen2d", seeds=[1]))
    after = running.metrics_text()

    def delta(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    ok = {"method": "Generate", "code": "OK"}
    assert delta("ganserve_requests_total", **ok, transport="http") == 1
    assert delta("ganserve_requests_total", **ok, transport="grpc") == 1
    assert (
        delta("ganserve_requests_total", method="Generate", code="INVALID_ARGUMENT", transport="http")
        == 1
    )  # fmt: skip
    assert delta("ganserve_request_latency_seconds_count", method="Generate", transport="http") == 2
    assert delta("ganserve_images_generated_total", model="gen2d") == 3


def test_http_port_minus_one_turns_the_face_off(tiny_repo):
    service = RunningService(serve_config(tiny_repo, http_port=-1))
    try:
        assert service.service.http is None and service.service.http_port is None
    finally:
        service.stop()


def test_https_and_mutual_tls_use_the_grpc_settings(tiny_repo, certificates):
    tls = dict(tls_cert=str(certificates / "server.pem"), tls_key=str(certificates / "server.key"))
    service = RunningService(serve_config(tiny_repo, **tls, tls_client_ca=str(certificates / "ca.pem")))  # fmt: skip
    try:
        url = base_url(service, "https") + "/v1/models"
        context = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
        # TLS 1.3 refuses a missing client certificate after the handshake: a reset or an alert.
        refused = (urllib.error.URLError, ConnectionError, ssl.SSLError)
        with pytest.raises(refused):  # no client certificate
            http(url, context=context)
        context.load_cert_chain(str(certificates / "client.pem"), str(certificates / "client.key"))
        status, _, body = http(url, context=context)
        assert status == 200 and json.loads(body)["models"]
        with pytest.raises(refused):  # plain HTTP on a TLS port
            http(base_url(service) + "/v1/models")
    finally:
        service.stop()


def test_the_bearer_token_guards_the_api_but_not_the_page(tiny_repo, monkeypatch):
    monkeypatch.setenv("TEST_HTTP_TOKEN", "s3cret")
    service = RunningService(serve_config(tiny_repo, auth_token_env="TEST_HTTP_TOKEN"))
    try:
        url = base_url(service)
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            status, _, body = http(url + "/v1/models", headers=headers)
            assert status == 401 and json.loads(body)["code"] == 16
        status, _, body = http(
            url + "/v1/interpolate", '{"model": "gen2d", "steps": 3}', headers={}
        )
        assert status == 401
        status, _, body = http(url + "/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and json.loads(body)["models"]
        status, _, page = http(url + "/")
        assert status == 200 and b"ganserve" in page
    finally:
        service.stop()


def test_no_cors_unless_asked(running, tiny_repo):
    origin = {"Origin": "http://elsewhere.example"}
    status, headers, _ = http(base_url(running) + "/v1/models", headers=origin)
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    status, _, _ = http(base_url(running) + "/v1/generate", method="OPTIONS", headers=origin)
    assert status == 405
    service = RunningService(serve_config(tiny_repo, http_cors_origins="http://elsewhere.example"))
    try:
        url = base_url(service)
        status, headers, _ = http(url + "/v1/models", headers=origin)
        assert headers["Access-Control-Allow-Origin"] == "http://elsewhere.example"
        status, headers, _ = http(url + "/v1/generate", method="OPTIONS", headers=origin)
        assert status == 204 and "POST" in headers["Access-Control-Allow-Methods"]
        assert "authorization" in headers["Access-Control-Allow-Headers"]
        _, headers, _ = http(url + "/v1/models", headers={"Origin": "http://other.example"})
        assert "Access-Control-Allow-Origin" not in headers
    finally:
        service.stop()
