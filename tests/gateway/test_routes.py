"""The route table: literal paths, the bindings read from the descriptors, generic routing."""

from __future__ import annotations

import aiohttp
import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.descriptor import FileDescriptor
from yarl import URL

from service.gateway.dispatch import ChannelDispatcher
from service.gateway.routes import (
    ErrorStyle,
    Route,
    RouteError,
    build_routes,
    service_files,
)
from service.http_server import serving_gateway
from tests.gateway.helpers import json_of


def test_seed_paths_are_bound_from_the_protos() -> None:
    """The authsvc.v1 descriptors give the seeds' routes, methods and error styles."""
    table = {(r.http_method, r.path): r for r in build_routes(service_files())}
    expected = {
        ("POST", "/v1/users/authorize"): (
            "authsvc.v1.AuthService.Authorize",
            ErrorStyle.ERROR_CODE,
        ),
        ("PUT", "/v1/users/password"): (
            "authsvc.v1.PasswordService.ReplacePasswords",
            ErrorStyle.ERROR_CODE,
        ),
        ("POST", "/v1/users/password"): (
            "authsvc.v1.PasswordService.AddPassword",
            ErrorStyle.ERROR_CODE,
        ),
        ("DELETE", "/v1/users/password"): (
            "authsvc.v1.PasswordService.DeletePassword",
            ErrorStyle.ERROR_CODE,
        ),
        ("POST", "/authorize"): ("authsvc.v1.AuthService.IssueApiToken", ErrorStyle.STATUS),
    }
    for key, (method, style) in expected.items():
        assert table[key].method.full_name == method
        assert table[key].error_style is style
        assert table[key].body == "*"


def test_every_service_module_is_discovered() -> None:
    """Every authsvc.v1 *_service_pb2 module is read, so a new annotated service needs no
    gateway change."""
    names = {f.name for f in service_files()}
    assert {"authsvc/v1/auth_service.proto", "authsvc/v1/password_service.proto"} <= names
    assert all(name.endswith("_service.proto") for name in names)


@pytest.mark.parametrize(
    ("path", "served"),
    [
        ("/", True),
        ("/:ping", True),
        ("/v1/users/authorize", True),
        ("/v1/tokens:verify", True),
        ("/.well-known/jwks.json", True),
        ("v1/x", False),
        ("/v1/x/", False),
        ("/v1//x", False),
        ("/v1/x:", False),
        ("/v1/{name}", False),
        ("/v1/{name", False),
        ("/v1/name}", False),
        ("/v1/{a={b}}", False),
        ("/v1/**/x", False),
        ("/v1/x:a:b", False),
        ("", False),
        ("/v1/a b", False),
        ("/v1/a?b", False),
        ("/v1/é", False),
        ("/v1/..", False),
        ("/v1/a/./b", False),
        ("/v1/./x:do", False),
        ("/v1/.well-known", True),
    ],
)
def test_paths_are_literal(path: str, served: bool) -> None:
    """A path of literal segments and an optional :verb is served as it is; anything else
    (variables, wildcards, a malformed path) is a start-up error, not a route that never
    matches."""
    rule = http_pb2.HttpRule(post=path, body="*")
    if served:
        assert [r.path for r in build_routes([refused_file(rule)])] == [path]
    else:
        with pytest.raises(RouteError, match="path"):
            build_routes([refused_file(rule)])


def test_every_rule_feature_is_read(library_routes: list[Route]) -> None:
    """Each HTTP method, paths with verbs, and bodies ("*" or none) become routes; an RPC
    without an HTTP rule becomes none."""
    table = {(r.http_method, r.path): r for r in library_routes}
    assert set(table) == {
        ("GET", "/v1/shelf"),
        ("POST", "/v1/books"),
        ("PUT", "/v1/books"),
        ("PATCH", "/v1/books"),
        ("POST", "/v1/books:archive"),
        ("DELETE", "/v1/books"),
    }
    assert table[("GET", "/v1/shelf")].operation_id == "LibraryService_GetShelf"
    assert table[("POST", "/v1/books")].body == "*"
    assert table[("GET", "/v1/shelf")].body == ""


def test_a_path_bound_twice_is_refused(library_file) -> None:
    """Two RPCs on one method and path would shadow each other: a start-up error."""
    with pytest.raises(RouteError, match="bound by both"):
        build_routes([library_file, library_file])


