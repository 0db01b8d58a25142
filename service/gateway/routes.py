"""The route table, read at start-up from the `google.api.http` options of the descriptors.

Every unary RPC with an HTTP rule gets one route per binding (the rule and its
`additional_bindings`). Path templates follow google/api/http.proto:

    Template = "/" Segments [ Verb ] ;     Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;     Verb = ":" LITERAL ;

A template is compiled to a regular expression over the raw (still percent-encoded) request
path; variable values are percent-decoded when the request is built. Inside a multi-segment
variable such as `{name=users/*}` an encoded slash (`%2F`) is accepted as a separator too,
because OpenAPI clients send a path parameter's `/` encoded.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
)
from google.protobuf.message import Message

from service.gateway.errors import ErrorStyle

# The proto package whose services the gateway serves, and how its service files are named.
SERVICE_PACKAGE = "authsvc.v1"
SERVICE_MODULE_SUFFIX = "_service_pb2"

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*:=]+")
_SEPARATOR_IN_VARIABLE = "(?:/|%2[Ff])"


class RouteError(ValueError):
    """An HTTP rule that cannot be served (bad template, unknown field, clash): a start-up error."""


@dataclass(frozen=True)
class Variable:
    field_path: tuple[str, ...]  # proto field names, outermost first
    segments: tuple[str, ...]  # "*", "**" or literals; ("*",) for a bare {field}

    @property
    def name(self) -> str:
        return ".".join(self.field_path)


@dataclass(frozen=True)
class PathTemplate:
    """A compiled path template; `match` returns {field path: decoded value} or None."""

    text: str
    segments: tuple[str | Variable, ...]
    verb: str
    regex: re.Pattern[str] = field(compare=False)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(s for s in self.segments if isinstance(s, Variable))

    @property
    def literal_count(self) -> int:
        count = 0
        for segment in self.segments:
            parts = segment.segments if isinstance(segment, Variable) else (segment,)
            count += sum(1 for p in parts if p not in ("*", "**"))
        return count

    @property
    def openapi_path(self) -> str:
        """The template with each variable as `{field.path}` (OpenAPI path syntax)."""
        parts = [f"{{{s.name}}}" if isinstance(s, Variable) else s for s in self.segments]
        return "/" + "/".join(parts) + (f":{self.verb}" if self.verb else "")

    def match(self, raw_path: str) -> dict[str, str] | None:
        """{field path: raw value, still percent-encoded} when `raw_path` matches, else None."""
        found = self.regex.fullmatch(raw_path)
        if found is None:
            return None
        return {v.name: found.group(f"v{i}") for i, v in enumerate(self.variables)}


def parse_template(text: str) -> PathTemplate:
    if not text.startswith("/"):
        raise RouteError(f"path template {text!r}: must start with '/'")
    body, verb = _split_verb(text[1:], text)
    if verb is not None and not _LITERAL.fullmatch(verb):
        raise RouteError(f"path template {text!r}: bad verb {verb!r}")
    segments: list[str | Variable] = []
    for raw in _split_top_level(body, text) if body else []:
        if raw.startswith("{"):
            segments.append(_parse_variable(raw, text))
        elif raw in ("*", "**") or _LITERAL.fullmatch(raw):
            segments.append(raw)
        else:
            raise RouteError(f"path template {text!r}: bad segment {raw!r}")
    flat = [p for s in segments for p in (s.segments if isinstance(s, Variable) else (s,))]
    if "**" in flat[:-1]:
        raise RouteError(f"path template {text!r}: '**' must be the last segment")
    names = [v.name for v in segments if isinstance(v, Variable)]
    if len(names) != len(set(names)):
        raise RouteError(f"path template {text!r}: a field is bound twice")
    verb = verb or ""
    return PathTemplate(text, tuple(segments), verb, _compile(segments, verb))


def _split_verb(body: str, text: str) -> tuple[str, str | None]:
    depth, last_slash, last_colon = 0, -1, -1
    for i, char in enumerate(body):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise RouteError(f"path template {text!r}: unbalanced braces")
        elif depth == 0 and char == "/":
            last_slash = i
        elif depth == 0 and char == ":":
            last_colon = i
    if depth != 0:
        raise RouteError(f"path template {text!r}: unbalanced braces")
    if last_colon > last_slash:
        return body[:last_colon], body[last_colon + 1 :]
    return body, None


def _split_top_level(body: str, text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(body):
        if char == "{":
            if depth:
                raise RouteError(f"path template {text!r}: nested variables")
            depth = 1
        elif char == "}":
            depth = 0
        elif char == "/" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    parts.append(body[start:])
    if any(p == "" for p in parts):
        raise RouteError(f"path template {text!r}: empty segment")
    return parts


def _parse_variable(raw: str, text: str) -> Variable:
    if not raw.endswith("}"):
        raise RouteError(f"path template {text!r}: bad variable {raw!r}")
    inner = raw[1:-1]
    path, eq, sub = inner.partition("=")
    field_path = tuple(path.split("."))
    if not all(_IDENT.fullmatch(p) for p in field_path):
        raise RouteError(f"path template {text!r}: bad field path {path!r}")
    segments = tuple(sub.split("/")) if eq else ("*",)
    for segment in segments:
        if segment not in ("*", "**") and not _LITERAL.fullmatch(segment):
            raise RouteError(f"path template {text!r}: bad segment {segment!r} in {raw!r}")
    return Variable(field_path, segments)


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    if segment == "**":
        return ".*"
    return re.escape(segment)


def _compile(segments: Sequence[str | Variable], verb: str) -> re.Pattern[str]:
    parts = []
    index = 0
    for segment in segments:
        if isinstance(segment, Variable):
            inner = _SEPARATOR_IN_VARIABLE.join(_segment_regex(s) for s in segment.segments)
            parts.append(f"(?P<v{index}>{inner})")
            index += 1
        else:
            parts.append(_segment_regex(segment))
    pattern = "/" + "/".join(parts) + (":" + re.escape(verb) if verb else "")
    return re.compile(pattern, re.DOTALL)


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
        """Field paths (dotted proto names) bound by the path."""
        return frozenset(v.name for v in self.template.variables)


def service_files(package: str = SERVICE_PACKAGE) -> list[FileDescriptor]:
    """The file descriptors of every `*_service_pb2` module in the generated `package`."""
    module = importlib.import_module(package)
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(module.__path__)
        if info.name.endswith(SERVICE_MODULE_SUFFIX)
    )
    return [importlib.import_module(f"{package}.{name}").DESCRIPTOR for name in names]


def build_routes(files: Iterable[FileDescriptor]) -> list[Route]:
    """Every HTTP binding of every unary RPC in `files`, most specific template first."""
    routes: list[Route] = []
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                routes.extend(_method_routes(method))
    seen: dict[tuple[str, str], Route] = {}
    for route in routes:
        key = (route.http_method, _shape(route.template))
        if key in seen:
            raise RouteError(
                f"{route.http_method} {route.template.text} is bound by both "
                f"{seen[key].method.full_name} and {route.method.full_name}"
            )
        seen[key] = route
    # Stable sort: literal-rich templates win over wildcards; otherwise declaration order.
    return sorted(
        routes,
        key=lambda r: (-r.template.literal_count, "**" in r.template.text, len(r.template.text)),
    )


def _shape(template: PathTemplate) -> str:
    """The template with variable names erased, so two spellings of one path clash."""
    parts = ["/".join(s.segments) if isinstance(s, Variable) else s for s in template.segments]
    return "/" + "/".join(parts) + (f":{template.verb}" if template.verb else "")


def _method_routes(method: MethodDescriptor) -> list[Route]:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    if method.client_streaming or method.server_streaming:
        raise RouteError(f"{method.full_name}: streaming RPCs cannot be served over HTTP/JSON")
    rule = options.Extensions[annotations_pb2.http]
    style = _error_style(method)
    rules = [rule, *rule.additional_bindings]
    return [_route(method, r, index, style) for index, r in enumerate(rules)]


def _error_style(method: MethodDescriptor) -> ErrorStyle:
    # Imported here: the option belongs to this project's protos, the rest of the module does not.
    from authsvc.v1 import http_options_pb2

    extensions: Any = method.GetOptions().Extensions
    value = extensions[http_options_pb2.error_body_style]
    if value == http_options_pb2.ERROR_BODY_STYLE_STATUS:
        return ErrorStyle.STATUS
    return ErrorStyle.ERROR_CODE


def _route(
    method: MethodDescriptor, rule: http_pb2.HttpRule, index: int, style: ErrorStyle
) -> Route:
    where = f"{method.full_name} (binding {index})"
    if index and rule.additional_bindings:
        raise RouteError(f"{where}: additional_bindings cannot nest")
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError(f"{where}: no HTTP method and path")
    if kind == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
        if not re.fullmatch(r"[A-Z]+", http_method):
            raise RouteError(f"{where}: bad custom HTTP method {rule.custom.kind!r}")
    else:
        http_method, path = kind.upper(), getattr(rule, kind)
    try:
        template = parse_template(path)
    except RouteError as exc:
        raise RouteError(f"{where}: {exc}") from None
    request = method.input_type
    for variable in template.variables:
        _check_path_field(request, variable.field_path, where)
    if rule.body not in ("", "*"):
        _top_level_field(request, rule.body, where, "body")
    if rule.response_body:
        _top_level_field(method.output_type, rule.response_body, where, "response_body")
    return Route(
        http_method=http_method,
        template=template,
        body=rule.body,
        response_body=rule.response_body,
        method=method,
        request_class=message_factory.GetMessageClass(request),
        response_class=message_factory.GetMessageClass(method.output_type),
        error_style=style,
        binding=index,
    )


def _top_level_field(message: Descriptor, name: str, where: str, what: str) -> FieldDescriptor:
    found = message.fields_by_name.get(name)
    if found is None:
        raise RouteError(f"{where}: {what} names no field of {message.full_name}: {name!r}")
    return found


def _check_path_field(message: Descriptor, path: Sequence[str], where: str) -> None:
    current = message
    for depth, name in enumerate(path):
        found = current.fields_by_name.get(name)
        if found is None or found.is_repeated:
            raise RouteError(f"{where}: path variable {'.'.join(path)!r} names no singular field")
        if depth < len(path) - 1:
            if found.message_type is None or found.message_type.full_name.startswith(
                "google.protobuf."
            ):  # a well-known type is one JSON value, its fields are not set one by one
                raise RouteError(f"{where}: {'.'.join(path)!r}: {name!r} is not a message")
            current = found.message_type
        elif found.message_type is not None and not found.message_type.full_name.startswith(
            "google.protobuf."
        ):
            raise RouteError(f"{where}: path variable {'.'.join(path)!r} is a message")
