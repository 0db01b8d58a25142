"""The route table, compiled once at start-up from the `google.api.http` options (grpc-gateway's
`runtime.ServeMux` of compiled patterns): one route per binding of every annotated unary RPC, so a
newly annotated RPC is served with no change here.

Templates follow google/api/http.proto (`/v1/{name=shelves/*}/books:verb`, `*`, `**`) and are
compiled to a regular expression over the raw, still percent-encoded path; inside a variable an
encoded slash (`%2F`) also separates segments, as OpenAPI clients encode a path parameter's `/`.
By hand, in one regular expression: aiohttp's router knows neither `**` nor `:verb`, and
google-api-core's `path_template` only checks or expands a template, it does not bind values.
"""

from __future__ import annotations

import enum
import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor
from google.protobuf.message import Message

# The proto package whose `*_service_pb2` modules the gateway serves.
SERVICE_PACKAGE = "authsvc.v1"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_LITERAL = r"[^/{}*:=]+"
_SEGMENT = rf"\*\*|\*|{_LITERAL}"
_TOKEN = re.compile(
    rf"\{{(?P<field>{_IDENT}(?:\.{_IDENT})*)(?:=(?P<sub>(?:{_SEGMENT})(?:/(?:{_SEGMENT}))*))?\}}"
    rf"|(?P<segment>{_SEGMENT})"
)


class RouteError(ValueError):
    """An HTTP rule that cannot be served (bad template, unknown field, clash): a start-up error."""


class ErrorStyle(enum.Enum):
    """How a route's error bodies look (mirrors the `authsvc.v1.error_body_style` option)."""

    ERROR_CODE = "error_code"
    STATUS = "status"


@dataclass(frozen=True)
class Variable:
    name: str  # the dotted proto field path
    segments: tuple[str, ...]  # "*", "**" or literals; ("*",) for a bare {field}

    @property
    def field_path(self) -> tuple[str, ...]:
        return tuple(self.name.split("."))


@dataclass(frozen=True)
class PathTemplate:
    text: str
    variables: tuple[Variable, ...]
    literal_count: int
    regex: re.Pattern[str] = field(compare=False)

    @property
    def openapi_path(self) -> str:
        """The template with each variable as `{field.path}` (OpenAPI path syntax)."""
        return _TOKEN.sub(lambda m: f"{{{m['field']}}}" if m["field"] else m[0], self.text)

    def match(self, raw_path: str) -> dict[str, str] | None:
        """{field path: raw (still percent-encoded) value} when `raw_path` matches, else None."""
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        return {v.name: found[f"v{i}"] for i, v in enumerate(self.variables)}


def _regex(segment: str) -> str:
    return {"*": "[^/]+", "**": ".*"}.get(segment) or re.escape(segment)


def parse_template(text: str) -> PathTemplate:
    variables: list[Variable] = []
    flat: list[str] = []
    pattern, pos = "", 1
    if not text.startswith("/"):
        raise RouteError(f"path template {text!r}: must start with '/'")
    if re.fullmatch(rf"/(?::{_LITERAL})?", text):  # the root, with or without a verb
        return PathTemplate(text, (), 0, re.compile(re.escape(text)))
    while True:
        token = _TOKEN.match(text, pos)
        if token is None:
            raise RouteError(f"path template {text!r}: bad segment at {text[pos:]!r}")
        segments = (token["sub"] or "*").split("/") if token["field"] else [token["segment"]]
        if token["field"]:
            inner = "(?:/|%2[Ff])".join(map(_regex, segments))
            pattern += f"/(?P<v{len(variables)}>{inner})"
            variables.append(Variable(token["field"], tuple(segments)))
        else:
            pattern += "/" + _regex(token["segment"])
        flat += segments
        pos = token.end()
        if pos < len(text) and text[pos] == "/":
            pos += 1
            continue
        if pos < len(text) and not (text[pos] == ":" and re.fullmatch(_LITERAL, text[pos + 1 :])):
            raise RouteError(f"path template {text!r}: bad ending {text[pos:]!r}")
        pattern += re.escape(text[pos:])
        break
    if "**" in flat[:-1] or len({v.name for v in variables}) < len(variables):
        raise RouteError(f"path template {text!r}: '**' not last, or a field bound twice")
    literals = sum(s not in ("*", "**") for s in flat)
    return PathTemplate(text, tuple(variables), literals, re.compile(pattern, re.DOTALL))