def refused_file(
    rule: http_pb2.HttpRule, streaming: bool = False, data_kind: int = 9
) -> FileDescriptor:
    """A file of one RPC, refused.v1.Refused.Do, annotated with `rule`; its request has a
    string `name`, `data` of `data_kind` (a string; a message kind is a map<string, string>)
    and a message `inner`."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="refused.proto", package="refused.v1", syntax="proto3"
    )
    request = proto.message_type.add(name="Request")
    field = descriptor_pb2.FieldDescriptorProto
    entry = request.nested_type.add(name="DataEntry")
    entry.options.map_entry = True
    for number, name in enumerate(("key", "value"), start=1):
        entry.field.add(name=name, json_name=name, number=number, type=field.TYPE_STRING)
    for number, (name, kind) in enumerate(
        [("name", field.TYPE_STRING), ("data", data_kind), ("inner", field.TYPE_MESSAGE)],
        start=1,
    ):
        added = request.field.add(name=name, json_name=name, number=number, type=kind)
        added.label = field.LABEL_OPTIONAL
        if name == "inner":
            added.type_name = ".refused.v1.Request"
        elif kind == field.TYPE_MESSAGE:
            added.type_name, added.label = ".refused.v1.Request.DataEntry", field.LABEL_REPEATED
    method = proto.service.add(name="Refused").method.add(
        name="Do", input_type=".refused.v1.Request", output_type=".refused.v1.Request"
    )
    method.server_streaming = streaming
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.DescriptorPool()
    return pool.Add(proto) or pool.FindFileByName("refused.proto")


@pytest.mark.parametrize(
    ("rule", "feature"),
    [
        (http_pb2.HttpRule(get="/v1/{name=shelves/*}"), "path '/v1/{name=shelves/*}'"),
        (http_pb2.HttpRule(get="/v1/files/{name=**}"), "path '/v1/files/{name=**}'"),
        (http_pb2.HttpRule(get="/v1/**"), "path '/v1/**'"),
        (http_pb2.HttpRule(get="/v1/{inner.name}"), "path '/v1/{inner.name}'"),
        (http_pb2.HttpRule(get="/v1/*/x"), "path '/v1/*/x'"),
        (http_pb2.HttpRule(post="/v1/{name}", body="*"), "path '/v1/{name}'"),
        (http_pb2.HttpRule(get="/v1/x"), "no body for a request with fields"),
        (http_pb2.HttpRule(post="/v1/x", body="inner"), "body 'inner'"),
        (http_pb2.HttpRule(get="/v1/x", response_body="name"), "response_body"),
        (
            http_pb2.HttpRule(
                get="/v1/x", additional_bindings=[http_pb2.HttpRule(get="/v1/{name}")]
            ),
            "additional_bindings",
        ),
        (
            http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="PURGE", path="/v1/x")),
            "HTTP method 'PURGE'",
        ),
    ],
)
def test_unsupported_rule_features_are_refused(rule: http_pb2.HttpRule, feature: str) -> None:
    """An annotation using a feature the gateway does not serve is a start-up error naming the
    RPC and the feature, never a route served wrongly."""
    with pytest.raises(RouteError) as refused:
        build_routes([refused_file(rule)])
    assert "refused.v1.Refused.Do" in str(refused.value) and feature in str(refused.value)


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (descriptor_pb2.FieldDescriptorProto.TYPE_BYTES, "bytes"),
        (descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT, "float"),
        (descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE, "double"),
        (descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, "a map"),
    ],
)
def test_an_unserved_message_kind_is_refused(kind: int, named: str) -> None:
    """A request or reply holding a kind the transcoder does not serve (bytes, floating point, a
    map; here in the request) is a start-up error naming the field, never served wrongly."""
    rule = http_pb2.HttpRule(post="/v1/x", body="*")
    with pytest.raises(RouteError, match=rf"Do: field refused\.v1\.Request\.data \({named}\)"):
        build_routes([refused_file(rule, data_kind=kind)])


def test_an_unserved_kind_deep_in_a_reply_is_refused() -> None:
    """The reply is checked too, through nested messages: a google.protobuf.Timestamp inside a
    message of the reply is named."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="reply.proto",
        package="reply.v1",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    field = descriptor_pb2.FieldDescriptorProto
    proto.message_type.add(name="Request")
    inner = proto.message_type.add(name="Inner")
    inner.field.add(
        name="at",
        json_name="at",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=field.LABEL_OPTIONAL,
    )
    reply = proto.message_type.add(name="Reply")
    reply.field.add(
        name="inner",
        json_name="inner",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".reply.v1.Inner",
        label=field.LABEL_REPEATED,
    )
    method = proto.service.add(name="Replies").method.add(
        name="Get", input_type=".reply.v1.Request", output_type=".reply.v1.Reply"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(http_pb2.HttpRule(get="/v1/r"))
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    with pytest.raises(RouteError, match=r"reply\.v1\.Inner\.at \(google\.protobuf\.Timestamp\)"):
        build_routes([pool.FindFileByName("reply.proto")])


def test_a_streaming_rpc_is_refused() -> None:
    """A streaming RPC cannot be served over HTTP/JSON: a start-up error naming it."""
    with pytest.raises(RouteError, match=r"refused\.v1\.Refused\.Do: streaming"):
        build_routes([refused_file(http_pb2.HttpRule(get="/v1/x"), streaming=True)])


BOOK = {"title": "Dune"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/shelf", None, 503),
        ("GET", "/v1/shelf?name=ignored", None, 503),
        ("POST", "/v1/books", BOOK, 503),
        ("PUT", "/v1/books", BOOK, 503),
        ("PATCH", "/v1/books", BOOK, 503),
        ("POST", "/v1/books:archive", {"note": "old"}, 503),
        ("POST", "/v1/books:archive", None, 503),
        ("DELETE", "/v1/books", {"name": "b1"}, 503),
        ("DELETE", "/v1/books", None, 400),
        ("POST", "/v1/books", None, 400),
        ("POST", "/v1/books", {"pages": 1}, 400),
        ("GET", "/v1/books", None, 405),
        ("POST", "/v1/shelf", None, 405),
        ("POST", "/v1/books:publish", None, 404),
        ("GET", "/v1/books/b1", None, 404),
        ("GET", "/v1/shelves", None, 404),
    ],
)
async def test_generic_routes_are_served(
    library_routes: list[Route],
    dead_target: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
    status: int,
) -> None:
    """Any annotated RPC is routed and transcoded with no gateway change: matched calls reach
    the (here unreachable, so 503) server; bad or missing fields are 400 before it; others
    404/405."""
    async with (
        serving_gateway(
            ChannelDispatcher(dead_target),
            "127.0.0.1:0",
            routes=library_routes,
            shutdown_timeout=1.0,
        ) as port,
        aiohttp.ClientSession() as session,
        session.request(
            method, URL(f"http://127.0.0.1:{port}{path}", encoded=True), json=body
        ) as response,
    ):
        assert response.status == status, await response.text()
        assert (await json_of(response))["error_code"]
