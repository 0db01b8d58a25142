"""The route table, compiled once at start-up from the `google.api.http` options (grpc-gateway's
`runtime.ServeMux` of compiled patterns): one route per annotated unary RPC, so a newly annotated
RPC is served with no change here.

What is served of google/api/http.proto: get/put/post/delete/patch; templates of literal
segments and single-segment variables `{field}` (a top-level scalar field), with an optional
`:verb`; `body: "*"` or no body; messages of the kinds transcoding.py serves. Anything else (`*`,
`**`, `{name=shelves/*}`, `{a.b}`, a custom method, `body: "field"`, `response_body`,
`additional_bindings`, a map, bytes, floating point, a google.protobuf type) is refused here,
never served wrongly. A template is one regular expression over the raw, still percent-encoded
path: by hand, as aiohttp's router knows no `:verb`, and google-api-core's `path_template` binds
no values.
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
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
)
from google.protobuf.message import Message

# The proto package whose `*_service_pb2` modules the gateway serves.
SERVICE_PACKAGE = "authsvc.v1"
HTTP_METHODS = ("get", "put", "post", "delete", "patch")
_LITERAL = re.compile(r"[^/{}*:=]+")
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_UNSUPPORTED = (("**", "'**'"), ("=", "a sub-template variable"), (".", "a nested field path"))
_UNSERVED_TYPES = {
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


class RouteError(ValueError):
    """An HTTP rule that cannot be served (bad template, unknown field, clash): a start-up error."""


class ErrorStyle(enum.Enum):
    """How a route's error bodies look (mirrors the `authsvc.v1.error_body_style` option)."""

    ERROR_CODE = "error_code"
    STATUS = "status"


@dataclass(frozen=True)
class PathTemplate:
    text: str  # also the OpenAPI path: a variable is `{field}` in both
    variables: tuple[str, ...]  # the top-level field names the path binds
    regex: re.Pattern[str] = field(compare=False)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """{field: raw (still percent-encoded) value} when `raw_path` matches, else None."""
        found = self.regex.fullmatch(raw_path)
        return None if found is None else found.groupdict()


def parse_template(text: str) -> PathTemplate:
    """`/v1/literal/{field}:verb`; a RouteError naming what else the template uses."""
    path, colon, verb = text.partition(":")  # a literal has no ':', so the first one is the verb
    if not path.startswith("/") or (colon and not _LITERAL.fullmatch(verb)):
        raise RouteError(f"path template {text!r}: must start with '/', a verb must be a literal")
    variables: list[str] = []
    pattern = ""
    for segment in path[1:].split("/") if path != "/" else []:
        if variable := _VARIABLE.fullmatch(segment):
            variables.append(variable[1])
            pattern += f"/(?P<{variable[1]}>[^/]+)"
        elif _LITERAL.fullmatch(segment):
            pattern += "/" + re.escape(segment)
        else:
            what = next((name for mark, name in _UNSUPPORTED if mark in segment), "segment")
            raise RouteError(f"path template {text!r}: {what} {segment!r} is not supported")
    if len(set(variables)) < len(variables):
        raise RouteError(f"path template {text!r}: a field is bound twice")
    regex = re.compile((pattern or "/") + re.escape(colon + verb))
    return PathTemplate(text, tuple(variables), regex)


@dataclass(frozen=True)
class Route:
    """The HTTP binding of one RPC."""

    http_method: str  # upper case: GET, PUT, POST, DELETE or PATCH
    template: PathTemplate
    body: str  # "" (no body) or "*" (the whole request)
    method: MethodDescriptor
    request_class: type[Message] = field(compare=False)
    response_class: type[Message] = field(compare=False)
    error_style: ErrorStyle

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        return f"{self.method.containing_service.name}_{self.method.name}"


def is_scalar(found: FieldDescriptor) -> bool:
    """A field a path segment or query value can set: no message, no bytes (so that a path
    variable on bytes is refused as one, before the field kind is)."""
    return found.message_type is None and found.type != FieldDescriptor.TYPE_BYTES