@dataclass(frozen=True)
class Route:
    """One HTTP binding of one RPC."""

    http_method: str  # upper case: GET, POST, ... or a custom verb
    template: PathTemplate
    body: str  # "" (no body), "*" (the whole request) or a top-level field name
    response_body: str  # "" (the whole reply) or a top-level field name
    method: MethodDescriptor
    request_class: type[Message] = field(compare=False)
    response_class: type[Message] = field(compare=False)
    error_style: ErrorStyle
    binding: int  # 0 for the rule itself, 1.. for its additional_bindings

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        suffix = str(self.binding + 1) if self.binding else ""
        return f"{self.method.containing_service.name}_{self.method.name}{suffix}"

    @property
    def path_fields(self) -> frozenset[str]:
        """Dotted proto field names bound by the path."""
        return frozenset(v.name for v in self.template.variables)


def service_files(package: str = SERVICE_PACKAGE) -> list[FileDescriptor]:
    """The file descriptors of every `*_service_pb2` module of the generated `package`."""
    path = importlib.import_module(package).__path__
    names = sorted(i.name for i in pkgutil.iter_modules(path) if i.name.endswith("_service_pb2"))
    return [importlib.import_module(f"{package}.{name}").DESCRIPTOR for name in names]


def build_routes(files: Iterable[FileDescriptor]) -> list[Route]:
    """Every HTTP binding of every annotated RPC in `files`, literal-rich templates first."""
    routes = [
        route
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
        for route in _method_routes(method)
    ]
    seen: dict[tuple[str, str], Route] = {}
    for route in routes:  # a template with its variable names erased: two spellings clash
        shape = _TOKEN.sub(lambda m: m["sub"] or "*" if m["field"] else m[0], route.template.text)
        if (other := seen.setdefault((route.http_method, shape), route)) is not route:
            raise RouteError(
                f"{route.http_method} {route.template.text} is bound by both "
                f"{other.method.full_name} and {route.method.full_name}"
            )
    key = lambda r: (-r.template.literal_count, "**" in r.template.text, len(r.template.text))  # noqa: E731
    return sorted(routes, key=key)


def fields_at(
    message: Descriptor, names: Iterable[str], json: bool = False
) -> list[FieldDescriptor] | None:
    """The fields a dotted path walks through (by proto name, or also by JSON name), through
    singular messages other than well-known types; None if it names no field."""
    fields: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for name in names:
        if current is None or current.full_name.startswith("google.protobuf."):
            return None
        found = current.fields_by_name.get(name)
        if json:
            found = next((f for f in current.fields if f.json_name == name), found)
        if found is None:
            return None
        fields.append(found)
        current = None if found.is_repeated else found.message_type
    return fields


def _method_routes(method: MethodDescriptor) -> list[Route]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    if method.client_streaming or method.server_streaming:
        raise RouteError(f"{method.full_name}: streaming RPCs cannot be served over HTTP/JSON")
    from authsvc.v1 import http_options_pb2  # this project's option; the rest is generic

    extensions: Any = options.Extensions
    status = extensions[http_options_pb2.error_body_style]
    style = ErrorStyle.STATUS if status == http_options_pb2.ERROR_BODY_STYLE_STATUS else None
    rule = options.Extensions[annotations_pb2.http]
    rules = [rule, *rule.additional_bindings]
    return [_route(method, r, i, style or ErrorStyle.ERROR_CODE) for i, r in enumerate(rules)]


def _route(
    method: MethodDescriptor, rule: http_pb2.HttpRule, index: int, style: ErrorStyle
) -> Route:
    where = f"{method.full_name} (binding {index})"
    kind = rule.WhichOneof("pattern")
    if kind is None or (index and rule.additional_bindings):
        raise RouteError(f"{where}: no HTTP method and path, or nested additional_bindings")
    custom = kind == "custom"
    http_method = (rule.custom.kind if custom else kind).upper()
    try:
        template = parse_template(rule.custom.path if custom else getattr(rule, kind))
    except RouteError as exc:
        raise RouteError(f"{where}: {exc}") from None
    request, reply = method.input_type, method.output_type
    for variable in template.variables:
        path = fields_at(request, variable.field_path)
        if path is None or path[-1].is_repeated or _is_plain_message(path[-1]):
            raise RouteError(f"{where}: {variable.name!r} names no singular scalar field")
    if rule.body not in ("", "*") and rule.body not in request.fields_by_name:
        raise RouteError(f"{where}: body names no field of {request.full_name}: {rule.body!r}")
    if rule.response_body and rule.response_body not in reply.fields_by_name:
        raise RouteError(f"{where}: response_body names no field: {rule.response_body!r}")
    if not re.fullmatch("[A-Z]+", http_method):
        raise RouteError(f"{where}: bad HTTP method {http_method!r}")
    return Route(
        http_method,
        template,
        rule.body,
        rule.response_body,
        method,
        message_factory.GetMessageClass(request),
        message_factory.GetMessageClass(reply),
        style,
        index,
    )


def _is_plain_message(found: FieldDescriptor) -> bool:
    """A message field that is not a well-known type (those are one JSON value)."""
    message = found.message_type
    return message is not None and not message.full_name.startswith("google.protobuf.")
