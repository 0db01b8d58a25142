"""The route table, built once at start-up from the `google.api.http` options (grpc-gateway's
`runtime.ServeMux` of patterns): one route per annotated unary RPC, so a newly annotated RPC is
served with no change here.

Served of google/api/http.proto: get/put/post/delete/patch on a path of literal segments with an
optional `:verb`, and `body: "*"`, or no body for a request with no fields (no query string is
read); messages of strings, bools, integers, enums, and messages and lists of those. Anything
else (a path variable or wildcard, a custom method, `body: "field"`, `response_body`,
`additional_bindings`, a map, bytes, floating point, a google.protobuf type) is refused here,
naming the RPC, never served wrongly.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.api import annotations_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message

# The proto package whose `*_service_pb2` modules the gateway serves.
SERVICE_PACKAGE = "authsvc.v1"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Literal segments, then an optional ":verb" (google.api.http's grammar without variables), of
# the characters a path can hold unencoded (RFC 3986 pchar) but the template's own `{}*=:`.
_LITERAL = r"(?!\.\.?(?:[/:]|$))[A-Za-z0-9\-._~!$&'()+,;@]+"  # no `.` or `..`: clients drop them
_PATH = re.compile(rf"((/{_LITERAL})+|/)(:{_LITERAL})?")
_UNSERVED_TYPES = {
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


class RouteError(ValueError):
    """An HTTP rule that cannot be served (bad path, unserved feature, clash): a start-up error."""


class ErrorStyle(enum.Enum):
    """How a route's error bodies look (mirrors the `authsvc.v1.error_body_style` option)."""

    ERROR_CODE = "error_code"
    STATUS = "status"


@dataclass(frozen=True)
class Route:
    """The HTTP binding of one RPC."""

    http_method: str  # upper case: GET, PUT, POST, DELETE or PATCH
    path: str  # "/v1/tokens:verify": matched as it is, and the OpenAPI path
    body: str  # "" (no body) or "*" (the whole request)
    method: MethodDescriptor
    request_class: type[Message] = field(compare=False)
    error_style: ErrorStyle

    @property
    def operation_id(self) -> str:
        return f"{self.method.containing_service.name}_{self.method.name}"


def service_files(package: str = SERVICE_PACKAGE) -> list[FileDescriptor]:
    """The file descriptors of every `*_service_pb2` module of the generated `package`."""
    path = importlib.import_module(package).__path__
    names = sorted(i.name for i in pkgutil.iter_modules(path) if i.name.endswith("_service_pb2"))
    return [importlib.import_module(f"{package}.{name}").DESCRIPTOR for name in names]


def build_routes(files: Iterable[FileDescriptor]) -> list[Route]:
    """The HTTP binding of every annotated RPC in `files`; two on one method and path clash."""
    routes: dict[tuple[str, str], Route] = {}
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                if not method.GetOptions().HasExtension(annotations_pb2.http):
                    continue
                route = _route(method)
                other = routes.setdefault((route.http_method, route.path), route)
                if other is not route:
                    raise RouteError(
                        f"{route.http_method} {route.path} is bound by both "
                        f"{other.method.full_name} and {method.full_name}"
                    )
    return list(routes.values())


def _route(method: MethodDescriptor) -> Route:
    from authsvc.v1 import http_options_pb2  # this project's option; the rest is generic

    options = method.GetOptions()
    rule = options.Extensions[annotations_pb2.http]
    kind = rule.WhichOneof("pattern")
    path = getattr(rule, kind) if kind in HTTP_METHODS else ""
    request = method.input_type
    unserved = _unserved(request, set()) or _unserved(method.output_type, set())
    refused = {
        "streaming": method.client_streaming or method.server_streaming,
        f"HTTP method {rule.custom.kind or kind!r}": kind not in HTTP_METHODS,
        f"path {path!r} (literal segments, a :verb)": kind in HTTP_METHODS
        and not _PATH.fullmatch(path),
        f'body {rule.body!r} (only "*" or none)': rule.body not in ("", "*"),
        "no body for a request with fields": not rule.body and request.fields,
        "response_body": rule.response_body,
        "additional_bindings": rule.additional_bindings,
        f"field {unserved}": unserved,
    }
    refusals = [what for what, found in refused.items() if found]
    if refusals:
        raise RouteError(f"{method.full_name}: {', '.join(refusals)} not supported")
    extensions: Any = options.Extensions
    style = ErrorStyle.ERROR_CODE
    if extensions[http_options_pb2.error_body_style] == http_options_pb2.ERROR_BODY_STYLE_STATUS:
        style = ErrorStyle.STATUS
    request_class = message_factory.GetMessageClass(request)
    return Route(kind.upper(), path, rule.body, method, request_class, style)


def _unserved(message: Descriptor, seen: set[str]) -> str | None:
    """A field of `message`, or of a message in it, of a kind transcoding.py does not serve."""
    seen.add(message.full_name)
    for found in message.fields:
        inner, kind = found.message_type, _UNSERVED_TYPES.get(found.type)
        if inner is None:
            pass
        elif inner.GetOptions().map_entry:
            kind = "a map"
        elif inner.full_name.startswith("google.protobuf."):
            kind = inner.full_name
        elif inner.full_name not in seen and (deeper := _unserved(inner, seen)):
            return deeper
        if kind is not None:
            return f"{found.full_name} ({kind})"
    return None