def _unserved(message: Descriptor, seen: set[str]) -> str | None:
    """A field of `message`, or of a message in it, of a kind transcoding.py does not serve."""
    seen.add(message.full_name)
    for found in message.fields:
        inner = found.message_type
        if inner is None:
            kind = _UNSERVED_TYPES.get(found.type)
        elif inner.GetOptions().map_entry:
            kind = "a map"
        elif inner.full_name.startswith("google.protobuf."):
            kind = inner.full_name
        elif inner.full_name not in seen and (deeper := _unserved(inner, seen)):
            return deeper
        else:
            kind = None
        if kind is not None:
            return f"{found.full_name} ({kind})"
    return None


def service_files(package: str = SERVICE_PACKAGE) -> list[FileDescriptor]:
    """The file descriptors of every `*_service_pb2` module of the generated `package`."""
    path = importlib.import_module(package).__path__
    names = sorted(i.name for i in pkgutil.iter_modules(path) if i.name.endswith("_service_pb2"))
    return [importlib.import_module(f"{package}.{name}").DESCRIPTOR for name in names]


def build_routes(files: Iterable[FileDescriptor]) -> list[Route]:
    """The HTTP binding of every annotated RPC in `files`, literal-rich templates first."""
    routes = [
        _route(method)
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
        if method.GetOptions().HasExtension(annotations_pb2.http)
    ]
    seen: dict[tuple[str, str], Route] = {}
    for route in routes:  # a template with its variable names erased: two spellings clash
        shape = _VARIABLE.sub("*", route.template.text)
        if (other := seen.setdefault((route.http_method, shape), route)) is not route:
            raise RouteError(
                f"{route.http_method} {route.template.text} is bound by both "
                f"{other.method.full_name} and {route.method.full_name}"
            )
    return sorted(routes, key=_specificity)


def _specificity(route: Route) -> tuple[int, int]:
    """More literal segments first (/v1/users/me before /v1/users/{name}), then shorter."""
    template = route.template
    return len(template.variables) - template.text.count("/"), len(template.text)


def _route(method: MethodDescriptor) -> Route:
    from authsvc.v1 import http_options_pb2  # this project's option; the rest is generic

    where = method.full_name
    options = method.GetOptions()
    rule = options.Extensions[annotations_pb2.http]
    kind = rule.WhichOneof("pattern")
    unsupported = [
        *(["streaming"] if method.client_streaming or method.server_streaming else []),
        *([f"HTTP method {rule.custom.kind or kind!r}"] if kind not in HTTP_METHODS else []),
        *([f'body {rule.body!r} (only "*" or none)'] if rule.body not in ("", "*") else []),
        *(["response_body"] if rule.response_body else []),
        *(["additional_bindings"] if rule.additional_bindings else []),
    ]
    if unsupported:
        raise RouteError(f"{where}: {', '.join(unsupported)} not supported")
    try:
        template = parse_template(getattr(rule, kind))
    except RouteError as exc:
        raise RouteError(f"{where}: {exc}") from None
    request = method.input_type
    for name in template.variables:
        found = request.fields_by_name.get(name)
        if found is None or found.is_repeated or not is_scalar(found):
            raise RouteError(f"{where}: {{{name}}} names no singular scalar field")
    for message in (request, method.output_type):
        if (field := _unserved(message, set())) is not None:
            raise RouteError(f"{where}: field {field} not supported")
    extensions: Any = options.Extensions
    style = extensions[http_options_pb2.error_body_style]
    status = style == http_options_pb2.ERROR_BODY_STYLE_STATUS
    return Route(
        kind.upper(),
        template,
        rule.body,
        method,
        message_factory.GetMessageClass(request),
        message_factory.GetMessageClass(method.output_type),
        ErrorStyle.STATUS if status else ErrorStyle.ERROR_CODE,
    )
